//! Secret values and the rules that keep them out of every output channel.
//!
//! A value is a [`SecretValue`] from the moment a parser reads it until the
//! store sends it; `Debug` and `Display` redact, and memory is wiped on drop.

use std::fmt;

use zeroize::Zeroize;

/// A secret's plaintext. Formatting it never shows the value, so it can sit
/// inside structs that derive `Debug` and flow through `tracing` safely.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps plaintext read from a source file or from AWS.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The plaintext, for the few places that must send or compare it:
    /// store calls, JSON assembly and hashing. Never format the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Size in bytes as AWS counts it (UTF-8), for the 65,536-byte limit.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let v = SecretValue::new("canary-7d1f");
        assert!(!format!("{v:?}").contains("canary"));
        assert!(!format!("{v}").contains("canary"));
        assert!(!format!("{:?}", Some(vec![v.clone()])).contains("canary"));
        assert_eq!(v.expose(), "canary-7d1f");
    }
}
