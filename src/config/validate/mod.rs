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

mod fields;
mod overlaps;
mod syncs;
#[allow(unused_imports)]
use fields::*;
#[cfg(test)]
pub(super) use fields::{parse_duration, parse_size, parse_socket_mode, validate_region};
#[allow(unused_imports)]
use overlaps::*;
#[allow(unused_imports)]
use syncs::*;

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
    let start_jitter = report.value(raw.start_jitter.get(), Duration::ZERO, |s| {
        parse_duration_in("agent.start_jitter", s, Duration::ZERO, HOUR)
    });
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
        start_jitter,
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
