//! Logging setup. One-shot commands log warnings and errors to stderr
//! unless `RUST_LOG` asks for more; stdout stays free for output.
//!
//! Whatever level is asked for, the AWS SDK's wire-level targets are capped
//! (see [`SDK_LOG_DIRECTIVES`]): at TRACE they would log
//! request bodies, and request bodies carry secret values.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{AgentSettings, LogFormat};

/// `tracing` directives appended to its filter whatever the
/// configured log level: at TRACE the SDK's orchestrator logs whole HTTP
/// requests and responses, bodies (secret values) included.
///
/// `aws_config` is capped at ERROR: its credential chain logs a failing
/// provider at WARN with the SDK's `Debug` dump of the HTTP response
/// (kilobytes of `Response { .. }` structs); the error it returns reaches
/// the user through the store's own, readable message instead.
pub const SDK_LOG_DIRECTIVES: &[&str] = &[
    "aws_config=error",
    "aws_smithy_runtime=debug",
    "aws_smithy_http_client=debug",
    "aws_sigv4=debug",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
];

/// Builds a filter from `RUST_LOG` (or `default`), then caps the SDK's
/// wire-level targets: each at the lower of its cap and the most verbose
/// level asked for, so the caps never make the SDK louder than requested.
pub fn filter(default: &str) -> EnvFilter {
    filter_from(std::env::var("RUST_LOG").ok().as_deref(), default)
}

fn filter_from(rust_log: Option<&str>, default: &str) -> EnvFilter {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or(default);
    let mut f = EnvFilter::try_new(base).unwrap_or_else(|_| EnvFilter::new(default));
    let loudest = f.max_level_hint().unwrap_or(LevelFilter::TRACE);
    for d in SDK_LOG_DIRECTIVES {
        let Some((target, level)) = d.split_once('=') else {
            continue;
        };
        let Ok(cap) = level.parse::<LevelFilter>() else {
            continue;
        };
        if let Ok(directive) = format!("{target}={}", cap.min(loudest)).parse() {
            f = f.add_directive(directive);
        }
    }
    f
}

/// Colours only for a person at a terminal, never in files or the journal.
fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Human-readable lines on stderr (the fallback and the `text` format).
fn text_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_ansi(stderr_is_terminal())
        .with_writer(std::io::stderr)
}

/// Logging for one-shot CLI commands.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("warn"))
        .with_ansi(stderr_is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Logging for the agent, per `agent.log_format` and `agent.log_level`
/// (`RUST_LOG` wins when set). `auto` means journald when systemd connected
/// our stderr to the journal (`JOURNAL_STREAM`), else text on stderr. If the
/// journal socket cannot be opened, text on stderr is used and said so.
pub fn init_agent(agent: &AgentSettings) {
    let level = agent.log_level.as_str();
    let format = match agent.log_format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    let registry = tracing_subscriber::registry().with(filter(level));
    match format {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => {
                let _ = registry
                    .with(layer.with_syslog_identifier("secretsync".into()))
                    .try_init();
            }
            Err(e) => {
                let _ = registry.with(text_layer()).try_init();
                tracing::warn!(error = %e, "journald unavailable; logging text to stderr");
            }
        },
        LogFormat::Json => {
            let _ = registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(std::io::stderr),
                )
                .try_init();
        }
        LogFormat::Auto | LogFormat::Text => {
            let _ = registry.with(text_layer()).try_init();
        }
    }
}

/// What a panic payload may show: a string literal (`panic!("...")`,
/// `unreachable!()`, `expect("...")` without a formatted error) cannot hold
/// data from a file or from AWS; a formatted message can, so it is
/// withheld (SPEC §5 rule 9: no values in panics).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> &'static str {
    payload
        .downcast_ref::<&'static str>()
        .copied()
        .unwrap_or("(message withheld: a formatted panic message may contain data)")
}

/// A failed task (`JoinError`) as text for logs and status: tokio's own
/// `Display` quotes the panic message, which [`panic_text`] filters.
pub fn join_error_text(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "task cancelled".to_string();
    }
    match e.try_into_panic() {
        Ok(payload) => format!("task panicked (a bug): {}", panic_text(payload.as_ref())),
        Err(_) => "task failed".to_string(),
    }
}

/// Replaces the default panic hook, which prints whatever the panic
/// message holds, with one that prints the location and only literal
/// messages ([`panic_text`]) to stderr and the log.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "an unknown location".to_string());
        let text = panic_text(info.payload());
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        eprintln!(
            "secretsync: internal error (a bug; please report it): thread '{thread}' panicked at {location}: {text}"
        );
        tracing::error!(%location, thread, message = text, "internal error (panic)");
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;
    use tracing_subscriber::layer::SubscriberExt;

    fn enabled(rust_log: Option<&str>, target_level: Level) -> (bool, bool) {
        let subscriber = tracing_subscriber::registry().with(filter_from(rust_log, "warn"));
        tracing::subscriber::with_default(subscriber, || {
            let sdk = match target_level {
                Level::TRACE => {
                    tracing::enabled!(target: "aws_smithy_runtime::client", Level::TRACE)
                }
                Level::DEBUG => {
                    tracing::enabled!(target: "aws_smithy_runtime::client", Level::DEBUG)
                }
                _ => tracing::enabled!(target: "aws_smithy_runtime::client", Level::INFO),
            };
            let ours = tracing::enabled!(target: "secretsync", Level::DEBUG);
            (sdk, ours)
        })
    }

    #[test]
    fn sdk_caps_never_raise_the_level() {
        // Regression: the caps used to enable SDK debug logs at the default level.
        assert_eq!(enabled(None, Level::DEBUG), (false, false));
        assert_eq!(enabled(Some("info"), Level::DEBUG), (false, false));
        assert_eq!(enabled(Some("debug"), Level::DEBUG), (true, true));
    }

    #[test]
    fn sdk_wire_logs_stay_off_at_trace() {
        assert!(!enabled(Some("trace"), Level::TRACE).0);
        assert!(!enabled(Some("aws_smithy_runtime=trace"), Level::TRACE).0);
    }

    /// The credential chain's WARN carries a multi-KB `Debug` dump of the
    /// SDK's HTTP response; it never shows, whatever the level.
    #[test]
    fn credential_chain_warnings_are_capped() {
        for rust_log in [None, Some("info"), Some("debug"), Some("aws_config=trace")] {
            let subscriber = tracing_subscriber::registry().with(filter_from(rust_log, "warn"));
            let (warn, error) = tracing::subscriber::with_default(subscriber, || {
                (
                    tracing::enabled!(target: "aws_config::meta::credentials::chain", Level::WARN),
                    tracing::enabled!(target: "aws_config::meta::credentials::chain", Level::ERROR),
                )
            });
            assert!(!warn && error, "{rust_log:?}");
        }
    }

    const CANARY: &str = "canary-panic-71c2-must-not-leak";
    const CHILD_ENV: &str = "SECRETSYNC_TEST_PANIC_CHILD";

    #[test]
    fn panic_text_shows_literals_only() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("index out of range");
        assert_eq!(panic_text(literal.as_ref()), "index out of range");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("bad value {CANARY}"));
        assert!(!panic_text(formatted.as_ref()).contains("canary"));
        assert!(panic_text(formatted.as_ref()).contains("withheld"));
    }

    #[tokio::test]
    async fn join_errors_do_not_quote_panic_messages() {
        let task = tokio::spawn(async {
            if !CANARY.is_empty() {
                panic!("value was {CANARY}");
            }
        });
        let err = task.await.unwrap_err();
        assert!(
            err.to_string().contains("canary"),
            "tokio quotes the message"
        );
        let text = join_error_text(err);
        assert!(
            text.contains("panicked") && !text.contains("canary"),
            "{text}"
        );
    }

    /// The installed hook, in a child process (a hook is process-wide):
    /// a panic with a formatted message prints where, never what.
    #[test]
    fn panic_hook_prints_location_not_message() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "logging::tests::panic_hook_child",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_ENV, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "the child must panic: {stdout}");
        assert!(
            stderr.contains("secretsync: internal error") && stderr.contains("src/logging.rs:"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("canary") && !stdout.contains("canary"),
            "{stderr}"
        );
    }

    #[test]
    #[ignore = "helper process of panic_hook_prints_location_not_message"]
    fn panic_hook_child() {
        if std::env::var_os(CHILD_ENV).is_none() {
            return;
        }
        install_panic_hook();
        panic!("secret value: {CANARY}");
    }
}
