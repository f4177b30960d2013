//! Packaging artefacts that no systemd or AWS is needed to check:
//! - `packaging/iam/*.json`: IAM policy shape, only known Secrets Manager /
//!   KMS actions, scoped to owned secrets, and covering every call the agent
//!   makes;
//! - `systemd/secretsync.service`: the directives the agent's contract
//!   depends on, consistent with the config defaults;
//! - `agent.example.yaml` passes `secretsync check --offline`;
//! - the Debian maintainer scripts are valid `sh`.
//!
//! Each checker is also fed broken input, so a checker that stopped
//! checking fails here too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------- IAM ------

/// Every action the agent calls, as IAM names it (SPEC §5, README "AWS calls").
/// `GetSecretValue` is what `BatchGetSecretValue` checks per secret.
const AGENT_CALLS: &[&str] = &[
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
    "secretsmanager:UpdateSecret",
    "secretsmanager:DeleteSecret",
    "secretsmanager:RestoreSecret",
    "secretsmanager:ReplicateSecretToRegions",
    "secretsmanager:RemoveRegionsFromReplication",
];

/// KMS calls Secrets Manager makes on the agent's behalf with a customer
/// key, and `check`'s own read-only key probe (`DescribeKey`).
const KMS_CALLS: &[&str] = &[
    "kms:GenerateDataKey",
    "kms:Decrypt",
    "kms:Encrypt",
    "kms:DescribeKey",
];

/// Actions a read-only (`check` / `plan`) policy may allow.
const READ_ONLY: &[&str] = &[
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "kms:Decrypt",
    "kms:DescribeKey",
];

/// AWS's authorization reference lists no resource type for these: they
/// can only be granted on `"*"`.
const UNSCOPABLE: &[&str] = &[
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
];

const CONDITION_OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "StringNotEqualsIfExists",
    "ForAllValues:StringEquals",
    "ForAllValues:StringLike",
    "ForAnyValue:StringEquals",
    "ForAnyValue:StringLike",
    "Null",
];

fn known_condition_key(key: &str) -> bool {
    key.starts_with("aws:ResourceTag/secretsync:")
        || key.starts_with("aws:RequestTag/secretsync:")
        || matches!(
            key,
            "aws:TagKeys" | "secretsmanager:AddReplicaRegions" | "kms:ViaService"
        )
}

fn known_action(a: &str) -> bool {
    AGENT_CALLS.contains(&a) || KMS_CALLS.contains(&a)
}

/// A string or a non-empty array of strings, as IAM allows for Action,
/// Resource and condition values.
fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) if !items.is_empty() => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 3
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[2].chars().all(|c| c.is_ascii_digit())
        && !parts[2].is_empty()
}

/// `arn:aws:secretsmanager:REGION|*:ACCOUNT:secret:NAME` or
/// `arn:aws:kms:REGION:ACCOUNT:key/ID` (KMS grants name one key, in one region).
fn resource_kind(r: &str) -> Option<&'static str> {
    let parts: Vec<&str> = r.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", "aws", "secretsmanager", region, account, rest]
            if (*region == "*" || is_region(region))
                && is_account(account)
                && rest.strip_prefix("secret:").is_some_and(|n| !n.is_empty()) =>
        {
            Some("secret")
        }
        ["arn", "aws", "kms", region, account, rest]
            if is_region(region)
                && is_account(account)
                && rest
                    .strip_prefix("key/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('*')) =>
        {
            Some("key")
        }
        _ => None,
    }
}

/// All condition keys a statement tests, with their values.
fn condition_keys(stmt: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(ops)) = stmt.get("Condition") {
        for keys in ops.values() {
            if let Value::Object(keys) = keys {
                for (k, v) in keys {
                    let vals = strings(v).unwrap_or_default();
                    out.insert(k.clone(), vals.into_iter().map(str::to_owned).collect());
                }
            }
        }
    }
    out
}

/// Every problem with one policy document; empty when it is fine.
fn check_policy(doc: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let Some(top) = doc.as_object() else {
        return vec!["not a JSON object".into()];
    };
    for k in top.keys() {
        if !matches!(k.as_str(), "Version" | "Statement") {
            errs.push(format!("unexpected top-level key {k}"));
        }
    }
    if top.get("Version").and_then(Value::as_str) != Some("2012-10-17") {
        errs.push("Version must be \"2012-10-17\"".into());
    }
    let Some(stmts) = top.get("Statement").and_then(Value::as_array) else {
        errs.push("Statement must be an array".into());
        return errs;
    };
    if stmts.is_empty() {
        errs.push("Statement is empty".into());
    }
    let mut sids = BTreeSet::new();
    for (i, stmt) in stmts.iter().enumerate() {
        let sid = stmt.get("Sid").and_then(Value::as_str).unwrap_or("");
        let at = format!("Statement[{i}] {sid}");
        let Some(obj) = stmt.as_object() else {
            errs.push(format!("{at}: not an object"));
            continue;
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "Sid" | "Effect" | "Action" | "Resource" | "Condition"
            ) {
                // NotAction / NotResource / Principal have no place in these.
                errs.push(format!("{at}: unexpected key {k}"));
            }
        }
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            errs.push(format!("{at}: Sid must be non-empty [A-Za-z0-9]"));
        } else if !sids.insert(sid) {
            errs.push(format!("{at}: duplicate Sid"));
        }
        let effect = obj.get("Effect").and_then(Value::as_str).unwrap_or("");
        if !matches!(effect, "Allow" | "Deny") {
            errs.push(format!("{at}: Effect must be Allow or Deny"));
        }
        let Some(actions) = obj.get("Action").and_then(strings) else {
            errs.push(format!("{at}: Action must be a string or non-empty array"));
            continue;
        };
        for a in &actions {
            if !known_action(a) {
                errs.push(format!(
                    "{at}: action {a} is not a secretsmanager:/kms: action the agent uses"
                ));
            }
        }
        let Some(resources) = obj.get("Resource").and_then(strings) else {
            errs.push(format!(
                "{at}: Resource must be a string or non-empty array"
            ));
            continue;
        };
        if let Some(cond) = obj.get("Condition") {
            match cond.as_object() {
                None => errs.push(format!("{at}: Condition must be an object")),
                Some(ops) => {
                    for (op, keys) in ops {
                        if !CONDITION_OPERATORS.contains(&op.as_str()) {
                            errs.push(format!("{at}: unknown condition operator {op}"));
                        }
                        let Some(keys) = keys.as_object().filter(|k| !k.is_empty()) else {
                            errs.push(format!("{at}: {op} must map keys to values"));
                            continue;
                        };
                        for (key, val) in keys {
                            if !known_condition_key(key) {
                                errs.push(format!("{at}: unknown condition key {key}"));
                            }
                            match strings(val) {
                                None => errs.push(format!("{at}: {op} {key}: bad value")),
                                Some(v) if op == "Null" && v != ["true"] && v != ["false"] => {
                                    errs.push(format!("{at}: Null {key} must be true/false"))
                                }
                                Some(_) => {}
                            }
                        }
                    }
                }
            }
        }
        if effect != "Allow" {
            continue;
        }
        // Least privilege for what is allowed.
        let conds = condition_keys(stmt);
        for r in &resources {
            if *r == "*" {
                for a in &actions {
                    if !UNSCOPABLE.contains(a) {
                        errs.push(format!("{at}: {a} allowed on \"*\"; scope it"));
                    }
                }
                continue;
            }
            match resource_kind(r) {
                None => errs.push(format!("{at}: resource {r} is not a secret or key ARN")),
                Some("secret") => {
                    // Existing secrets: aws:ResourceTag; new ones: aws:RequestTag.
                    // Even a name prefix alone would reach other agents' secrets.
                    let ownership = conds.keys().any(|k| k.ends_with("Tag/secretsync:agent"));
                    if !ownership {
                        errs.push(format!(
                            "{at}: {r} without a secretsync:agent tag condition"
                        ));
                    }
                    if actions.iter().any(|a| a.starts_with("kms:")) {
                        errs.push(format!("{at}: kms action on a secret ARN"));
                    }
                }
                Some(_) => {
                    if actions.iter().any(|a| !a.starts_with("kms:")) {
                        errs.push(format!("{at}: non-kms action on a key ARN"));
                    }
                    let region = r.split(':').nth(3).unwrap_or_default();
                    let want = format!("secretsmanager.{region}.amazonaws.com");
                    // DescribeKey (check's probe) reads metadata and uses no
                    // key material; every cryptographic action goes through
                    // Secrets Manager only.
                    let metadata_only = actions.iter().all(|a| *a == "kms:DescribeKey");
                    if !metadata_only
                        && conds.get("kms:ViaService").map(Vec::as_slice)
                            != Some(&[want.clone()][..])
                    {
                        errs.push(format!(
                            "{at}: key use must be limited to kms:ViaService {want}"
                        ));
                    }
                }
            }
        }
    }
    errs
}

fn policies() -> BTreeMap<String, Value> {
    let dir = repo().join("packaging/iam");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("packaging/iam exists") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        assert!(
            name.ends_with(".json"),
            "{name}: only *.json policies and README.md belong in packaging/iam"
        );
        let text = std::fs::read_to_string(&path).expect("readable");
        let doc: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
        out.insert(name, doc);
    }
    out
}

fn allowed_actions(doc: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for stmt in doc["Statement"].as_array().into_iter().flatten() {
        if stmt["Effect"] == "Allow" {
            for a in strings(&stmt["Action"]).unwrap_or_default() {
                out.insert(a.to_owned());
            }
        }
    }
    out
}

#[test]
fn every_iam_policy_is_well_formed_and_least_privilege() {
    let all = policies();
    for expected in [
        "agent-policy.json",
        "agent-replicas-policy.json",
        "agent-kms-policy.json",
        "readonly-policy.json",
    ] {
        assert!(
            all.contains_key(expected),
            "missing packaging/iam/{expected}"
        );
    }
    let problems: Vec<String> = all
        .iter()
        .flat_map(|(name, doc)| {
            check_policy(doc)
                .into_iter()
                .map(move |e| format!("{name}: {e}"))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn agent_policies_together_allow_every_call_the_agent_makes() {
    let all = policies();
    let mut allowed = BTreeSet::new();
    for name in [
        "agent-policy.json",
        "agent-replicas-policy.json",
        "agent-kms-policy.json",
    ] {
        allowed.extend(allowed_actions(&all[name]));
    }
    let missing: Vec<_> = AGENT_CALLS
        .iter()
        .chain(KMS_CALLS)
        .filter(|a| !allowed.contains(**a))
        .collect();
    assert!(missing.is_empty(), "no Allow for {missing:?}");
    // The base policy alone must not allow replication (opt-in file).
    let base = allowed_actions(&all["agent-policy.json"]);
    assert!(!base.contains("secretsmanager:ReplicateSecretToRegions"));
}

#[test]
fn readonly_policy_allows_only_reads() {
    let all = policies();
    let allowed = allowed_actions(&all["readonly-policy.json"]);
    let writes: Vec<_> = allowed
        .iter()
        .filter(|a| !READ_ONLY.contains(&a.as_str()))
        .collect();
    assert!(writes.is_empty(), "read-only policy allows {writes:?}");
    for a in [
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
    ] {
        assert!(allowed.contains(a), "read-only policy lacks {a}");
    }
}

#[test]
fn create_secret_requires_the_ownership_tags_in_the_request() {
    let all = policies();
    for (name, doc) in &all {
        for stmt in doc["Statement"].as_array().into_iter().flatten() {
            let actions = strings(&stmt["Action"]).unwrap_or_default();
            if stmt["Effect"] == "Allow" && actions.contains(&"secretsmanager:CreateSecret") {
                let conds = condition_keys(stmt);
                assert!(
                    conds.contains_key("aws:RequestTag/secretsync:agent")
                        && conds.contains_key("aws:RequestTag/secretsync:sync"),
                    "{name} {}: CreateSecret without ownership request tags",
                    stmt["Sid"]
                );
            }
        }
    }
}

#[test]
fn the_policy_checker_rejects_broad_or_malformed_policies() {
    let ok_stmt = serde_json::json!({
        "Sid": "Ok", "Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*"
    });
    let cases: Vec<(&str, Value)> = vec![
        ("not an object", serde_json::json!([])),
        (
            "wrong version",
            serde_json::json!({"Version": "2008-10-17", "Statement": [ok_stmt]}),
        ),
        (
            "empty statements",
            serde_json::json!({"Version": "2012-10-17", "Statement": []}),
        ),
        (
            "wildcard action",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"}]}),
        ),
        (
            "foreign service",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}),
        ),
        (
            "write on star",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "secretsmanager:PutSecretValue", "Resource": "*"}]}),
        ),
        (
            "no ownership condition",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "secretsmanager:DeleteSecret",
                 "Resource": "arn:aws:secretsmanager:*:123456789012:secret:*"}]}),
        ),
        (
            "kms without ViaService",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "kms:Decrypt",
                 "Resource": "arn:aws:kms:us-east-1:123456789012:key/abc"}]}),
        ),
        (
            "key use hidden next to DescribeKey",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": ["kms:DescribeKey", "kms:Decrypt"],
                 "Resource": "arn:aws:kms:us-east-1:123456789012:key/abc"}]}),
        ),
        (
            "ViaService of another region",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "kms:Decrypt",
                 "Resource": "arn:aws:kms:us-east-1:123456789012:key/abc",
                 "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}}}]}),
        ),
        (
            "NotAction",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "NotAction": "kms:Decrypt", "Action": "kms:Decrypt",
                 "Resource": "*"}]}),
        ),
        (
            "duplicate sid",
            serde_json::json!({"Version": "2012-10-17", "Statement": [ok_stmt, ok_stmt]}),
        ),
        (
            "bad Null value",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*",
                 "Condition": {"Null": {"aws:TagKeys": "maybe"}}}]}),
        ),
        (
            "unknown condition key",
            serde_json::json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "A", "Effect": "Allow", "Action": "secretsmanager:ListSecrets", "Resource": "*",
                 "Condition": {"StringEquals": {"aws:SourceIp": "10.0.0.1"}}}]}),
        ),
    ];
    for (what, doc) in cases {
        assert!(!check_policy(&doc).is_empty(), "checker accepted: {what}");
    }
    let good = serde_json::json!({"Version": "2012-10-17", "Statement": [ok_stmt]});
    assert_eq!(check_policy(&good), Vec::<String>::new());
}

// --------------------------------------------------------------- unit ------

/// `[Section] Key=value` lines; repeated keys keep every value in order.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_owned();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        out.entry((section.clone(), k.trim().to_owned()))
            .or_default()
            .push(v.trim().to_owned());
    }
    out
}

fn unit() -> BTreeMap<(String, String), Vec<String>> {
    parse_unit(
        &std::fs::read_to_string(repo().join("systemd/secretsync.service")).expect("unit file"),
    )
}

/// Last value of `[Service] key` (systemd: the last assignment wins).
fn service<'a>(u: &'a BTreeMap<(String, String), Vec<String>>, key: &str) -> &'a str {
    u.get(&("Service".to_owned(), key.to_owned()))
        .and_then(|v| v.last())
        .map(String::as_str)
        .unwrap_or_else(|| panic!("[Service] {key}= is not set"))
}

/// Parses the `WatchdogSec=30s` style used in the unit into seconds.
fn seconds(v: &str) -> u64 {
    if let Some(m) = v.strip_suffix("min") {
        return m.parse::<u64>().expect("minutes") * 60;
    }
    v.trim_end_matches('s').parse().expect("seconds")
}

#[test]
fn unit_fits_the_agent_contract() {
    let u = unit();
    let expect = [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("User", "secretsync"),
        ("Group", "secretsync"),
        ("UMask", "0077"),
        ("RuntimeDirectory", "secretsync"),
        ("StateDirectory", "secretsync"),
        ("ConfigurationDirectory", "secretsync"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
    ];
    for (key, want) in expect {
        assert_eq!(service(&u, key), want, "[Service] {key}");
    }
    let filters = &u[&("Service".to_owned(), "SystemCallFilter".to_owned())];
    assert!(
        filters.iter().any(|f| f == "@system-service"),
        "{filters:?}"
    );
    // Invalid config (exit 2) must not restart-loop.
    assert!(
        service(&u, "RestartPreventExitStatus")
            .split_whitespace()
            .any(|s| s == "2")
    );
    assert!(seconds(service(&u, "WatchdogSec")) > 0);
    assert!(u.contains_key(&("Install".to_owned(), "WantedBy".to_owned())));
}

#[test]
fn unit_paths_match_the_built_in_defaults() {
    use secretsync::config::{DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH, DEFAULT_STATE_DIR};
    let u = unit();
    let exec = service(&u, "ExecStart");
    assert_eq!(
        exec,
        format!("/usr/bin/secretsync run --config {DEFAULT_CONFIG_PATH}")
    );
    assert_eq!(DEFAULT_CONFIG_PATH, secretsync::cli::DEFAULT_CONFIG);
    let under = |base: &str, dir: &str| Path::new(base).join(dir);
    assert_eq!(
        Path::new(DEFAULT_SOCKET_PATH).parent().unwrap(),
        under("/run", service(&u, "RuntimeDirectory")),
        "the socket must live in RuntimeDirectory"
    );
    assert_eq!(
        Path::new(DEFAULT_STATE_DIR),
        under("/var/lib", service(&u, "StateDirectory"))
    );
    assert_eq!(
        Path::new(DEFAULT_CONFIG_PATH).parent().unwrap(),
        under("/etc", service(&u, "ConfigurationDirectory"))
    );
}

#[test]
fn unit_lets_the_socket_group_in_and_outwaits_the_graceful_stop() {
    let u = unit();
    let example = secretsync::config::load_config(&repo().join("agent.example.yaml"))
        .unwrap_or_else(|e| panic!("agent.example.yaml: {e}"));
    let dir_mode = u32::from_str_radix(service(&u, "RuntimeDirectoryMode"), 8).expect("octal");
    if example.agent.socket_mode & 0o060 != 0 {
        assert_ne!(
            dir_mode & 0o010,
            0,
            "socket_mode {:o} admits the group but RuntimeDirectoryMode {dir_mode:o} does not",
            example.agent.socket_mode
        );
    }
    assert_eq!(
        dir_mode & 0o007,
        0,
        "others must not reach the socket directory"
    );
    // systemd SIGKILLs at TimeoutStopSec; the agent needs shutdown_timeout
    // to finish in-flight calls, plus time to exit.
    let stop = seconds(service(&u, "TimeoutStopSec"));
    assert!(
        stop >= example.agent.shutdown_timeout.as_secs() + 10,
        "TimeoutStopSec={stop}s too close to shutdown_timeout {:?}",
        example.agent.shutdown_timeout
    );
}

#[test]
fn unit_parser_sees_last_assignment_and_missing_keys() {
    let u = parse_unit("[Service]\nType=simple\nType=notify\n# Type=oneshot\n");
    assert_eq!(service(&u, "Type"), "notify");
    let missing = std::panic::catch_unwind(|| {
        let _ = service(&u, "User");
    });
    assert!(missing.is_err(), "a missing directive must fail the check");
}

// ------------------------------------------------------ example config ------

fn secretsync(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_secretsync"))
        .args(args)
        .env_remove("SECRETSYNC_CONFIG")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run secretsync")
}

#[test]
fn example_config_passes_check_offline() {
    let path = repo().join("agent.example.yaml");
    let out = secretsync(&["check", "--offline", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let show = format!(
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    assert!(stdout.contains("config OK (2 syncs)"), "{show}");
    assert!(stderr.trim().is_empty(), "{show}");
    assert_eq!(out.status.code(), Some(0), "{show}");
    assert_eq!(stdout.lines().count(), 1, "unexpected output\n{show}");
}

#[test]
fn check_offline_fails_a_broken_copy_of_the_example() {
    // Proves the check above can fail: one unknown key is exit 2 (SPEC §2, §3).
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(repo().join("agent.example.yaml")).expect("example");
    let broken = text.replacen("agent:", "agent:\n  no_such_key: 1", 1);
    assert_ne!(broken, text);
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, broken).expect("write");
    let out = secretsync(&["check", "--offline", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
}

// --------------------------------------------------- maintainer scripts ------

#[test]
fn maintainer_scripts_are_valid_sh_with_a_debhelper_token() {
    let dir = repo().join("packaging/debian");
    let mut seen = 0;
    for name in ["postinst", "postrm"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.starts_with("#!/bin/sh\n"), "{name}: needs #!/bin/sh");
        assert!(text.contains("set -e"), "{name}: needs set -e");
        // cargo-deb puts its systemd snippets where this token is.
        assert!(text.contains("#DEBHELPER#"), "{name}: no #DEBHELPER# token");
        let st = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .expect("sh");
        assert!(st.success(), "{name}: sh -n failed");
        seen += 1;
    }
    assert_eq!(seen, 2);
}
