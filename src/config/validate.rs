//! From the raw file model to [`Config`]: defaults, value parsing and every
//! semantic check of SPEC §3. Each check reports at the offending value (or
//! at the mapping that lacks a required key) and keeps going, so one run
//! lists every problem.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::raw::{
    Field, Lenient, RawAgent, RawAws, RawControl, RawDestination, RawOptions, RawRoot, RawSource,
    RawSync, SStr, line_col,
};
use super::{
    AgentSettings, AwsSettings, Config, ConfigError, ControlSettings, DEFAULT_SOCKET_PATH,
    DEFAULT_STATE_DIR, DestinationSettings, FormatSetting, InitialSync, LogFormat, LogLevel,
    MAX_SYNC_NAME_LEN, MAX_USER_TAGS, Mapping, SourceSettings, SyncConfig, SyncOptions,
};
use crate::naming::{self, TemplateError, TemplateVars};
use crate::source::files::has_glob_chars;

/// Key used to check one-to-one templates at load time; any valid source key
/// renders to a valid name if this one does (keys use a subset of name
/// characters), apart from total length.
const SAMPLE_KEY: &str = "KEY";

/// Longest description AWS accepts for a secret.
const MAX_DESCRIPTION_LEN: usize = 2048;

/// Longest KMS key reference AWS accepts.
const MAX_KMS_KEY_ID_LEN: usize = 2048;

/// Largest `max_file_size`: sources are read into memory whole.
const MAX_FILE_SIZE_LIMIT: u64 = 1024 * 1024 * 1024;

/// Longest Unix socket path (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH_BYTES: usize = 107;

const HOUR: Duration = Duration::from_secs(3600);
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Collects errors against the config file.
struct Report<'a> {
    path: &'a Path,
    errors: &'a mut Vec<ConfigError>,
}

impl Report<'_> {
    fn at(&mut self, location: &Location, message: impl AsRef<str>) {
        let (line, column) = line_col(location);
        self.errors
            .push(ConfigError::new(self.path, line, column, message));
    }

    /// Parses an optional value, reporting a parse failure at the value and
    /// falling back to the default so checking can continue.
    fn value<T>(
        &mut self,
        raw: Option<&SStr>,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match raw {
            None => default,
            Some(s) => match parse(&s.value) {
                Ok(v) => v,
                Err(e) => {
                    self.at(&s.referenced, e);
                    default
                }
            },
        }
    }
}

/// Builds the validated [`Config`], pushing every problem found to
/// `errors`. The returned value is only meaningful when no error was
/// pushed (here or earlier).
pub(crate) fn resolve(
    path: &Path,
    raw: RawRoot,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) -> Config {
    let mut report = Report { path, errors };
    let base = path.parent().unwrap_or(Path::new(""));

    let agent = resolve_agent(&mut report, base, raw.agent.into_option());
    let control = resolve_control(&mut report, raw.control.into_option());
    let aws_invalid = raw.aws.is_invalid();
    let (aws, mut aws_locs) = resolve_aws(&mut report, raw.aws.into_option(), env);
    aws_locs.region_invalid |= aws_invalid || raw.aws_has_unknown_keys;

    // Syncs that did not parse at all are already reported.
    let raw_syncs: Vec<Spanned<RawSync>> = raw
        .syncs
        .into_option()
        .unwrap_or_default()
        .into_iter()
        .filter_map(Lenient::into_option)
        .collect();
    let mut syncs = Vec::with_capacity(raw_syncs.len());
    let mut namespaces = Vec::new();
    let mut seen_names: HashMap<String, u64> = HashMap::new();
    for raw_sync in raw_syncs {
        let ctx = SyncCtx {
            base,
            agent_id: &agent.id,
            aws: &aws,
            aws_locs: &aws_locs,
        };
        let (sync, namespace) = resolve_sync(&mut report, &ctx, raw_sync, &mut seen_names);
        if let Some(ns) = namespace {
            namespaces.push(ns);
        }
        syncs.push(sync);
    }
    check_overlaps(&mut report, &namespaces);

    Config {
        agent,
        control,
        aws,
        syncs,
        path: path.to_path_buf(),
    }
}

/// The elements of a list that parsed (the others are reported already).
fn valid<T>(list: Option<&Vec<Lenient<T>>>) -> impl Iterator<Item = &T> {
    list.into_iter().flatten().filter_map(Lenient::get)
}

// ---------------------------------------------------------------- agent --

fn resolve_agent(
    report: &mut Report<'_>,
    base: &Path,
    raw: Option<Spanned<RawAgent>>,
) -> AgentSettings {
    let (location, raw) = match raw {
        Some(s) => (Some(s.referenced), s.value),
        None => (None, RawAgent::default()),
    };

    let id = match &raw.id {
        Field::Set(id) => {
            if let Err(e) = validate_agent_id(&id.value) {
                report.at(&id.referenced, format!("agent.id {e}"));
            }
            id.value.clone()
        }
        // Reported already.
        Field::Invalid => String::new(),
        Field::Absent => {
            let host = gethostname::gethostname()
                .to_string_lossy()
                .trim()
                .to_string();
            if let Err(e) = validate_agent_id(&host) {
                let message = format!(
                    "agent.id is not set and the host name cannot be used ({e}); set agent.id"
                );
                match &location {
                    Some(l) => report.at(l, message),
                    None => report.at(&Location::UNKNOWN, message),
                }
            }
            host
        }
    };

    let socket = report.value(
        raw.socket.get(),
        PathBuf::from(DEFAULT_SOCKET_PATH),
        |s| {
            let p = resolve_path(base, s, "agent.socket")?;
            let len = p.as_os_str().len();
            if len > MAX_SOCKET_PATH_BYTES {
                return Err(format!(
                    "agent.socket path is {len} bytes; Unix sockets allow at most {MAX_SOCKET_PATH_BYTES}"
                ));
            }
            Ok(p)
        },
    );
    let socket_mode = report.value(raw.socket_mode.get(), 0o660, parse_socket_mode);
    let state_dir = report.value(raw.state_dir.get(), PathBuf::from(DEFAULT_STATE_DIR), |s| {
        resolve_path(base, s, "agent.state_dir")
    });
    let debounce = report.value(raw.debounce.get(), Duration::from_millis(500), |s| {
        parse_duration_in("agent.debounce", s, Duration::ZERO, HOUR)
    });
    let reconcile_interval = report.value(
        raw.reconcile_interval.get(),
        Some(Duration::from_secs(600)),
        |s| {
            let d = parse_duration_in("agent.reconcile_interval", s, Duration::ZERO, YEAR)?;
            Ok((!d.is_zero()).then_some(d))
        },
    );
    let shutdown_timeout = report.value(raw.shutdown_timeout.get(), Duration::from_secs(10), |s| {
        parse_duration_in("agent.shutdown_timeout", s, Duration::ZERO, HOUR)
    });
    let log_format = report.value(raw.log_format.get(), LogFormat::Auto, |s| {
        parse_choice(
            "agent.log_format",
            s,
            &[
                ("auto", LogFormat::Auto),
                ("journald", LogFormat::Journald),
                ("json", LogFormat::Json),
                ("text", LogFormat::Text),
            ],
        )
    });
    let log_level = report.value(raw.log_level.get(), LogLevel::Info, |s| {
        parse_choice(
            "agent.log_level",
            s,
            &[
                ("trace", LogLevel::Trace),
                ("debug", LogLevel::Debug),
                ("info", LogLevel::Info),
                ("warn", LogLevel::Warn),
                ("error", LogLevel::Error),
            ],
        )
    });
    let max_file_size = report.value(raw.max_file_size.get(), super::DEFAULT_MAX_FILE_SIZE, |s| {
        let n = parse_size(s).map_err(|e| format!("agent.max_file_size: {e}"))?;
        if n == 0 || n > MAX_FILE_SIZE_LIMIT {
            return Err("agent.max_file_size must be between 1 byte and 1GiB".to_string());
        }
        Ok(n)
    });
    let metrics_listen = report.value(raw.metrics_listen.get(), None, |s| {
        let addr = s.trim().parse::<SocketAddr>().map_err(|_| {
            "agent.metrics_listen must be IP:PORT such as 127.0.0.1:9469".to_string()
        })?;
        // The endpoint has no authentication: loopback only (scrape
        // through a local agent or reverse proxy from elsewhere).
        if !addr.ip().is_loopback() {
            return Err(
                "agent.metrics_listen must be a loopback address (127.0.0.0/8 or ::1)".to_string(),
            );
        }
        Ok(Some(addr))
    });

    AgentSettings {
        id,
        socket,
        socket_mode,
        state_dir,
        debounce,
        reconcile_interval,
        shutdown_timeout,
        log_format,
        log_level,
        max_file_size,
        metrics_listen,
    }
}

// -------------------------------------------------------------- control --

fn resolve_control(report: &mut Report<'_>, raw: Option<Spanned<RawControl>>) -> ControlSettings {
    let raw = raw.map(|s| s.value).unwrap_or_default();
    let mut allow_groups = Vec::new();
    for group in valid(raw.allow_groups.get()) {
        let name = group.value.trim();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            report.at(
                &group.referenced,
                "control.allow_groups entries must be group names without spaces",
            );
        } else {
            allow_groups.push(name.to_string());
        }
    }
    ControlSettings {
        allow_uids: valid(raw.allow_uids.get()).copied().collect(),
        allow_groups,
    }
}

// ------------------------------------------------------------------ aws --

/// Where the `aws:` values that syncs inherit were written, so an error
/// caused by an inherited value can point at it.
#[derive(Default)]
struct AwsLocations {
    external_id: Option<Location>,
    /// Environment variable the default region came from, if not the file.
    region_from_env: Option<&'static str>,
    /// `aws:` or `aws.region` had a type error; a missing region may be its
    /// fault.
    region_invalid: bool,
    /// `aws.role_arn` had a type error; syncs may well have a role.
    role_arn_invalid: bool,
}

fn resolve_aws(
    report: &mut Report<'_>,
    raw: Option<Spanned<RawAws>>,
    env: &dyn Fn(&str) -> Option<String>,
) -> (AwsSettings, AwsLocations) {
    let raw = raw.map(|s| s.value).unwrap_or_default();
    let mut locs = AwsLocations {
        external_id: raw.external_id.get().map(|s| s.referenced),
        region_from_env: None,
        region_invalid: raw.region.is_invalid(),
        role_arn_invalid: raw.role_arn.is_invalid(),
    };

    let mut region = report.value(raw.region.get(), None, |s| {
        validate_region(s).map_err(|e| format!("aws.region {e}"))?;
        Ok(Some(s.to_string()))
    });
    if matches!(raw.region, Field::Absent) {
        for var in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
            if let Some(value) = env(var)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                region = Some(value);
                locs.region_from_env = Some(var);
                break;
            }
        }
    }

    let profile = report.value(raw.profile.get(), None, |s| {
        non_empty("aws.profile", s).map(Some)
    });
    let role_arn = report.value(raw.role_arn.get(), None, |s| {
        validate_role_arn(s).map_err(|e| format!("aws.role_arn {e}"))?;
        Ok(Some(s.to_string()))
    });
    let external_id = report.value(raw.external_id.get(), None, |s| {
        validate_external_id(s).map_err(|e| format!("aws.external_id {e}"))?;
        Ok(Some(s.to_string()))
    });
    let endpoint_url = report.value(raw.endpoint_url.get(), None, |s| {
        validate_endpoint_url(s).map_err(|e| format!("aws.endpoint_url {e}"))?;
        Ok(Some(s.to_string()))
    });
    let max_write_tps = positive_rate(report, raw.max_write_tps.get(), 20, "aws.max_write_tps");
    let max_read_tps = positive_rate(report, raw.max_read_tps.get(), 50, "aws.max_read_tps");
    let call_timeout = report.value(raw.call_timeout.get(), Duration::from_secs(10), |s| {
        let d = parse_duration_in("aws.call_timeout", s, Duration::ZERO, HOUR)?;
        if d.is_zero() {
            return Err("aws.call_timeout must be greater than 0".into());
        }
        Ok(d)
    });

    let aws = AwsSettings {
        region,
        profile,
        role_arn,
        external_id,
        endpoint_url,
        max_write_tps,
        max_read_tps,
        call_timeout,
    };
    (aws, locs)
}

fn positive_rate(
    report: &mut Report<'_>,
    raw: Option<&Spanned<i64>>,
    default: u32,
    what: &str,
) -> u32 {
    match raw {
        None => default,
        Some(v) => match u32::try_from(v.value) {
            Ok(n) if n > 0 => n,
            _ => {
                report.at(
                    &v.referenced,
                    format!("{what} must be a whole number of calls per second, at least 1"),
                );
                default
            }
        },
    }
}

// ---------------------------------------------------------------- syncs --

struct SyncCtx<'a> {
    base: &'a Path,
    agent_id: &'a str,
    aws: &'a AwsSettings,
    aws_locs: &'a AwsLocations,
}

/// The AWS names one sync may write, for the overlap check.
struct Namespace {
    sync: String,
    line: u64,
    /// Primary region first, then replica regions.
    regions: Vec<String>,
    /// Syncs with different credentials or endpoints may well be different
    /// accounts, where equal names do not collide.
    account: (Option<String>, Option<String>, Option<String>),
    kind: NameKind,
    /// Include/exclude patterns, to tell whether a one-to-one sync can
    /// produce a given key.
    source: SourceSettings,
    /// Where to report an overlap found for this sync.
    at: Location,
}

enum NameKind {
    /// many-to-one: exactly this name.
    Exact(String),
    /// one-to-one: these literal parts with the key between each pair.
    Pattern(Vec<String>),
}

fn resolve_sync(
    report: &mut Report<'_>,
    ctx: &SyncCtx<'_>,
    raw: Spanned<RawSync>,
    seen_names: &mut HashMap<String, u64>,
) -> (SyncConfig, Option<Namespace>) {
    let at = raw.referenced;
    let (line, _) = line_col(&at);
    let raw = raw.value;

    // The name feeds templates; an invalid one is replaced by a neutral
    // stand-in so that it does not cause a second, misleading error.
    let mut name_ok = false;
    let name = match &raw.name {
        Field::Absent => {
            report.at(&at, "missing required key `name`");
            String::new()
        }
        Field::Invalid => String::new(),
        Field::Set(n) => {
            match validate_slug(&n.value) {
                Err(e) => report.at(&n.referenced, format!("sync name {e}")),
                Ok(()) => {
                    name_ok = true;
                    let (name_line, _) = line_col(&n.referenced);
                    if let Some(first) = seen_names.get(&n.value) {
                        report.at(
                            &n.referenced,
                            format!("duplicate sync name (first defined at line {first})"),
                        );
                    } else {
                        seen_names.insert(n.value.clone(), name_line);
                    }
                }
            }
            n.value.clone()
        }
    };
    let template_name = if name_ok { name.as_str() } else { "sync" };

    // A source.environment of the wrong type is stood in for like the name,
    // so templates that use it do not report it as unset.
    let environment_invalid = raw
        .source
        .get()
        .is_some_and(|s| s.value.environment.is_invalid());
    let source = match raw.source {
        Field::Absent => {
            report.at(&at, "missing required key `source`");
            None
        }
        Field::Invalid => None,
        Field::Set(s) => resolve_source(report, ctx.base, s),
    };
    let source_ok = source.is_some() && !environment_invalid;
    let source = source.unwrap_or_else(|| SourceSettings {
        files: Vec::new(),
        format: FormatSetting::Auto,
        environment: None,
        include: Vec::new(),
        exclude: Vec::new(),
        expand: false,
    });

    let invalid = raw.destination.is_invalid();
    let (dest_at, raw_dest) = match raw.destination {
        Field::Set(d) => (d.referenced, d.value),
        Field::Absent | Field::Invalid => (at, RawDestination::default()),
    };
    let dest_ctx = DestCtx {
        sync: ctx,
        at: dest_at,
        invalid,
        sync_name: &name,
        template_name,
        environment: if environment_invalid {
            Some("environment")
        } else {
            source.environment.as_deref()
        },
    };
    let (destination, naming_ok, naming_at) = resolve_destination(report, &dest_ctx, raw_dest);

    let options_at = raw.options.get().map(|o| o.referenced.clone());
    let options = resolve_options(report, raw.options.into_option());
    if options.initial_sync != InitialSync::OverwriteDestination
        && let Some(first) = source.files.first().filter(|f| has_glob_chars(f))
        && let Some(options_at) = &options_at
    {
        report.at(
            options_at,
            format!(
                "options.initial_sync imports into the first file of source.files, but \
                 '{first}' is a glob; list a plain file first"
            ),
        );
    }

    let namespace = (name_ok && source_ok && naming_ok).then(|| {
        let kind = match destination.mapping {
            Mapping::ManyToOne => {
                NameKind::Exact(destination.secret_name.clone().unwrap_or_default())
            }
            Mapping::OneToOne => NameKind::Pattern(
                naming::schema_parts(
                    &destination.key_schema,
                    source.environment.as_deref(),
                    &name,
                )
                .unwrap_or_default(),
            ),
        };
        let mut regions = vec![destination.region.clone()];
        regions.extend(destination.replica_regions.iter().cloned());
        Namespace {
            sync: name.clone(),
            line,
            regions,
            account: (
                destination.profile.clone(),
                destination.role_arn.clone(),
                destination.endpoint_url.clone(),
            ),
            kind,
            source: source.clone(),
            at: naming_at,
        }
    });

    let sync = SyncConfig {
        name,
        description: raw.description.into_option(),
        enabled: raw.enabled.into_option().unwrap_or(true),
        auto_sync: raw.auto_sync.into_option().unwrap_or(true),
        source,
        destination,
        options,
        line,
    };
    (sync, namespace)
}

/// Returns `None` when a required part is missing, so that later checks do
/// not pile up errors about an incomplete source.
fn resolve_source(
    report: &mut Report<'_>,
    base: &Path,
    raw: Spanned<RawSource>,
) -> Option<SourceSettings> {
    let at = raw.referenced;
    let raw = raw.value;
    let mut complete = true;

    let mut files = Vec::new();
    match &raw.files {
        Field::Absent => {
            report.at(&at, "missing required key `files` in source");
            complete = false;
        }
        Field::Invalid => complete = false,
        Field::Set(list) if list.value.is_empty() => {
            report.at(
                &list.referenced,
                "source.files is empty; list at least one file or glob",
            );
            complete = false;
        }
        Field::Set(list) => {
            for file in list.value.iter().filter_map(Lenient::get) {
                match resolve_source_file(base, &file.value) {
                    Ok(p) => files.push(p),
                    Err(e) => report.at(&file.referenced, e),
                }
            }
        }
    }

    let format = report.value(raw.format.get(), FormatSetting::Auto, |s| {
        parse_choice(
            "source.format",
            s,
            &[
                ("auto", FormatSetting::Auto),
                ("env", FormatSetting::Env),
                ("yaml", FormatSetting::Yaml),
            ],
        )
    });
    let environment = report.value(raw.environment.get(), None, |s| {
        non_empty("source.environment", s).map(Some)
    });

    let include = match &raw.include {
        Field::Absent => vec!["*".to_string()],
        Field::Invalid => Vec::new(),
        Field::Set(list) if list.value.is_empty() => {
            report.at(
                &list.referenced,
                "source.include is empty, so no key would be synced; use [\"*\"] for all keys",
            );
            Vec::new()
        }
        Field::Set(list) => compile_globs(report, "source.include", valid(Some(&list.value))),
    };
    let exclude = compile_globs(report, "source.exclude", valid(raw.exclude.get()));

    complete.then_some(SourceSettings {
        files,
        format,
        environment,
        include,
        exclude,
        expand: raw.expand.into_option().unwrap_or(false),
    })
}

/// Keeps the patterns that compile, reporting the others.
fn compile_globs<'a>(
    report: &mut Report<'_>,
    what: &str,
    list: impl Iterator<Item = &'a SStr>,
) -> Vec<String> {
    let mut out = Vec::new();
    for item in list {
        if item.value.is_empty() {
            report.at(
                &item.referenced,
                format!("{what} entries must not be empty"),
            );
            continue;
        }
        match glob::Pattern::new(&item.value) {
            Ok(_) => out.push(item.value.clone()),
            Err(e) => report.at(
                &item.referenced,
                format!("{what} pattern is not a valid glob: {}", e.msg),
            ),
        }
    }
    out
}

fn resolve_source_file(base: &Path, file: &str) -> Result<String, String> {
    let path = resolve_path(base, file, "source.files entry")?;
    let path = path.to_string_lossy().into_owned();
    glob::Pattern::new(&path)
        .map_err(|e| format!("source.files pattern is not a valid glob: {}", e.msg))?;
    Ok(path)
}

struct DestCtx<'a> {
    sync: &'a SyncCtx<'a>,
    /// The `destination:` mapping, or the sync when there is none.
    at: Location,
    /// `destination:` had a type error, so its settings are unknown: checks
    /// of the defaults that stand in for them stay quiet.
    invalid: bool,
    sync_name: &'a str,
    /// The sync name if valid, else a neutral stand-in for rendering.
    template_name: &'a str,
    environment: Option<&'a str>,
}

/// Returns the settings, whether naming (mapping, template, region) is
/// valid, and where to report a name overlap.
fn resolve_destination(
    report: &mut Report<'_>,
    ctx: &DestCtx<'_>,
    raw: RawDestination,
) -> (DestinationSettings, bool, Location) {
    let aws = ctx.sync.aws;
    // Unreadable naming settings leave the secret names unknown.
    let mut naming_ok = !(ctx.invalid
        || raw.mapping.is_invalid()
        || raw.key_schema.is_invalid()
        || raw.secret_name.is_invalid());

    let mapping = match raw.mapping.get() {
        None => Mapping::OneToOne,
        Some(m) => match parse_choice(
            "destination.mapping",
            &m.value,
            &[
                ("one-to-one", Mapping::OneToOne),
                ("many-to-one", Mapping::ManyToOne),
            ],
        ) {
            Ok(v) => v,
            Err(e) => {
                report.at(&m.referenced, e);
                naming_ok = false;
                Mapping::OneToOne
            }
        },
    };

    // Region: destination, then aws.region, then the environment.
    let region = match (&raw.region, &aws.region) {
        (Field::Invalid, _) => {
            naming_ok = false;
            String::new()
        }
        (Field::Set(r), _) => {
            if let Err(e) = validate_region(&r.value) {
                report.at(&r.referenced, format!("destination.region {e}"));
                naming_ok = false;
            }
            r.value.clone()
        }
        (Field::Absent, Some(r)) => {
            if let (Some(var), Err(e)) = (ctx.sync.aws_locs.region_from_env, validate_region(r)) {
                report.at(&ctx.at, format!("region from {var} {e}"));
                naming_ok = false;
            }
            r.clone()
        }
        (Field::Absent, None) => {
            if !(ctx.sync.aws_locs.region_invalid || ctx.invalid) {
                report.at(
                    &ctx.at,
                    "no AWS region for this sync: set destination.region or aws.region \
                 (or AWS_REGION in the agent's environment)",
                );
            }
            naming_ok = false;
            String::new()
        }
    };

    let vars = TemplateVars {
        secret_key: None,
        environment: ctx.environment,
        sync_name: ctx.template_name,
    };
    let mut naming_at = ctx.at;
    let mut secret_name = None;
    let key_schema = raw
        .key_schema
        .get()
        .map_or_else(|| "{{secretKey}}".to_string(), |s| s.value.clone());
    match mapping {
        Mapping::OneToOne => {
            if let (Some(s), false) = (raw.secret_name.get(), raw.mapping.is_invalid()) {
                report.at(
                    &s.referenced,
                    "destination.secret_name is only used with mapping: many-to-one; \
                     set the mapping or name secrets with key_schema",
                );
            }
            if let Some(k) = raw.key_schema.get() {
                naming_at = k.referenced;
            }
            if let Err(e) = check_key_schema(&key_schema, &vars) {
                let at = raw.key_schema.get().map_or(ctx.at, |k| k.referenced);
                report.at(&at, format!("destination.key_schema {e}"));
                naming_ok = false;
            }
        }
        Mapping::ManyToOne => match &raw.secret_name {
            Field::Invalid => {}
            Field::Absent => {
                let at = raw.mapping.get().map_or(ctx.at, |m| m.referenced);
                report.at(
                    &at,
                    "mapping many-to-one needs destination.secret_name (the one secret all keys go to)",
                );
                naming_ok = false;
            }
            Field::Set(s) => {
                naming_at = s.referenced;
                match check_secret_name(&s.value, &vars) {
                    Ok(rendered) => secret_name = Some(rendered),
                    Err(e) => {
                        report.at(&s.referenced, format!("destination.secret_name {e}"));
                        naming_ok = false;
                    }
                }
            }
        },
    }

    let kms_key_id = report.value(raw.kms_key_id.get(), None, |s| {
        let s = non_empty("destination.kms_key_id", s)?;
        if s.chars().count() > MAX_KMS_KEY_ID_LEN {
            return Err(format!(
                "destination.kms_key_id is longer than {MAX_KMS_KEY_ID_LEN} characters"
            ));
        }
        Ok(Some(s))
    });
    let description = report.value(raw.description.get(), None, |s| {
        if s.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(format!(
                "destination.description is longer than {MAX_DESCRIPTION_LEN} characters"
            ));
        }
        Ok(Some(s.to_string()))
    });

    let tags = resolve_tags(report, ctx, raw.tags.into_option());

    let mut replica_regions: Vec<String> = Vec::new();
    for r in valid(raw.replica_regions.get()) {
        if let Err(e) = validate_region(&r.value) {
            report.at(
                &r.referenced,
                format!("destination.replica_regions entry {e}"),
            );
        } else if r.value == region {
            report.at(
                &r.referenced,
                "this replica region is the sync's own region",
            );
        } else if replica_regions.contains(&r.value) {
            report.at(&r.referenced, "this replica region is listed twice");
        } else {
            replica_regions.push(r.value.clone());
        }
    }

    let profile = report.value(raw.profile.get(), aws.profile.clone(), |s| {
        non_empty("destination.profile", s).map(Some)
    });
    let role_arn = report.value(raw.role_arn.get(), aws.role_arn.clone(), |s| {
        validate_role_arn(s).map_err(|e| format!("destination.role_arn {e}"))?;
        Ok(Some(s.to_string()))
    });
    let external_id = report.value(raw.external_id.get(), aws.external_id.clone(), |s| {
        validate_external_id(s).map_err(|e| format!("destination.external_id {e}"))?;
        Ok(Some(s.to_string()))
    });
    let role_unknown = raw.role_arn.is_invalid() || ctx.sync.aws_locs.role_arn_invalid;
    if external_id.is_some() && role_arn.is_none() && !role_unknown {
        let at = raw
            .external_id
            .get()
            .map(|s| s.referenced)
            .or(ctx.sync.aws_locs.external_id)
            .unwrap_or(ctx.at);
        report.at(
            &at,
            "external_id is only used when assuming a role; set role_arn too",
        );
    }

    let recovery_window_days = match raw.recovery_window_days.get() {
        None => 7,
        Some(d) => match u8::try_from(d.value) {
            Ok(v) if v == 0 || (7..=30).contains(&v) => v,
            _ => {
                report.at(
                    &d.referenced,
                    "destination.recovery_window_days must be 7..=30, or 0 to delete without \
                         recovery",
                );
                7
            }
        },
    };

    let destination = DestinationSettings {
        region,
        mapping,
        secret_name,
        key_schema,
        kms_key_id,
        description,
        tags,
        sync_metadata_as_tags: raw.sync_metadata_as_tags.into_option().unwrap_or(false),
        replica_regions,
        profile,
        role_arn,
        external_id,
        endpoint_url: aws.endpoint_url.clone(),
        recovery_window_days,
        adopt_existing: raw.adopt_existing.into_option().unwrap_or(false),
    };
    (destination, naming_ok, naming_at)
}

fn resolve_tags(
    report: &mut Report<'_>,
    ctx: &DestCtx<'_>,
    raw: Option<Spanned<super::raw::SpannedMap>>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    let Some(raw) = raw else { return tags };
    for (key, value) in &raw.value.0 {
        // A value of the wrong type is reported already; its key is still
        // checked.
        let (value, value_at) = match value {
            Lenient::Valid(v) => (v.value.as_str(), &v.referenced),
            Lenient::Invalid => ("", &key.referenced),
        };
        if let Err(e) = naming::validate_user_tag(&key.value, value) {
            // Point at the value when only its length is the problem.
            let at = if naming::validate_user_tag(&key.value, "").is_ok() {
                value_at
            } else {
                &key.referenced
            };
            report.at(at, format!("destination.tags: {e}"));
            continue;
        }
        if let Some(c) = key.value.chars().find(|c| !is_tag_char(*c)) {
            report.at(
                &key.referenced,
                format!(
                    "destination.tags: tag key '{}' contains {c:?}; {TAG_CHARS_HELP}",
                    key.value
                ),
            );
            continue;
        }
        if let Some(c) = value.chars().find(|c| !is_tag_char(*c)) {
            report.at(
                value_at,
                format!(
                    "destination.tags: value of tag '{}' contains {c:?}; {TAG_CHARS_HELP}",
                    key.value
                ),
            );
            continue;
        }
        tags.insert(key.value.clone(), value.to_string());
    }
    if raw.value.0.len() > MAX_USER_TAGS {
        let mut all = BTreeMap::new();
        for (i, (k, v)) in raw.value.0.iter().enumerate() {
            // Keys are distinct in YAML; index them so the count is exact
            // even for entries rejected above.
            let v = v.get().map_or("", |v| v.value.as_str());
            all.insert(format!("{i}:{}", k.value), v.to_string());
        }
        all.insert(naming::TAG_AGENT.to_string(), ctx.sync.agent_id.to_string());
        all.insert(naming::TAG_SYNC.to_string(), ctx.sync_name.to_string());
        let detail = naming::validate_tag_count(&all)
            .err()
            .unwrap_or_else(|| "too many tags".to_string());
        report.at(
            &raw.referenced,
            format!(
                "destination.tags has {} tags, at most {MAX_USER_TAGS} are allowed ({detail})",
                raw.value.0.len()
            ),
        );
    }
    tags
}

fn resolve_options(report: &mut Report<'_>, raw: Option<Spanned<RawOptions>>) -> SyncOptions {
    let raw = raw.map(|s| s.value).unwrap_or_default();
    let initial_sync = report.value(
        raw.initial_sync.get(),
        InitialSync::OverwriteDestination,
        |s| {
            parse_choice(
                "options.initial_sync",
                s,
                &[
                    ("overwrite-destination", InitialSync::OverwriteDestination),
                    (
                        "import-prioritize-source",
                        InitialSync::ImportPrioritizeSource,
                    ),
                    (
                        "import-prioritize-destination",
                        InitialSync::ImportPrioritizeDestination,
                    ),
                ],
            )
        },
    );
    let max_delete_fraction = match raw.max_delete_fraction.get() {
        None => 0.5,
        Some(f) if (0.0..=1.0).contains(&f.value) => f.value,
        Some(f) => {
            report.at(
                &f.referenced,
                "options.max_delete_fraction must be between 0.0 and 1.0 (1.0 turns the \
                     guard off)",
            );
            0.5
        }
    };
    SyncOptions {
        initial_sync,
        disable_secret_deletion: raw.disable_secret_deletion.into_option().unwrap_or(false),
        max_delete_fraction,
    }
}

// ------------------------------------------------------------- overlaps --

/// Reports pairs of syncs that would write the same AWS secret. Two syncs
/// can collide only in a region both write to (primary or replica) with the
/// same profile, role and endpoint (otherwise they may be different
/// accounts). Detected:
/// - many-to-one vs many-to-one: identical rendered `secret_name`;
/// - one-to-one vs one-to-one: identical `key_schema` after rendering
///   `{{environment}}` and `{{syncName}}` (key filters are not compared);
/// - many-to-one vs one-to-one: the `secret_name` is a name the one-to-one
///   schema produces for some valid key that its include/exclude admits.
///
/// Not detected: different one-to-one schemas whose names can still meet
/// (e.g. `prod-{{secretKey}}` and `{{secretKey}}` for key `prod-X`); those
/// surface at run time as CONFLICT, never as an overwrite.
fn check_overlaps(report: &mut Report<'_>, namespaces: &[Namespace]) {
    for (j, later) in namespaces.iter().enumerate() {
        for earlier in &namespaces[..j] {
            if earlier.account != later.account {
                continue;
            }
            let Some(region) = earlier.regions.iter().find(|r| later.regions.contains(r)) else {
                continue;
            };
            if let Some(message) = overlap(earlier, later, region) {
                report.at(&later.at, message);
                break;
            }
        }
    }
}

fn overlap(earlier: &Namespace, later: &Namespace, region: &str) -> Option<String> {
    let other = format!("sync '{}' (line {})", earlier.sync, earlier.line);
    match (&earlier.kind, &later.kind) {
        (NameKind::Exact(a), NameKind::Exact(b)) => (a == b).then(|| {
            format!("secret '{b}' in {region} is also written by {other}; secret names must be unique per region")
        }),
        (NameKind::Pattern(a), NameKind::Pattern(b)) => (a == b).then(|| {
            format!(
                "key_schema gives the same secret names in {region} as {other}; make them differ, \
                 e.g. with {{{{syncName}}}} in the schema"
            )
        }),
        (NameKind::Pattern(parts), NameKind::Exact(name)) => {
            let key = naming::key_for_name(parts, name).filter(|k| earlier.source.key_selected(k))?;
            Some(format!(
                "secret '{name}' in {region} is also the name {other} gives key '{key}'"
            ))
        }
        (NameKind::Exact(name), NameKind::Pattern(parts)) => {
            let key = naming::key_for_name(parts, name).filter(|k| later.source.key_selected(k))?;
            Some(format!(
                "key '{key}' would be named '{name}' in {region}, the secret {other} writes"
            ))
        }
    }
}

// ------------------------------------------------------- value checkers --

const TAG_CHARS_HELP: &str = "AWS allows letters, digits, spaces and _ . : / = + - @";

/// Characters AWS accepts in tag keys and values (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`).
pub(crate) fn is_tag_char(c: char) -> bool {
    c.is_alphanumeric() || (c.is_whitespace() && !c.is_control()) || "_.:/=+-@".contains(c)
}

/// `agent.id` goes into the `secretsync:agent` tag value.
pub(crate) fn validate_agent_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty".into());
    }
    if id.trim() != id {
        return Err("has leading or trailing spaces".into());
    }
    let len = id.chars().count();
    if len > naming::MAX_TAG_VALUE_LEN {
        return Err(format!(
            "is {len} characters; it is a tag value, AWS allows at most {}",
            naming::MAX_TAG_VALUE_LEN
        ));
    }
    if let Some(c) = id.chars().find(|c| !is_tag_char(*c)) {
        return Err(format!(
            "contains {c:?}; it is a tag value, {TAG_CHARS_HELP}"
        ));
    }
    Ok(())
}

/// Sync names: `[a-z0-9-]`, 1..=64 characters, not starting or ending with
/// `-` (a leading `-` would read as a CLI flag).
pub(crate) fn validate_slug(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_SYNC_NAME_LEN {
        return Err(format!("is longer than {MAX_SYNC_NAME_LEN} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; use only lowercase letters, digits and '-'"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must not start or end with '-'".into());
    }
    Ok(())
}

/// AWS region names such as `us-east-1`, `us-gov-west-1`, `eu-central-2`.
pub(crate) fn validate_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 32
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region.ends_with(|c: char| c.is_ascii_digit())
        && region.contains('-')
        && !region.contains("--");
    if ok {
        Ok(())
    } else {
        Err("is not an AWS region name like us-east-1".to_string())
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/NAME`.
pub(crate) fn validate_role_arn(arn: &str) -> Result<(), String> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].len() > "role/".len()
        && parts[5].starts_with("role/");
    if ok {
        Ok(())
    } else {
        Err("is not an IAM role ARN like arn:aws:iam::123456789012:role/name".to_string())
    }
}

/// STS external ids: 2..=1224 characters of `[\w+=,.@:/-]`. The value is
/// not echoed back: some treat it as confidential.
pub(crate) fn validate_external_id(id: &str) -> Result<(), String> {
    let len = id.chars().count();
    if !(2..=1224).contains(&len) {
        return Err(format!("must be 2..=1224 characters, got {len}"));
    }
    if id
        .chars()
        .any(|c| !(c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c)))
    {
        return Err("may contain only letters, digits and _ + = , . @ : / -".into());
    }
    Ok(())
}

/// Endpoint overrides must be absolute http(s) URLs.
pub(crate) fn validate_endpoint_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host)
            if !host.is_empty() && !host.starts_with('/') && !url.contains(char::is_whitespace) =>
        {
            Ok(())
        }
        _ => Err("is not an http:// or https:// URL with a host".to_string()),
    }
}

fn non_empty(what: &str, s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!(
            "{what} must not be empty (use null for the default)"
        ))
    } else {
        Ok(s.to_string())
    }
}

/// Paths: non-empty, no NUL; relative ones are taken relative to the config
/// file's directory, so a config and its files can move together.
fn resolve_path(base: &Path, s: &str, what: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.contains('\0') {
        return Err(format!("{what} contains a NUL character"));
    }
    let p = Path::new(s);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

fn parse_choice<T: Copy>(what: &str, s: &str, choices: &[(&str, T)]) -> Result<T, String> {
    choices
        .iter()
        .find(|(name, _)| *name == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            format!("unknown {what}, expected one of {}", names.join(", "))
        })
}

/// Durations as humans write them: `500ms`, `10s`, `10m`, `1h 30m`; `0`
/// alone means zero.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    // humantime's messages quote the input; ours never do (see the module
    // docs on echoing values).
    humantime::parse_duration(t)
        .map_err(|_| "invalid duration; write e.g. 500ms, 10s, 10m or 1h 30m".to_string())
}

fn parse_duration_in(
    what: &str,
    s: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, String> {
    let d = parse_duration(s).map_err(|e| format!("{what}: {e}"))?;
    if d < min || d > max {
        return Err(format!(
            "{what} must be between {} and {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// Sizes: plain bytes, or a number with `B`, `KiB`, `MiB` or `GiB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() {
        return Err(
            "invalid size; write bytes or a number with KiB, MiB or GiB (e.g. 1MiB)".into(),
        );
    }
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err("unknown size unit; use B, KiB, MiB or GiB".into()),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| "size is too large".to_string())
}

/// `socket_mode`: octal permission bits as a string (`"0660"`, `"660"`,
/// `"0o660"`), at most `0777`, and the owner must be able to read and write
/// (or the agent's own user could not use the socket).
pub(crate) fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let bad = || "agent.socket_mode must be octal permission bits like \"0660\"".to_string();
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err("agent.socket_mode sets special bits; use at most 0777".to_string());
    }
    if mode & 0o600 != 0o600 {
        return Err("agent.socket_mode must let the owner read and write (0600 bits)".to_string());
    }
    Ok(mode)
}

/// Checks a one-to-one template: known variables with values, at least one
/// `{{secretKey}}`, and a valid AWS name for a sample key.
fn check_key_schema(template: &str, vars: &TemplateVars<'_>) -> Result<(), String> {
    let used = template_vars_checked(template, vars)?;
    if !used.iter().any(|v| v == "secretKey") {
        return Err(
            "must contain {{secretKey}}, or every key would map to the same secret".to_string(),
        );
    }
    let sample = TemplateVars {
        secret_key: Some(SAMPLE_KEY),
        ..vars.clone()
    };
    let name = naming::render_template(template, &sample).map_err(|e| e.to_string())?;
    naming::validate_secret_name(&name)
        .map_err(|e| format!("does not give valid secret names: {e}"))
}

/// Checks and renders a many-to-one secret name.
fn check_secret_name(template: &str, vars: &TemplateVars<'_>) -> Result<String, String> {
    let used = template_vars_checked(template, vars)?;
    if used.iter().any(|v| v == "secretKey") {
        return Err(
            "cannot use {{secretKey}}: many-to-one puts all keys in one secret".to_string(),
        );
    }
    let name = naming::render_template(template, vars).map_err(|e| e.to_string())?;
    naming::validate_secret_name(&name).map_err(|e| format!("is not a valid secret name: {e}"))?;
    Ok(name)
}

fn template_vars_checked(template: &str, vars: &TemplateVars<'_>) -> Result<Vec<String>, String> {
    let used = naming::template_variables(template).map_err(|e| e.to_string())?;
    for v in &used {
        if !naming::TEMPLATE_VARS.contains(&v.as_str()) {
            return Err(TemplateError::UnknownVariable(v.clone()).to_string());
        }
        if v == "environment" && vars.environment.is_none() {
            return Err("uses {{environment}} but source.environment is not set".to_string());
        }
    }
    Ok(used)
}
