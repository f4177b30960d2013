//! Logging setup. One-shot commands log warnings and errors to stderr
//! unless `RUST_LOG` asks for more; stdout stays free for output.
//!
//! Whatever level is asked for, the AWS SDK's wire-level targets are capped
//! (see [`crate::store::aws::SDK_LOG_DIRECTIVES`]): at TRACE they would log
//! request bodies, and request bodies carry secret values.

use tracing_subscriber::EnvFilter;

use crate::store::aws::SDK_LOG_DIRECTIVES;

/// Builds a filter from `RUST_LOG` (or `default`) with the SDK caps added last,
/// so they win over any broader directive.
pub fn filter(default: &str) -> EnvFilter {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    let mut f = EnvFilter::try_new(&base).unwrap_or_else(|_| EnvFilter::new(default));
    for d in SDK_LOG_DIRECTIVES {
        if let Ok(d) = d.parse() {
            f = f.add_directive(d);
        }
    }
    f
}

/// Logging for one-shot CLI commands.
pub fn init_cli() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter("warn"))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
