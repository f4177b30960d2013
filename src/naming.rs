//! Secret-name templates and AWS name/tag limits, shared by config
//! validation (load time) and desired-state building (per key).

use std::collections::BTreeMap;

/// Longest secret name AWS accepts.
pub const MAX_NAME_LEN: usize = 512;
/// Largest `SecretString` AWS accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 65_536;
/// Most tags one secret may carry, ours included.
pub const MAX_TAGS: usize = 50;
/// Longest tag key AWS accepts.
pub const MAX_TAG_KEY_LEN: usize = 128;
/// Longest tag value AWS accepts.
pub const MAX_TAG_VALUE_LEN: usize = 256;
/// Tag key prefix this tool owns; users may not set tags under it.
pub const RESERVED_TAG_PREFIX: &str = "secretsync:";
/// Ownership tag naming the agent that manages a secret.
pub const TAG_AGENT: &str = "secretsync:agent";
/// Ownership tag naming the sync that manages a secret.
pub const TAG_SYNC: &str = "secretsync:sync";
/// Tag naming the install (state_dir) that last wrote a secret, so two
/// hosts sharing an `agent.id` never overwrite or delete each other's work.
pub const TAG_INSTALL: &str = "secretsync:install";

/// Variables a template may use.
pub const TEMPLATE_VARS: [&str; 3] = ["secretKey", "environment", "syncName"];

/// Values substituted into a name template.
#[derive(Debug, Clone, Default)]
pub struct TemplateVars<'a> {
    /// `{{secretKey}}`: the key from the source file.
    pub secret_key: Option<&'a str>,
    /// `{{environment}}`: `source.environment`.
    pub environment: Option<&'a str>,
    /// `{{syncName}}`: the sync's name.
    pub sync_name: &'a str,
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a matching `}}`.
    #[error("unclosed '{{{{' in template")]
    Unclosed,
    /// A variable this tool does not know. Its name is part of a config
    /// value, so the message does not quote it (the config error's
    /// position points at the template).
    #[error("unknown template variable (known: secretKey, environment, syncName)")]
    UnknownVariable(String),
    /// A known variable with no value in this context.
    #[error("template variable '{0}' has no value here")]
    MissingVariable(String),
}

/// Lists the variable names a template refers to, in order.
pub fn template_variables(template: &str) -> Result<Vec<String>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    Ok(out)
}

/// Renders `template`, substituting `{{name}}` (spaces inside braces allowed).
pub fn render_template(template: &str, vars: &TemplateVars<'_>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        let name = after[..end].trim();
        let value = match name {
            "secretKey" => vars.secret_key,
            "environment" => vars.environment,
            "syncName" => Some(vars.sync_name),
            other => return Err(TemplateError::UnknownVariable(other.to_string())),
        };
        out.push_str(value.ok_or_else(|| TemplateError::MissingVariable(name.to_string()))?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The literal text around each `{{secretKey}}` slot of a one-to-one key
/// schema, with `{{environment}}` and `{{syncName}}` rendered: `n` slots give
/// `n + 1` parts. `None` when the template does not render.
///
/// This and [`key_for_name`] are the one place that inverts a key schema
/// (config overlap checks and the import's scope both use them).
pub fn schema_parts(
    key_schema: &str,
    environment: Option<&str>,
    sync_name: &str,
) -> Option<Vec<String>> {
    // NUL never survives name validation, so it marks the key slots.
    let vars = TemplateVars {
        secret_key: Some("\0"),
        environment,
        sync_name,
    };
    let rendered = render_template(key_schema, &vars).ok()?;
    Some(rendered.split('\0').map(str::to_string).collect())
}

/// The valid key for which a schema with these [`schema_parts`] renders
/// exactly `name` (every slot holding the same key), if there is one.
pub fn key_for_name(parts: &[String], name: &str) -> Option<String> {
    let slots = parts.len().checked_sub(1).filter(|n| *n > 0)?;
    let fixed: usize = parts.iter().map(String::len).sum();
    let extra = name.len().checked_sub(fixed)?;
    if extra == 0 || extra % slots != 0 {
        return None;
    }
    let start = parts.first()?.len();
    let key = name.get(start..start + extra / slots)?;
    (is_valid_key(key) && parts.join(key) == name).then(|| key.to_string())
}

/// Whether `c` may appear in an AWS secret name.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_+=.@-".contains(c)
}

/// Checks a rendered secret name against AWS rules; the message names the
/// first offending character so the operator can fix the key or template.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("secret name is empty".into());
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!(
            "secret name is {} characters, AWS allows at most {MAX_NAME_LEN}",
            name.chars().count()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "secret name contains {bad:?}, AWS allows only A-Z a-z 0-9 / _ + = . @ -"
        ));
    }
    Ok(())
}

/// Whether `key` is a valid source key: `[A-Za-z_][A-Za-z0-9_.-]*`.
pub fn is_valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks one tag key/value pair against AWS length rules and the reserved
/// prefixes (`aws:` belongs to AWS, `secretsync:` to us).
pub fn validate_user_tag(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("tag key is empty".into());
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(format!("tag key '{key}' uses the reserved 'aws:' prefix"));
    }
    if key.starts_with(RESERVED_TAG_PREFIX) {
        return Err(format!(
            "tag key '{key}' uses the reserved '{RESERVED_TAG_PREFIX}' prefix"
        ));
    }
    if key.chars().count() > MAX_TAG_KEY_LEN {
        return Err(format!(
            "tag key '{key}' is longer than {MAX_TAG_KEY_LEN} characters"
        ));
    }
    if value.chars().count() > MAX_TAG_VALUE_LEN {
        return Err(format!(
            "tag '{key}' has a value longer than {MAX_TAG_VALUE_LEN} characters"
        ));
    }
    Ok(())
}

/// Checks a full tag set (ours included) against the 50-tag limit.
pub fn validate_tag_count(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags including the 2 ownership tags; AWS allows at most {MAX_TAGS}",
            tags.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_cases() {
        let vars = TemplateVars {
            secret_key: Some("DB_URL"),
            environment: Some("prod"),
            sync_name: "app",
        };
        let cases: &[(&str, Result<&str, TemplateError>)] = &[
            ("{{secretKey}}", Ok("DB_URL")),
            ("{{environment}}/app/{{secretKey}}", Ok("prod/app/DB_URL")),
            ("{{ syncName }}-x", Ok("app-x")),
            ("plain", Ok("plain")),
            ("{{secretKey", Err(TemplateError::Unclosed)),
            (
                "{{nope}}",
                Err(TemplateError::UnknownVariable("nope".into())),
            ),
        ];
        for (template, want) in cases {
            let got = render_template(template, &vars);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "{template}"
            );
        }
        let no_env = TemplateVars {
            sync_name: "s",
            ..Default::default()
        };
        assert_eq!(
            render_template("{{environment}}", &no_env),
            Err(TemplateError::MissingVariable("environment".into()))
        );
    }

    #[test]
    fn name_and_key_rules() {
        assert!(validate_secret_name("prod/app/DB_URL").is_ok());
        assert!(validate_secret_name("a b").is_err());
        assert!(validate_secret_name("").is_err());
        assert!(validate_secret_name(&"a".repeat(513)).is_err());
        assert!(validate_secret_name(&"a".repeat(512)).is_ok());
        for ok in ["A", "_x", "a.b-c_9"] {
            assert!(is_valid_key(ok), "{ok}");
        }
        for bad in ["", "9a", "-a", "a b", "a$"] {
            assert!(!is_valid_key(bad), "{bad}");
        }
    }

    #[test]
    fn tag_rules() {
        assert!(validate_user_tag("team", "payments").is_ok());
        assert!(validate_user_tag("aws:x", "v").is_err());
        assert!(validate_user_tag("AWS:x", "v").is_err());
        assert!(validate_user_tag("secretsync:agent", "v").is_err());
        assert!(validate_user_tag(&"k".repeat(129), "v").is_err());
        assert!(validate_user_tag("k", &"v".repeat(257)).is_err());
    }
}
