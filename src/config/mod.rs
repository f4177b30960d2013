//! Configuration (`agent.yaml`, SPEC §3): parsing, defaults and load-time
//! validation.
//!
//! The rest of the agent only ever sees the validated, defaults-resolved
//! model below ([`Config`]); the raw serde structs live in `raw.rs` and never
//! leave this module. Every problem is reported at once, each as one
//! `PATH:LINE:COL: message` line ([`ConfigErrors`]), so an operator fixes a
//! config in one round trip instead of one error per restart.
//!
//! How "all errors at once" works (details in `raw.rs`):
//! 1. A syntax pass parses the whole document without types. A YAML syntax
//!    error, duplicate key, unknown anchor or budget breach stops here with
//!    that one error (nothing after it can be trusted).
//! 2. Typed passes read the document into the raw structs leniently: every
//!    field and list element is read on its own. serde stops at the first
//!    error, so when a pass fails the innermost field around the error is
//!    recorded, skipped (marked invalid) in the next pass, and parsing runs
//!    again. A type error therefore hides nothing but its own value, and
//!    each pass costs one parse of a file that is at most
//!    [`MAX_CONFIG_BYTES`].
//! 3. A schema walk reports every unknown key, at any depth, with the keys
//!    its mapping allows. The typed passes ignore unknown keys, so neither
//!    kind of error hides the other.
//! 4. Semantic validation runs over everything that parsed (an invalid value
//!    counts as unknown: checks that depend on it stay quiet rather than
//!    cascade) and reports everything it finds; missing required keys are
//!    found here too, so they point at the mapping that lacks them.
//!
//! Name overlaps between syncs are errors when both write the same region
//! (primary or replica) with the same profile, role and endpoint:
//! identical many-to-one `secret_name`s; identical one-to-one `key_schema`s
//! after `{{environment}}`/`{{syncName}}` are substituted; a many-to-one
//! `secret_name` that a one-to-one schema produces for some valid key its
//! include/exclude admits. Different one-to-one schemas that could still
//! meet for particular keys are not flagged (they end as CONFLICT at run
//! time, never as an overwrite, thanks to the ownership tags).
//!
//! Relative paths (`agent.socket`, `agent.state_dir`, `source.files`) are
//! resolved against the config file's directory.
//!
//! Errors never quote the value they are about, whatever the key: a secret
//! pasted into the wrong key (or a whole `.env` pasted into agent.yaml)
//! must not be echoed by `check`, `run` or `reload` into a terminal or the
//! journal. A message names the key and what is accepted (for enumerated
//! keys, the accepted words); `PATH:LINE:COL` points at the value. Quoted
//! are only key names (the config's own and tag keys), a single offending
//! character, and, in the cross-sync overlap checks, sync and secret names
//! that already passed their own validation.

mod raw;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::naming;

/// Largest config file `load_config`/`parse_config` accept. A real config is
/// a few KiB; the bound keeps a wrong path (a log, a device) from being read
/// into memory and parsed several times.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Where the agent looks for its config unless `--config`/`SECRETSYNC_CONFIG`
/// says otherwise (SPEC §2).
pub const DEFAULT_CONFIG_PATH: &str = "/etc/secretsync/agent.yaml";

/// Default control socket path (SPEC §2, §3); the CLI uses it too.
pub const DEFAULT_SOCKET_PATH: &str = "/run/secretsync/control.sock";

/// Default `agent.max_file_size` (1 MiB): larger source files are an
/// error, not read.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 1024 * 1024;

/// Default directory for remembered state (initial-sync markers, etc.).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/secretsync";

/// Most user tags one sync may configure: AWS allows 50 per secret and the
/// two ownership tags are always ours.
pub const MAX_USER_TAGS: usize = naming::MAX_TAGS - 2;

/// Longest sync name; names go into tags, CLI arguments and log lines.
pub const MAX_SYNC_NAME_LEN: usize = 64;

/// The validated configuration, with every default filled in.
///
/// Built only by [`parse_config`]/[`load_config`], so holders can rely on
/// every invariant listed on the fields without re-checking.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Process-wide settings (`agent:`).
    pub agent: AgentSettings,
    /// Who may use mutating control-socket commands (`control:`).
    pub control: ControlSettings,
    /// AWS defaults as written (`aws:`); every sync's destination already has
    /// these merged in, so most code should read [`SyncConfig::destination`].
    pub aws: AwsSettings,
    /// The syncs in file order; names are unique.
    pub syncs: Vec<SyncConfig>,
    /// The file this config came from, for status output and error messages.
    pub path: PathBuf,
}

impl Config {
    /// Looks a sync up by name, for `--sync NAME` and control requests.
    pub fn sync(&self, name: &str) -> Option<&SyncConfig> {
        self.syncs.iter().find(|s| s.name == name)
    }
}

/// `agent:` settings: identity, socket, timing and logging.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Value of the `secretsync:agent` ownership tag: non-empty, at most 256
    /// characters, only characters AWS allows in tag values. Defaults to the
    /// host name.
    pub id: String,
    /// Control socket path (relative paths are resolved against the config
    /// file's directory).
    pub socket: PathBuf,
    /// Permission bits for the socket file (at most `0o777`, owner can read
    /// and write).
    pub socket_mode: u32,
    /// Directory for persistent state (relative paths resolved like `socket`).
    pub state_dir: PathBuf,
    /// Quiet time after the last file event of a burst before reconciling.
    pub debounce: Duration,
    /// Drift check period against AWS; `None` when configured as `0`.
    pub reconcile_interval: Option<Duration>,
    /// The startup pass waits a random time up to this, so a fleet
    /// restarted at once spreads its first reads over the account's quota
    /// (docs/fleet.md); zero for a single host.
    pub start_jitter: Duration,
    /// How long SIGTERM waits for in-flight calls.
    pub shutdown_timeout: Duration,
    /// Log output format.
    pub log_format: LogFormat,
    /// Minimum level logged.
    pub log_level: LogLevel,
    /// Source files larger than this many bytes are an error and not read.
    pub max_file_size: u64,
    /// Address for the Prometheus `/metrics` endpoint; `None` = off.
    pub metrics_listen: Option<SocketAddr>,
}

/// `control:` settings: extra principals allowed to resync/reload/remove
/// besides root and the agent's own uid.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ControlSettings {
    /// Numeric user ids.
    pub allow_uids: Vec<u32>,
    /// Group names (non-empty); membership is checked at request time.
    pub allow_groups: Vec<String>,
}

/// `aws:` settings: defaults for every destination plus client pacing.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSettings {
    /// Default region: `aws.region`, else `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`; `None` if none is set.
    pub region: Option<String>,
    /// Named profile; `None` = the SDK's default credential chain.
    pub profile: Option<String>,
    /// Role to assume via STS.
    pub role_arn: Option<String>,
    /// External id for the role assumption.
    pub external_id: Option<String>,
    /// Endpoint override (e.g. an emulator). `None` leaves the SDK's own
    /// resolution in place, which honours `AWS_ENDPOINT_URL`.
    pub endpoint_url: Option<String>,
    /// Client-side pacing of write calls, per second (at least 1).
    pub max_write_tps: u32,
    /// Client-side pacing of read calls, per second (at least 1).
    pub max_read_tps: u32,
    /// Timeout per call attempt (> 0).
    pub call_timeout: Duration,
}

/// One named sync: which files go to which AWS secrets, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncConfig {
    /// Unique slug (`[a-z0-9-]`, 1..=64 chars, no leading/trailing `-`);
    /// the value of the `secretsync:sync` ownership tag.
    pub name: String,
    /// Free-text description for humans.
    pub description: Option<String>,
    /// `false`: the sync is loaded but never read or written (status DISABLED).
    pub enabled: bool,
    /// `false`: reads and plans, but writes only on an explicit `resync`.
    pub auto_sync: bool,
    /// Where the keys come from.
    pub source: SourceSettings,
    /// Where they go, with AWS defaults already merged in.
    pub destination: DestinationSettings,
    /// Initial-sync and deletion behaviour.
    pub options: SyncOptions,
    /// 1-based line in the config file where this sync starts, so runtime
    /// messages can point back at its definition.
    pub line: u64,
}

impl SyncConfig {
    /// The two ownership tags (SPEC §5.1) this agent puts on every secret of
    /// this sync; the reconciler compares them to decide what it may touch.
    pub fn owner_tags(&self, agent_id: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (naming::TAG_AGENT.to_string(), agent_id.to_string()),
            (naming::TAG_SYNC.to_string(), self.name.clone()),
        ])
    }

    /// Whether a source key is in scope: matches an `include` glob and no
    /// `exclude` glob. Keys out of scope are neither written nor deleted.
    pub fn key_selected(&self, key: &str) -> bool {
        self.source.key_selected(key)
    }

    /// The AWS secret name a key maps to: `key_schema` rendered for
    /// one-to-one, the fixed `secret_name` for many-to-one. Fails (with a
    /// message fit for the secret's ERROR state) if the key makes the name
    /// invalid for AWS, e.g. too long.
    pub fn secret_name_for(&self, key: &str) -> Result<String, String> {
        match self.destination.mapping {
            Mapping::ManyToOne => Ok(self.destination.secret_name.clone().unwrap_or_default()),
            Mapping::OneToOne => {
                let vars = naming::TemplateVars {
                    secret_key: Some(key),
                    environment: self.source.environment.as_deref(),
                    sync_name: &self.name,
                };
                let name = naming::render_template(&self.destination.key_schema, &vars)
                    .map_err(|e| e.to_string())?;
                naming::validate_secret_name(&name)?;
                Ok(name)
            }
        }
    }
}

/// `source:` settings of a sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    /// Files or glob patterns (at least one, each non-empty and a valid
    /// glob), in order; later files win. Relative paths are resolved against
    /// the config file's directory. Strings because they are patterns.
    pub files: Vec<String>,
    /// How files are parsed.
    pub format: FormatSetting,
    /// Value of `{{environment}}` in templates (non-empty when set).
    pub environment: Option<String>,
    /// Key globs a key must match (at least one; each compiles with
    /// `glob::Pattern::new`).
    pub include: Vec<String>,
    /// Key globs that exclude a key even if included (each compiles).
    pub exclude: Vec<String>,
    /// Whether `${VAR}` references to earlier keys of the same file expand.
    pub expand: bool,
}

impl SourceSettings {
    /// Whether `key` matches some `include` pattern and no `exclude` pattern.
    /// Compiles the patterns on each call; hot paths should compile once.
    pub fn key_selected(&self, key: &str) -> bool {
        let matches = |globs: &[String]| {
            globs
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .any(|p| p.matches(key))
        };
        matches(&self.include) && !matches(&self.exclude)
    }
}

/// `destination:` settings of a sync, with `aws:` defaults merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSettings {
    /// Region the secrets live in (always resolved; a sync without one is a
    /// config error).
    pub region: String,
    /// One secret per key, or one JSON secret for all keys.
    pub mapping: Mapping,
    /// many-to-one only: the secret name with `{{environment}}` and
    /// `{{syncName}}` already substituted and checked against AWS rules.
    /// `None` for one-to-one.
    pub secret_name: Option<String>,
    /// one-to-one naming template (contains `{{secretKey}}`); render with
    /// [`SyncConfig::secret_name_for`].
    pub key_schema: String,
    /// KMS key id, ARN or alias; `None` = the AWS managed key.
    pub kms_key_id: Option<String>,
    /// AWS secret description as configured (at most 2048 characters);
    /// `None` = the default, "Managed by secretsync (agent ID, sync NAME)".
    pub description: Option<String>,
    /// User tags (never under `aws:`/`secretsync:`, at most 48).
    pub tags: BTreeMap<String, String>,
    /// Whether per-key metadata from YAML sources also becomes tags.
    pub sync_metadata_as_tags: bool,
    /// Regions to replicate to (valid, distinct, not the primary region).
    pub replica_regions: Vec<String>,
    /// Profile: `destination.profile`, else `aws.profile`.
    pub profile: Option<String>,
    /// Role to assume: `destination.role_arn`, else `aws.role_arn`.
    pub role_arn: Option<String>,
    /// External id: `destination.external_id`, else `aws.external_id`;
    /// only ever set together with `role_arn`.
    pub external_id: Option<String>,
    /// Endpoint override from `aws.endpoint_url`.
    pub endpoint_url: Option<String>,
    /// `RecoveryWindowInDays` for deletions: 7..=30, or 0 = force delete.
    pub recovery_window_days: u8,
    /// Take over same-named secrets that carry no ownership tag.
    pub adopt_existing: bool,
}

/// `options:` of a sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOptions {
    /// Behaviour on the first pass of a sync.
    pub initial_sync: InitialSync,
    /// Keep secrets whose keys left the source instead of deleting them.
    pub disable_secret_deletion: bool,
    /// Deletion guard threshold, 0.0..=1.0 (1.0 disables the guard).
    pub max_delete_fraction: f64,
}

/// How keys map to AWS secrets (`destination.mapping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mapping {
    /// Each key becomes its own secret, named by `key_schema`.
    #[default]
    OneToOne,
    /// All keys become one JSON secret named `secret_name`.
    ManyToOne,
}

impl Mapping {
    /// The spelling used in the config and in status/plan JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mapping::OneToOne => "one-to-one",
            Mapping::ManyToOne => "many-to-one",
        }
    }
}

/// How source files are parsed (`source.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FormatSetting {
    /// By file extension.
    #[default]
    Auto,
    /// dotenv syntax.
    Env,
    /// YAML top-level map.
    Yaml,
}

impl FormatSetting {
    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            FormatSetting::Auto => "auto",
            FormatSetting::Env => "env",
            FormatSetting::Yaml => "yaml",
        }
    }
}

/// First-pass behaviour of a sync (`options.initial_sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InitialSync {
    /// Make AWS match the files.
    #[default]
    OverwriteDestination,
    /// Import secrets the files lack, then files win.
    ImportPrioritizeSource,
    /// Import secrets the files lack or that differ; AWS wins.
    ImportPrioritizeDestination,
}

impl InitialSync {
    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            InitialSync::OverwriteDestination => "overwrite-destination",
            InitialSync::ImportPrioritizeSource => "import-prioritize-source",
            InitialSync::ImportPrioritizeDestination => "import-prioritize-destination",
        }
    }
}

/// Log output format (`agent.log_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// journald when `JOURNAL_STREAM` is set, else text.
    #[default]
    Auto,
    /// Native journald with structured fields.
    Journald,
    /// One JSON object per line on stderr.
    Json,
    /// Human-readable lines on stderr.
    Text,
}

impl LogFormat {
    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Journald => "journald",
            LogFormat::Json => "json",
            LogFormat::Text => "text",
        }
    }
}

/// Minimum log level (`agent.log_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogLevel {
    /// Everything, including per-event detail.
    Trace,
    /// Diagnostic detail.
    Debug,
    /// Normal operation: one line per pass and per write.
    #[default]
    Info,
    /// Problems that were handled.
    Warn,
    /// Failures only.
    Error,
}

impl LogLevel {
    /// The spelling used in the config and accepted by `tracing` filters.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(Mapping, FormatSetting, InitialSync, LogFormat, LogLevel);

/// One config problem at one place in the file.
///
/// Shown as `PATH:LINE:COL: message`, or `PATH: message` for a problem
/// with the file as a whole (no position to point at).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line; 0 when the problem is the file as a whole (unreadable).
    pub line: u64,
    /// 1-based column; 0 together with `line == 0`.
    pub column: u64,
    /// What is wrong and, where possible, how to fix it. Never contains a
    /// line break, so each error prints as exactly one line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.path.display(),
                self.line,
                self.column,
                self.message
            )
        }
    }
}

impl ConfigError {
    /// Builds an error, escaping control characters so that text quoted
    /// from the file cannot break the one-line-per-error format.
    pub fn new(path: &Path, line: u64, column: u64, message: impl AsRef<str>) -> Self {
        let mut text = String::new();
        for c in message.as_ref().chars() {
            if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
        Self {
            path: path.to_path_buf(),
            line,
            column,
            message: text,
        }
    }
}

/// Every problem found in one config, in file order; what `check`, `run`
/// and `reload` print (one `PATH:LINE:COL: message` per line, no trailing
/// newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", lines(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn lines(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl ConfigErrors {
    /// Shorthand for a single error about the file as a whole.
    fn file_level(path: &Path, message: impl AsRef<str>) -> Self {
        Self(vec![ConfigError::new(path, 0, 0, message)])
    }
}

/// Parses and validates config text. Pure: `env` is the only way it sees
/// the process environment (`AWS_REGION`, `AWS_DEFAULT_REGION`), so tests
/// and `reload` get deterministic results. The one exception is the
/// default `agent.id`, which reads the host name when `agent.id` is unset.
/// `path` is used for error messages and to resolve relative paths.
pub fn parse_config(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::file_level(
            path,
            too_large_message(text.len()),
        ));
    }
    let (raw, mut errors) = raw::parse(path, text)?;
    let config = validate::resolve(path, raw, env, &mut errors);
    if errors.is_empty() {
        return Ok(config);
    }
    errors.sort_by(|a, b| (a.line, a.column, &a.message).cmp(&(b.line, b.column, &b.message)));
    errors.dedup();
    Err(ConfigErrors(errors))
}

fn too_large_message(len: usize) -> String {
    format!(
        "config file is larger than {} KiB ({len} bytes or more); is this the right file?",
        MAX_CONFIG_BYTES / 1024
    )
}

/// Reads `path` (at most [`MAX_CONFIG_BYTES`]) and parses it with the real
/// process environment. An unreadable file is one error about the file as
/// a whole (`PATH: message`); a missing one says how to name another.
pub fn load_config(path: &Path) -> Result<Config, ConfigErrors> {
    let file = std::fs::File::open(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (pass another with --config PATH or SECRETSYNC_CONFIG)"
        } else {
            ""
        };
        ConfigErrors::file_level(path, format!("cannot open config file: {e}{hint}"))
    })?;
    let mut bytes = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over".
    let limit = u64::try_from(MAX_CONFIG_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigErrors::file_level(path, format!("cannot read config file: {e}")))?;
    parse_config_bytes(path, bytes, &|name| std::env::var(name).ok())
}

/// [`parse_config`] for the raw bytes of a config file: checks the size
/// and UTF-8 (an error points at the first invalid byte) first. What
/// [`load_config`] does after reading; the random-input tests feed it
/// arbitrary bytes.
pub fn parse_config_bytes(
    path: &Path,
    bytes: Vec<u8>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigErrors::file_level(
            path,
            too_large_message(bytes.len()),
        ));
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() as u64 + 1;
            let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            // Column in characters, like the YAML parser's positions.
            let column = String::from_utf8_lossy(&valid[line_start..])
                .chars()
                .count() as u64
                + 1;
            return Err(ConfigErrors(vec![ConfigError::new(
                path,
                line,
                column,
                "config file is not valid UTF-8",
            )]));
        }
    };
    parse_config(path, &text, env)
}
