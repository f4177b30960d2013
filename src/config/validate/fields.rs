//! Field readers: durations, sizes, modes, tags, agent id, templates.

#[allow(unused_imports)]
use super::*;

// ------------------------------------------------------- value checkers --

pub(super) const TAG_CHARS_HELP: &str = "AWS allows letters, digits, spaces and _ . : / = + - @";

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
/// The service model's pattern for region names, `^([a-z]+-)+\d+$` (with
/// its 1..128 length bound kept tighter at 32): letter groups joined by
/// dashes, then a dash and digits. `us-west2` passes a looser check, and
/// AWS then rejects the replica request.
pub(crate) fn validate_region(region: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = region.split('-').collect();
    let number = parts.pop().unwrap_or_default();
    let ok = region.len() <= 32
        && !parts.is_empty()
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()));
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

pub(super) fn non_empty(what: &str, s: &str) -> Result<String, String> {
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
pub(super) fn resolve_path(base: &Path, s: &str, what: &str) -> Result<PathBuf, String> {
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

pub(super) fn parse_choice<T: Copy>(
    what: &str,
    s: &str,
    choices: &[(&str, T)],
) -> Result<T, String> {
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

pub(super) fn parse_duration_in(
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
pub(super) fn check_key_schema(template: &str, vars: &TemplateVars<'_>) -> Result<(), String> {
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
pub(super) fn check_secret_name(template: &str, vars: &TemplateVars<'_>) -> Result<String, String> {
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

pub(super) fn template_vars_checked(
    template: &str,
    vars: &TemplateVars<'_>,
) -> Result<Vec<String>, String> {
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
