use std::path::{Path, PathBuf};
use std::time::Duration;

use super::validate::{parse_duration, parse_size, parse_socket_mode};
use super::*;
use crate::naming::key_for_name;

const PATH: &str = "/etc/secretsync/agent.yaml";
const EXAMPLE: &str = include_str!("../../agent.example.yaml");

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_config(Path::new(PATH), text, &no_env)
}

fn error_lines(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(_) => Vec::new(),
        Err(e) => e.to_string().lines().map(str::to_string).collect(),
    }
}

/// 1-based line and column (in characters) of the `nth` occurrence of
/// `needle`, so expectations name the text an error points at.
fn pos_of(text: &str, needle: &str, nth: usize) -> (u64, u64) {
    let (offset, _) = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    let before = &text[..offset];
    let line = before.matches('\n').count() as u64 + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() as u64 + 1;
    (line, column)
}

const HEADER: &str = "agent: {id: web-01}\naws: {region: us-east-1}\nsyncs:\n";

/// A config with one valid sync named `a` plus `extra` lines inside it
/// (each line already indented by four spaces).
fn one_sync(extra: &str) -> String {
    format!("{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n{extra}")
}

#[test]
fn example_parses_with_expected_values() {
    let config = parse(EXAMPLE).unwrap_or_else(|e| panic!("example invalid:\n{e}"));
    assert_eq!(config.agent.id, "web-01");
    assert_eq!(config.agent.socket_mode, 0o660);
    assert_eq!(
        config.agent.reconcile_interval,
        Some(Duration::from_secs(600))
    );
    assert_eq!(config.agent.max_file_size, 1024 * 1024);
    assert_eq!(
        config.control.allow_groups,
        vec!["secretsync-admin".to_string()]
    );
    assert_eq!(config.aws.region.as_deref(), Some("us-east-1"));
    assert_eq!(config.syncs.len(), 2);

    let app = config.sync("app-prod").expect("app-prod");
    assert_eq!(app.destination.mapping, Mapping::OneToOne);
    assert_eq!(app.destination.region, "us-east-1");
    assert_eq!(app.source.files, vec!["/etc/app/prod.env".to_string()]);
    assert_eq!(app.source.environment.as_deref(), Some("prod"));
    assert_eq!(
        app.secret_name_for("DB_URL").as_deref(),
        Ok("prod/app/DB_URL")
    );
    assert!(app.key_selected("DB_URL"));
    assert!(!app.key_selected("LOCAL_DEBUG"));
    assert_eq!(
        app.destination.tags.get("team").map(String::as_str),
        Some("payments")
    );
    assert_eq!(app.destination.description, None);

    let billing = config.sync("billing-prod").expect("billing-prod");
    assert_eq!(billing.destination.mapping, Mapping::ManyToOne);
    assert_eq!(billing.destination.region, "eu-west-1");
    assert_eq!(
        billing.destination.secret_name.as_deref(),
        Some("prod/billing/config")
    );
    assert_eq!(
        billing.secret_name_for("ANY").as_deref(),
        Ok("prod/billing/config")
    );
    assert_eq!(billing.source.format, FormatSetting::Yaml);
    assert_eq!(
        billing.destination.replica_regions,
        vec!["eu-central-1".to_string()]
    );
    assert_eq!(billing.destination.recovery_window_days, 30);
    assert_eq!(
        billing.destination.external_id.as_deref(),
        Some("billing-sync")
    );
    assert_eq!(
        billing.options.initial_sync,
        InitialSync::OverwriteDestination
    );
    assert_eq!(billing.options.max_delete_fraction, 1.0);
    assert_eq!(
        billing
            .destination
            .tags
            .get("cost-center")
            .map(String::as_str),
        Some("4711")
    );
    assert_eq!(billing.line, pos_of(EXAMPLE, "name: billing-prod", 0).0);
}

#[test]
fn example_documents_every_key() {
    // Each key the raw model accepts appears in the example with a comment
    // on its line or the line it belongs to.
    let keys = [
        "id",
        "socket",
        "socket_mode",
        "state_dir",
        "debounce",
        "reconcile_interval",
        "shutdown_timeout",
        "log_format",
        "log_level",
        "max_file_size",
        "metrics_listen",
        "allow_uids",
        "allow_groups",
        "region",
        "profile",
        "role_arn",
        "external_id",
        "endpoint_url",
        "max_write_tps",
        "max_read_tps",
        "call_timeout",
        "name",
        "description",
        "enabled",
        "auto_sync",
        "files",
        "format",
        "environment",
        "include",
        "exclude",
        "expand",
        "mapping",
        "secret_name",
        "key_schema",
        "kms_key_id",
        "tags",
        "sync_metadata_as_tags",
        "replica_regions",
        "recovery_window_days",
        "adopt_existing",
        "initial_sync",
        "disable_secret_deletion",
        "max_delete_fraction",
    ];
    for key in keys {
        assert!(
            EXAMPLE.contains(&format!("{key}:")),
            "example lacks key {key}"
        );
    }
}

/// Phrases by which a comment says a value cannot be used.
const UNAVAILABLE_PHRASES: [&str; 4] = [
    "not implemented",
    "unimplemented",
    "not supported yet",
    "not yet supported",
];

/// Values that `text`'s comments call unavailable ([`UNAVAILABLE_PHRASES`])
/// although validation accepts them. A comment block (consecutive comment
/// lines, or a comment at the end of a `key: value` line) that uses such a
/// phrase is about the `key: value` line it sits on or directly above; each
/// word of the block is tried as that key's value, and a word that makes
/// the whole file valid is a comment that lies.
fn comments_calling_accepted_values_unavailable(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let comment_of = |line: &str| line.find('#').map(|i| line[i + 1..].to_lowercase());
    let is_comment_only = |line: &str| line.trim_start().starts_with('#');
    let mut lies = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        // The block: comment-only lines from i, or line i alone.
        let mut end = i;
        if is_comment_only(lines[i]) {
            while end + 1 < lines.len() && is_comment_only(lines[end + 1]) {
                end += 1;
            }
        }
        let block: String = lines[i..=end]
            .iter()
            .filter_map(|l| comment_of(l))
            .collect::<Vec<_>>()
            .join(" ");
        let target = if is_comment_only(lines[i]) {
            end + 1
        } else {
            i
        };
        i = end + 1;
        if !UNAVAILABLE_PHRASES.iter().any(|p| block.contains(p)) {
            continue;
        }
        let Some(line) = lines.get(target) else {
            continue;
        };
        let code = line.split('#').next().unwrap_or("");
        let Some((key, _)) = code.split_once(':') else {
            continue;
        };
        let words: std::collections::BTreeSet<&str> = block
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .filter(|w| w.len() > 1 && w.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
            .collect();
        for word in words {
            let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            changed[target] = format!("{key}: {word}");
            if parse(&changed.join("\n")).is_ok() {
                lies.push(format!(
                    "line {}: a comment calls `{}: {word}` unavailable, but the config accepts it",
                    target + 1,
                    key.trim()
                ));
            }
        }
    }
    lies
}

#[test]
fn example_comments_do_not_call_accepted_values_unimplemented() {
    let lies = comments_calling_accepted_values_unavailable(EXAMPLE);
    assert!(lies.is_empty(), "agent.example.yaml: {lies:#?}");
    // The check itself: a stale comment on a valid value is caught, and
    // one about a value the config rejects is not.
    let stale = format!(
        "{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n    options:\n      # import-prioritize-source is not implemented yet\n      initial_sync: overwrite-destination\n"
    );
    assert_eq!(
        comments_calling_accepted_values_unavailable(&stale).len(),
        1
    );
    let true_comment = format!(
        "{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n    options:\n      initial_sync: overwrite-destination   # import-everything is not implemented\n"
    );
    assert!(comments_calling_accepted_values_unavailable(&true_comment).is_empty());
}

#[test]
fn defaults_match_spec() {
    let text = format!("{HEADER}  - name: app\n    source: {{files: [/etc/app/prod.env]}}\n");
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let a = &config.agent;
    assert_eq!(a.socket, PathBuf::from("/run/secretsync/control.sock"));
    assert_eq!(a.socket_mode, 0o660);
    assert_eq!(a.state_dir, PathBuf::from("/var/lib/secretsync"));
    assert_eq!(a.debounce, Duration::from_millis(500));
    assert_eq!(a.reconcile_interval, Some(Duration::from_secs(600)));
    assert_eq!(a.start_jitter, Duration::ZERO);
    assert_eq!(a.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(a.log_format, LogFormat::Auto);
    assert_eq!(a.log_level, LogLevel::Info);
    assert_eq!(a.max_file_size, 1 << 20);
    assert_eq!(a.metrics_listen, None);
    assert_eq!(config.control, ControlSettings::default());
    let aws = &config.aws;
    assert_eq!(
        (
            &aws.profile,
            &aws.role_arn,
            &aws.external_id,
            &aws.endpoint_url
        ),
        (&None, &None, &None, &None)
    );
    assert_eq!((aws.max_write_tps, aws.max_read_tps), (20, 50));
    assert_eq!(aws.call_timeout, Duration::from_secs(10));

    let s = &config.syncs[0];
    assert_eq!(
        (s.enabled, s.auto_sync, s.description.as_deref()),
        (true, true, None)
    );
    assert_eq!(s.line, 4);
    assert_eq!(s.source.format, FormatSetting::Auto);
    assert_eq!(s.source.environment, None);
    assert_eq!(s.source.include, vec!["*".to_string()]);
    assert!(s.source.exclude.is_empty());
    assert!(!s.source.expand);
    let d = &s.destination;
    assert_eq!(d.region, "us-east-1");
    assert_eq!(d.mapping, Mapping::OneToOne);
    assert_eq!(d.secret_name, None);
    assert_eq!(d.key_schema, "{{secretKey}}");
    assert_eq!(d.kms_key_id, None);
    assert!(d.tags.is_empty());
    assert!(!d.sync_metadata_as_tags);
    assert!(d.replica_regions.is_empty());
    assert_eq!(
        (&d.profile, &d.role_arn, &d.external_id),
        (&None, &None, &None)
    );
    assert_eq!(d.recovery_window_days, 7);
    assert!(!d.adopt_existing);
    assert_eq!(s.options.initial_sync, InitialSync::OverwriteDestination);
    assert!(!s.options.disable_secret_deletion);
    assert_eq!(s.options.max_delete_fraction, 0.5);
    assert_eq!(s.secret_name_for("DB_URL").as_deref(), Ok("DB_URL"));
    let tags = s.owner_tags("web-01");
    assert_eq!(
        tags.get("secretsync:agent").map(String::as_str),
        Some("web-01")
    );
    assert_eq!(tags.get("secretsync:sync").map(String::as_str), Some("app"));
}

#[test]
fn nulls_mean_defaults_and_zero_disables_reconcile() {
    let text = "agent: {id: web-01, reconcile_interval: 0, metrics_listen: null, debounce: null}\n\
         control:\naws: {region: us-east-1, profile: null}\nsyncs:\n  - name: a\n    \
         source: {files: [/x.env], include: null}\n    destination: {region: null, tags: null}\n";
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.agent.reconcile_interval, None);
    assert_eq!(config.agent.debounce, Duration::from_millis(500));
    assert_eq!(config.syncs[0].destination.region, "us-east-1");
    assert!(config.syncs[0].key_selected("ANY"));
}

#[test]
fn overrides_are_applied() {
    let text = "agent:\n  id: host-a\n  socket_mode: 0600\n  log_format: json\n  log_level: debug\n  \
                max_file_size: 64KiB\n  metrics_listen: 127.0.0.1:9469\n  socket: run/ctl.sock\n  \
                state_dir: state\ncontrol: {allow_uids: [1000, 1001], allow_groups: [ops]}\n\
                aws:\n  region: us-east-1\n  profile: prod\n  role_arn: arn:aws:iam::123456789012:role/sync\n  \
                external_id: ext-123\n  endpoint_url: http://localhost:4566\n  max_write_tps: 5\n\
                syncs:\n  - name: a\n    enabled: false\n    auto_sync: false\n    \
                source: {files: [app.env, 'extra/*.yaml'], format: env, expand: true}\n    \
                destination: {region: eu-west-1, profile: other, recovery_window_days: 0}\n";
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.agent.socket_mode, 0o600);
    assert_eq!(config.agent.log_format, LogFormat::Json);
    assert_eq!(config.agent.log_level, LogLevel::Debug);
    assert_eq!(config.agent.max_file_size, 64 * 1024);
    assert_eq!(
        config.agent.metrics_listen,
        Some("127.0.0.1:9469".parse().unwrap())
    );
    assert_eq!(
        config.agent.socket,
        PathBuf::from("/etc/secretsync/run/ctl.sock")
    );
    assert_eq!(
        config.agent.state_dir,
        PathBuf::from("/etc/secretsync/state")
    );
    assert_eq!(config.control.allow_uids, vec![1000, 1001]);
    let s = &config.syncs[0];
    assert!(!s.enabled && !s.auto_sync && s.source.expand);
    assert_eq!(
        s.source.files,
        vec![
            "/etc/secretsync/app.env".to_string(),
            "/etc/secretsync/extra/*.yaml".to_string()
        ]
    );
    let d = &s.destination;
    assert_eq!(d.region, "eu-west-1");
    assert_eq!(d.profile.as_deref(), Some("other"));
    assert_eq!(
        d.role_arn.as_deref(),
        Some("arn:aws:iam::123456789012:role/sync")
    );
    assert_eq!(d.external_id.as_deref(), Some("ext-123"));
    assert_eq!(d.endpoint_url.as_deref(), Some("http://localhost:4566"));
    assert_eq!(d.recovery_window_days, 0);
    assert_eq!(config.aws.max_write_tps, 5);
}

#[test]
fn agent_id_defaults_to_host_name() {
    let text = "aws: {region: us-east-1}\nsyncs: []\n";
    let host = gethostname::gethostname()
        .to_string_lossy()
        .trim()
        .to_string();
    match parse(text) {
        Ok(config) => assert_eq!(config.agent.id, host),
        // Only a host name unusable as a tag value may fail, and then with a
        // pointer to agent.id.
        Err(e) => assert!(e.to_string().contains("set agent.id"), "{e}"),
    }
}

#[test]
fn oversized_text_is_rejected_before_parsing() {
    let text = format!("agent: {{id: w}}\n#{}", "x".repeat(MAX_CONFIG_BYTES));
    let err = parse(&text).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(err.0[0].message.contains("larger than 1024 KiB"), "{err}");
}

#[test]
fn region_comes_from_env_when_not_configured() {
    let text = "agent: {id: web-01}\nsyncs:\n  - name: a\n    source: {files: [/x.env]}\n";
    let env = |k: &str| (k == "AWS_REGION").then(|| "eu-west-3".to_string());
    let config = parse_config(Path::new(PATH), text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.syncs[0].destination.region, "eu-west-3");
    assert_eq!(config.aws.region.as_deref(), Some("eu-west-3"));

    let env = |k: &str| (k == "AWS_DEFAULT_REGION").then(|| "ap-south-1".to_string());
    let config = parse_config(Path::new(PATH), text, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.syncs[0].destination.region, "ap-south-1");

    // The file wins over the environment.
    let with_aws = format!("aws: {{region: us-east-2}}\n{text}");
    let env = |_: &str| Some("eu-west-3".to_string());
    let config = parse_config(Path::new(PATH), &with_aws, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.syncs[0].destination.region, "us-east-2");

    // An unusable value from the environment is reported at the sync.
    let env = |k: &str| (k == "AWS_REGION").then(|| "Mars 1".to_string());
    let err = parse_config(Path::new(PATH), text, &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(":3:5: region from AWS_REGION is not an AWS region name"),
        "{err}"
    );

    // Nothing at all: an error at the sync.
    let err = parse(text).unwrap_err().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("{PATH}:3:5: no AWS region")),
        "{err}"
    );
}

/// One semantic check per row: the config, the text the error must point
/// at (`(needle, occurrence)`), and a fragment of the message.
#[test]
fn semantic_validation_table() {
    let long = "x".repeat(65);
    let many_tags: String = (0..49).map(|i| format!("t{i}: v, ")).collect();
    let cases: Vec<(&str, String, (&str, usize), &str)> = vec![
        (
            "duplicate sync name points at the second",
            format!(
                "{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n  - name: a\n    \
                 source: {{files: [/y.env]}}\n    destination: {{region: us-west-2}}\n"
            ),
            ("a\n", 1),
            "duplicate sync name (first defined at line 4)",
        ),
        (
            "slug with uppercase",
            format!("{HEADER}  - name: App_1\n    source: {{files: [/x.env]}}\n"),
            ("App_1", 0),
            "sync name contains 'A'",
        ),
        (
            "slug too long",
            format!("{HEADER}  - name: {long}\n    source: {{files: [/x.env]}}\n"),
            (long.as_str(), 0),
            "longer than 64",
        ),
        (
            "slug with leading hyphen",
            format!("{HEADER}  - name: '-a'\n    source: {{files: [/x.env]}}\n"),
            ("'-a'", 0),
            "must not start or end with '-'",
        ),
        (
            "empty slug",
            format!("{HEADER}  - name: ''\n    source: {{files: [/x.env]}}\n"),
            ("''", 0),
            "sync name is empty",
        ),
        (
            "missing name points at the sync mapping",
            format!("{HEADER}  - source: {{files: [/x.env]}}\n"),
            ("source", 0),
            "missing required key `name`",
        ),
        (
            "missing source",
            format!("{HEADER}  - name: a\n"),
            ("name", 0),
            "missing required key `source`",
        ),
        (
            "missing files points at source mapping",
            format!("{HEADER}  - name: a\n    source:\n      format: env\n"),
            ("format", 0),
            "missing required key `files` in source",
        ),
        (
            "empty files",
            format!("{HEADER}  - name: a\n    source: {{files: []}}\n"),
            ("[]", 0),
            "source.files is empty",
        ),
        (
            "many-to-one without secret_name",
            one_sync("    destination: {mapping: many-to-one}\n"),
            ("many-to-one", 0),
            "mapping many-to-one needs destination.secret_name",
        ),
        (
            "one-to-one key_schema without secretKey",
            one_sync("    destination: {key_schema: app/static}\n"),
            ("app/static", 0),
            "must contain {{secretKey}}",
        ),
        (
            "unknown template variable",
            one_sync("    destination: {key_schema: '{{env}}/{{secretKey}}'}\n"),
            ("'{{env}}", 0),
            "unknown template variable (known: secretKey",
        ),
        (
            "environment variable without source.environment",
            one_sync("    destination: {key_schema: '{{environment}}/{{secretKey}}'}\n"),
            ("'{{environment}}", 0),
            "uses {{environment}} but source.environment is not set",
        ),
        (
            "unclosed template",
            one_sync("    destination: {key_schema: 'x/{{secretKey'}\n"),
            ("'x/", 0),
            "unclosed",
        ),
        (
            "key_schema renders characters AWS rejects",
            one_sync("    destination: {key_schema: 'app prod/{{secretKey}}'}\n"),
            ("'app prod", 0),
            "does not give valid secret names: secret name contains ' '",
        ),
        (
            "secret_name renders characters AWS rejects",
            one_sync("    destination: {mapping: many-to-one, secret_name: 'a#b'}\n"),
            ("'a#b'", 0),
            "is not a valid secret name",
        ),
        (
            "secret_name with secretKey",
            one_sync("    destination: {mapping: many-to-one, secret_name: 'x/{{secretKey}}'}\n"),
            ("'x/", 0),
            "cannot use {{secretKey}}",
        ),
        (
            "secret_name longer than 512 after rendering",
            one_sync(&format!(
                "    destination: {{mapping: many-to-one, secret_name: '{}/{{{{syncName}}}}'}}\n",
                "n".repeat(511)
            )),
            ("'nnn", 0),
            "AWS allows at most 512",
        ),
        (
            "secret_name with one-to-one mapping",
            one_sync("    destination: {secret_name: one}\n"),
            ("one}", 0),
            "only used with mapping: many-to-one",
        ),
        (
            "tag under secretsync:",
            one_sync("    destination: {tags: {'secretsync:owner': me}}\n"),
            ("'secretsync:owner'", 0),
            "reserved 'secretsync:' prefix",
        ),
        (
            "tag under aws:",
            one_sync("    destination: {tags: {'aws:x': me}}\n"),
            ("'aws:x'", 0),
            "reserved 'aws:' prefix",
        ),
        (
            "tag key too long",
            one_sync(&format!(
                "    destination: {{tags: {{{}: v}}}}\n",
                "k".repeat(129)
            )),
            ("kkk", 0),
            "longer than 128",
        ),
        (
            "tag value too long points at the value",
            one_sync(&format!(
                "    destination: {{tags: {{k: {}}}}}\n",
                "v".repeat(257)
            )),
            ("vvv", 0),
            "value longer than 256",
        ),
        (
            "tag with a character AWS rejects",
            one_sync("    destination: {tags: {team: 'a#b'}}\n"),
            ("'a#b'", 0),
            "contains '#'",
        ),
        (
            "more than 48 user tags",
            one_sync(&format!("    destination: {{tags: {{{many_tags}}}}}\n")),
            ("{t0", 0),
            "has 49 tags, at most 48 are allowed (51 tags including the 2 ownership tags",
        ),
        (
            "recovery window 5",
            one_sync("    destination: {recovery_window_days: 5}\n"),
            ("5}", 0),
            "recovery_window_days must be 7..=30, or 0",
        ),
        (
            "recovery window 31",
            one_sync("    destination: {recovery_window_days: 31}\n"),
            ("31", 0),
            "recovery_window_days must be 7..=30, or 0 to delete without recovery",
        ),
        (
            "recovery window negative",
            one_sync("    destination: {recovery_window_days: -1}\n"),
            ("-1}", 1),
            "recovery_window_days must be 7..=30, or 0 to delete without recovery",
        ),
        (
            "max_delete_fraction above 1",
            one_sync("    options: {max_delete_fraction: 1.5}\n"),
            ("1.5", 0),
            "max_delete_fraction must be between 0.0 and 1.0",
        ),
        (
            "max_delete_fraction negative",
            one_sync("    options: {max_delete_fraction: -0.1}\n"),
            ("-0.1", 0),
            "max_delete_fraction must be between 0.0 and 1.0 (1.0 turns the guard off)",
        ),
        (
            "max_delete_fraction NaN",
            one_sync("    options: {max_delete_fraction: .nan}\n"),
            (".nan", 0),
            "not a finite number",
        ),
        (
            "write TPS zero",
            "agent: {id: w}\naws: {region: us-east-1, max_write_tps: 0}\n".to_string(),
            ("0}", 0),
            "aws.max_write_tps must be a whole number of calls per second, at least 1",
        ),
        (
            "read TPS negative",
            "agent: {id: w}\naws: {region: us-east-1, max_read_tps: -5}\n".to_string(),
            ("-5", 0),
            "aws.max_read_tps must be a whole number of calls per second, at least 1",
        ),
        (
            "bad duration",
            "agent: {id: w, debounce: 5 parsecs}\n".to_string(),
            ("5 parsecs", 0),
            "agent.debounce: invalid duration; write e.g. 500ms, 10s, 10m or 1h 30m",
        ),
        (
            "duration without unit",
            "agent: {id: w, reconcile_interval: 10}\n".to_string(),
            ("10}", 0),
            "agent.reconcile_interval: invalid duration;",
        ),
        (
            "call_timeout zero",
            "aws: {call_timeout: 0s}\n".to_string(),
            ("0s", 0),
            "aws.call_timeout must be greater than 0",
        ),
        (
            "start_jitter too long",
            "agent: {start_jitter: 2h}\n".to_string(),
            ("2h", 0),
            "agent.start_jitter",
        ),
        (
            "debounce too long",
            "agent: {debounce: 2h}\n".to_string(),
            ("2h", 0),
            "agent.debounce must be between 0s and 1h",
        ),
        (
            "decimal size unit",
            "agent: {max_file_size: 1MB}\n".to_string(),
            ("1MB", 0),
            "unknown size unit; use B, KiB, MiB or GiB",
        ),
        (
            "zero size",
            "agent: {max_file_size: 0}\n".to_string(),
            ("0}", 0),
            "agent.max_file_size must be between 1 byte and 1GiB",
        ),
        (
            "socket_mode not octal",
            "agent: {socket_mode: '0999'}\n".to_string(),
            ("'0999'", 0),
            "octal permission bits",
        ),
        (
            "socket_mode with special bits",
            "agent: {socket_mode: '1777'}\n".to_string(),
            ("'1777'", 0),
            "special bits",
        ),
        (
            "socket_mode without owner rw",
            "agent: {socket_mode: '0066'}\n".to_string(),
            ("'0066'", 0),
            "owner read and write",
        ),
        (
            "socket path too long for sun_path",
            format!("agent: {{socket: /{}}}\n", "s".repeat(120)),
            ("/sss", 0),
            "Unix sockets allow at most 107",
        ),
        (
            "unknown log_format",
            "agent: {log_format: xml}\n".to_string(),
            ("xml", 0),
            "unknown agent.log_format, expected one of auto, journald, json, text",
        ),
        (
            "unknown log_level",
            "agent: {log_level: verbose}\n".to_string(),
            ("verbose", 0),
            "unknown agent.log_level, expected one of",
        ),
        (
            "metrics_listen not an address",
            "agent: {metrics_listen: 'localhost:9469'}\n".to_string(),
            ("'localhost", 0),
            "agent.metrics_listen must be IP:PORT",
        ),
        (
            "metrics_listen on every interface",
            "agent: {metrics_listen: '0.0.0.0:9469'}\n".to_string(),
            ("'0.0.0.0", 0),
            "agent.metrics_listen must be a loopback address",
        ),
        (
            "include glob does not compile",
            one_sync("    source: {files: [/x.env], include: ['[A-']}\n")
                .replace("    source: {files: [/x.env]}\n    source", "    source"),
            ("'[A-'", 0),
            "source.include pattern is not a valid glob",
        ),
        (
            "exclude glob does not compile",
            format!("{HEADER}  - name: a\n    source: {{files: [/x.env], exclude: ['a[']}}\n"),
            ("'a['", 0),
            "source.exclude pattern is not a valid glob",
        ),
        (
            "empty include",
            format!("{HEADER}  - name: a\n    source: {{files: [/x.env], include: []}}\n"),
            ("[]", 0),
            "source.include is empty",
        ),
        (
            "file glob does not compile",
            format!("{HEADER}  - name: a\n    source: {{files: ['/etc/[x.env']}}\n"),
            ("'/etc", 0),
            "source.files pattern is not a valid glob",
        ),
        (
            "empty environment",
            format!("{HEADER}  - name: a\n    source: {{files: [/x.env], environment: ''}}\n"),
            ("''", 0),
            "source.environment must not be empty",
        ),
        (
            "unknown format",
            format!("{HEADER}  - name: a\n    source: {{files: [/x.env], format: toml}}\n"),
            ("toml", 0),
            "unknown source.format, expected one of auto, env, yaml",
        ),
        (
            "unknown mapping",
            one_sync("    destination: {mapping: one-to-many}\n"),
            ("one-to-many", 0),
            "unknown destination.mapping, expected one of",
        ),
        (
            "unknown initial_sync",
            one_sync("    options: {initial_sync: merge}\n"),
            ("merge", 0),
            "unknown options.initial_sync, expected one of",
        ),
        (
            "empty agent id",
            "agent: {id: ''}\n".to_string(),
            ("''", 0),
            "agent.id is empty",
        ),
        (
            "agent id too long",
            format!("agent: {{id: {}}}\n", "h".repeat(257)),
            ("hhh", 0),
            "agent.id is 257 characters",
        ),
        (
            "agent id with a character tags reject",
            "agent: {id: 'web#1'}\n".to_string(),
            ("'web#1'", 0),
            "agent.id contains '#'",
        ),
        (
            "bad aws.region",
            "aws: {region: US-EAST-1}\n".to_string(),
            ("US-EAST-1", 0),
            "aws.region is not an AWS region name",
        ),
        (
            "bad destination region",
            one_sync("    destination: {region: useast}\n"),
            ("useast", 0),
            "destination.region is not an AWS region name",
        ),
        (
            "replica equals primary",
            one_sync("    destination: {replica_regions: [us-east-1]}\n"),
            ("us-east-1]", 0),
            "is the sync's own region",
        ),
        (
            "replica listed twice",
            one_sync("    destination: {replica_regions: [eu-west-1, eu-west-1]}\n"),
            ("eu-west-1]", 0),
            "listed twice",
        ),
        (
            "bad role arn",
            one_sync("    destination: {role_arn: 'arn:aws:iam::12:user/x'}\n"),
            ("'arn", 0),
            "is not an IAM role ARN",
        ),
        (
            "external_id without role_arn",
            one_sync("    destination: {external_id: abc}\n"),
            ("abc", 0),
            "external_id is only used when assuming a role",
        ),
        (
            "aws.external_id without any role",
            "agent: {id: w}\naws: {region: us-east-1, external_id: abc}\nsyncs:\n  \
                 - name: a\n    source: {files: [/x.env]}\n"
                .to_string(),
            ("abc", 0),
            "external_id is only used when assuming a role",
        ),
        (
            "bad endpoint url",
            "aws: {endpoint_url: 'localhost:4566'}\n".to_string(),
            ("'localhost", 0),
            "is not an http:// or https:// URL",
        ),
        (
            "destination description too long",
            one_sync(&format!(
                "    destination: {{description: {}}}\n",
                "d".repeat(2049)
            )),
            ("ddd", 0),
            "destination.description is longer than 2048",
        ),
        (
            "empty kms key",
            one_sync("    destination: {kms_key_id: ''}\n"),
            ("''", 0),
            "destination.kms_key_id must not be empty",
        ),
        (
            "allow_groups entry with a space",
            "control: {allow_groups: ['a b']}\n".to_string(),
            ("'a b'", 0),
            "control.allow_groups entries must be group names",
        ),
    ];

    for (label, text, (needle, nth), fragment) in &cases {
        let lines = error_lines(text);
        let (line, column) = pos_of(text, needle, *nth);
        let prefix = format!("{PATH}:{line}:{column}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
            "case {label:?}: expected an error at {line}:{column} containing {fragment:?}, got:\n{}",
            lines.join("\n")
        );
        assert_eq!(
            lines.len(),
            1,
            "case {label:?}: expected exactly one error, got:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn accepted_edge_values() {
    for extra in [
        "    destination: {recovery_window_days: 0}\n",
        "    destination: {recovery_window_days: 7}\n",
        "    destination: {recovery_window_days: 30}\n",
        "    options: {max_delete_fraction: 0.0}\n",
        "    options: {max_delete_fraction: 1}\n",
        "    destination: {mapping: many-to-one, secret_name: '{{syncName}}/all'}\n",
        "    destination: {key_schema: '{{ syncName }}/{{ secretKey }}'}\n",
        "    destination: {tags: {'Team Name': 'Payments Ops', n: 42, b: true}}\n",
    ] {
        let text = one_sync(extra);
        if let Err(e) = parse(&text) {
            panic!("{extra}: {e}");
        }
    }
    let tags: String = (0..48).map(|i| format!("t{i}: v, ")).collect();
    assert!(
        parse(&one_sync(&format!(
            "    destination: {{tags: {{{tags}}}}}\n"
        )))
        .is_ok()
    );
}

#[test]
fn type_errors_are_located() {
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown key in a sync",
            one_sync("    bogus: 1\n"),
            "bogus",
            "unknown key `bogus`, expected one of",
        ),
        (
            "unknown key in destination",
            one_sync("    destination: {regoin: us-east-1}\n"),
            "regoin",
            "unknown key `regoin`",
        ),
        (
            "unknown top-level key",
            format!("{HEADER}  - name: a\n    source: {{files: [/x.env]}}\nagnet: {{}}\n"),
            "agnet",
            "unknown key `agnet`, expected one of agent, control, aws, syncs",
        ),
        (
            "wrong type for a bool",
            one_sync("    enabled: maybe\n"),
            "maybe",
            "expected true or false",
        ),
        (
            "files is not a list",
            format!("{HEADER}  - name: a\n    source: {{files: /x.env}}\n"),
            "/x.env",
            "expected a list",
        ),
        (
            "negative uid",
            "control: {allow_uids: [-1]}\n".to_string(),
            "-1",
            "expected a whole number",
        ),
        (
            "fractional TPS",
            "aws: {max_read_tps: 2.5}\n".to_string(),
            "2.5",
            "expected a whole number",
        ),
        (
            "sync is not a mapping",
            format!("{HEADER}  - app\n"),
            "app",
            "expected a mapping",
        ),
    ];
    for (label, text, needle, fragment) in &cases {
        let lines = error_lines(text);
        let (line, column) = pos_of(text, needle, 0);
        let prefix = format!("{PATH}:{line}:{column}: ");
        assert!(
            lines.len() == 1 && lines[0].starts_with(&prefix) && lines[0].contains(fragment),
            "case {label:?}: expected one error at {line}:{column} containing {fragment:?}, got:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn three_errors_in_two_syncs_print_three_lines() {
    // Sync 1: a type error (unknown key). Sync 2: two semantic errors.
    let text = format!(
        "{HEADER}  - name: one\n    source: {{files: [/x.env]}}\n    destination: {{bogus: 1}}\n\
         \x20 - name: Two\n    source: {{files: [/y.env]}}\n    \
         destination: {{region: us-west-2, recovery_window_days: 3}}\n"
    );
    let err = parse(&text).unwrap_err();
    let lines: Vec<String> = err.to_string().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(err.0.len(), 3);
    assert!(
        lines[0].starts_with(&format!("{PATH}:6:19: unknown key `bogus`")),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!("{PATH}:7:11: sync name contains 'T'")),
        "{err}"
    );
    assert!(
        lines[2].starts_with(&format!("{PATH}:9:60: destination.recovery_window_days")),
        "{err}"
    );
}

#[test]
fn type_errors_in_every_section_are_all_reported() {
    let text = "agent: {id: w, typo: 1}\ncontrol: {allow_uids: x}\naws: {regoin: x}\nsyncs:\n  \
                - name: a\n    enabled: maybe\n  - name: b\n    extra: 1\n  - name: Bad\n    \
                source: {files: []}\n";
    let err = parse(text).unwrap_err();
    let got: Vec<(u64, u64)> = err.0.iter().map(|e| (e.line, e.column)).collect();
    // Syncs with a type error are still checked: `a` and `b` lack a source.
    // No sync reports a missing region: `aws:` has an unknown key, which may
    // be the region misspelled.
    assert_eq!(
        got,
        vec![
            (1, 16),  // agent.typo
            (2, 23),  // allow_uids not a list
            (3, 7),   // aws.regoin
            (5, 5),   // sync a: missing source
            (6, 14),  // enabled: maybe
            (7, 5),   // sync b: missing source
            (8, 5),   // extra
            (9, 11),  // bad slug (semantic, still checked)
            (10, 21), // empty files
        ],
        "{err}"
    );
}

/// An expected error: at the `.1`-th occurrence of `.0`, containing `.2`.
type Expect<'a> = (&'a str, usize, &'a str);

/// Asserts that `text` gives exactly `expected` errors, in this order: each
/// at the `nth` occurrence of `needle` and containing `fragment`.
fn assert_errors(label: &str, text: &str, expected: &[Expect<'_>]) {
    let err = match parse(text) {
        Ok(_) => panic!("case {label:?}: parsed without errors"),
        Err(e) => e,
    };
    let want: Vec<(u64, u64)> = expected
        .iter()
        .map(|(needle, nth, _)| pos_of(text, needle, *nth))
        .collect();
    let got: Vec<(u64, u64)> = err.0.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(got, want, "case {label:?}: positions differ, got:\n{err}");
    for (error, (_, _, fragment)) in err.0.iter().zip(expected) {
        assert!(
            error.message.contains(fragment),
            "case {label:?}: {error} lacks {fragment:?}; all:\n{err}"
        );
    }
}

/// Several problems inside one sync (or one list) are all reported, each
/// at its own position: type errors, unknown keys and semantic errors do
/// not hide one another.
#[test]
fn several_errors_in_one_sync_table() {
    let cases: Vec<(&str, String, Vec<Expect<'_>>)> = vec![
        (
            "slug, unknown keys at two depths, recovery window",
            format!(
                "{HEADER}  - name: Bad_Name\n    source:\n      files: [/x.env]\n      \
                 formatt: env\n    destination:\n      recovery_window_days: 3\n    unknown: 1\n"
            ),
            vec![
                ("Bad_Name", 0, "sync name contains 'B'"),
                (
                    "formatt",
                    0,
                    "unknown key `formatt`, expected one of files, format,",
                ),
                ("3\n", 0, "destination.recovery_window_days must be 7..=30"),
                (
                    "unknown",
                    0,
                    "unknown key `unknown`, expected one of name, description,",
                ),
            ],
        ),
        (
            "a string for a bool in a sync and a bad duration in agent",
            "agent: {id: web-01, debounce: soon}\naws: {region: us-east-1}\nsyncs:\n  \
             - name: a\n    enabled: maybe\n    source: {files: [/x.env]}\n"
                .to_string(),
            vec![
                ("soon", 0, "agent.debounce: invalid duration"),
                ("maybe", 0, "expected true or false"),
            ],
        ),
        (
            "type errors in every part of one sync",
            one_sync(
                "    enabled: maybe\n    auto_sync: [x]\n    description: {a: b}\n    \
                 destination: {adopt_existing: 3, recovery_window_days: many, tags: []}\n    \
                 options: {max_delete_fraction: lots, disable_secret_deletion: x}\n",
            ),
            vec![
                ("maybe", 0, "expected true or false"),
                ("[x]", 0, "expected true or false"),
                ("{a: b}", 0, "expected a string"),
                ("3,", 0, "expected true or false"),
                ("many", 0, "expected a whole number"),
                ("[]", 0, "expected a mapping"),
                ("lots", 0, "expected a number"),
                ("x}", 0, "expected true or false"),
            ],
        ),
        (
            "type errors and unknown keys side by side in each mapping",
            format!(
                "{HEADER}  - name: a\n    colour: red\n    enabled: 7\n    source: {{files: [/x.env], \
                 expand: on-ish, formt: env}}\n    destination: {{region: [us-east-1], regoin: x}}\n    \
                 options: {{initial_sync: [a], bogus: 1}}\n"
            ),
            vec![
                ("colour", 0, "unknown key `colour`"),
                ("7", 0, "expected true or false"),
                ("on-ish", 0, "expected true or false"),
                ("formt", 0, "unknown key `formt`"),
                ("[us-east-1]", 0, "expected a string"),
                ("regoin", 0, "unknown key `regoin`"),
                ("[a]", 0, "expected a string"),
                ("bogus", 0, "unknown key `bogus`"),
            ],
        ),
        (
            "bad list elements are reported one by one, the good ones checked",
            "agent: {id: web-01}\naws: {region: us-east-1}\n\
             control: {allow_uids: [1, x, -1], allow_groups: [ops, [a], 'b c']}\nsyncs:\n  \
             - name: a\n    source: {files: [/x.env, [y], '', {z: 1}], exclude: [k, [l]]}\n    \
             destination: {replica_regions: [[r], nowhere]}\n"
                .to_string(),
            vec![
                ("x,", 0, "expected a whole number"),
                ("-1]", 0, "expected a whole number"),
                ("[a]", 0, "expected a string"),
                (
                    "'b c'",
                    0,
                    "control.allow_groups entries must be group names",
                ),
                ("[y]", 0, "expected a string"),
                ("''", 0, "source.files entry must not be empty"),
                ("{z: 1}", 0, "expected a string"),
                ("[l]", 0, "expected a string"),
                ("[r]", 0, "expected a string"),
                ("nowhere", 0, "destination.replica_regions entry"),
            ],
        ),
        (
            "tag value of the wrong type next to a reserved tag key",
            one_sync("    destination: {tags: {team: [a], 'aws:x': y, ok: 1}}\n"),
            vec![("[a]", 0, "expected a string"), ("'aws:x'", 0, "aws:")],
        ),
        (
            "a sync that is not a mapping hides neither neighbour",
            format!(
                "{HEADER}  - name: A\n    source: {{files: [/x.env]}}\n  - just-a-name\n  \
                 - name: b\n    source: {{files: [/y.env]}}\n    extra: 1\n"
            ),
            vec![
                ("A\n", 0, "sync name contains 'A'"),
                ("just-a-name", 0, "expected a mapping"),
                ("extra", 0, "unknown key `extra`"),
            ],
        ),
        (
            "unknown key brought in by a merge, reported where it is merged",
            format!(
                "defaults: &d {{format: env, formatt: env}}\n{HEADER}  - name: a\n    \
                 source: {{<<: *d, files: [/x.env], include: [[x]]}}\n"
            ),
            vec![
                (
                    "defaults",
                    0,
                    "unknown key `defaults`, expected one of agent, control",
                ),
                ("*d", 0, "unknown key `formatt`"),
                ("[x]", 0, "expected a string"),
            ],
        ),
    ];
    for (label, text, expected) in &cases {
        assert_errors(label, text, expected);
    }
}

/// A value with a type error counts as unknown, so the checks that depend
/// on it stay quiet: one mistake, one line.
#[test]
fn type_errors_do_not_cascade() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "name of the wrong type is not also missing",
            format!("{HEADER}  - name: [a]\n    source: {{files: [/x.env]}}\n"),
            "[a]",
        ),
        (
            "source of the wrong type is not also missing",
            format!("{HEADER}  - name: a\n    source: [/x.env]\n"),
            "[/x.env]",
        ),
        (
            "files of the wrong type are not also missing",
            format!("{HEADER}  - name: a\n    source: {{files: {{a: b}}}}\n"),
            "{a: b}",
        ),
        (
            "many-to-one with a secret_name of the wrong type",
            one_sync("    destination: {mapping: many-to-one, secret_name: [x]}\n"),
            "[x]",
        ),
        (
            "secret_name set while mapping has the wrong type",
            one_sync("    destination: {mapping: [m], secret_name: all}\n"),
            "[m]",
        ),
        (
            "environment of the wrong type used by key_schema",
            format!(
                "{HEADER}  - name: a\n    source: {{files: [/x.env], environment: [p]}}\n    \
                 destination: {{key_schema: '{{{{environment}}}}/{{{{secretKey}}}}'}}\n"
            ),
            "[p]",
        ),
        (
            "external_id with a role_arn of the wrong type",
            one_sync("    destination: {role_arn: [r], external_id: ext-1}\n"),
            "[r]",
        ),
        (
            "external_id with aws.role_arn of the wrong type",
            "agent: {id: web-01}\naws: {region: us-east-1, role_arn: [r], external_id: e-1}\n\
             syncs:\n  - name: a\n    source: {files: [/x.env]}\n"
                .to_string(),
            "[r]",
        ),
        (
            "no region error when destination has the wrong type",
            "agent: {id: web-01}\nsyncs:\n  - name: a\n    source: {files: [/x.env]}\n    \
             destination: [us-east-1]\n"
                .to_string(),
            "[us-east-1]",
        ),
        (
            "no region error when aws.region has the wrong type",
            "agent: {id: web-01}\naws: {region: {name: x}}\nsyncs:\n  - name: a\n    \
             source: {files: [/x.env]}\n"
                .to_string(),
            "{name: x}",
        ),
        (
            "no region error when aws has a misspelled key",
            "agent: {id: web-01}\naws: {regoin: us-east-1}\nsyncs:\n  - name: a\n    \
             source: {files: [/x.env]}\n"
                .to_string(),
            "regoin",
        ),
    ];
    for (label, text, needle) in &cases {
        let err = parse(text).unwrap_err();
        let (line, column) = pos_of(text, needle, 0);
        assert!(
            err.0.len() == 1 && (err.0[0].line, err.0[0].column) == (line, column),
            "case {label:?}: expected one error at {line}:{column}, got:\n{err}"
        );
    }
}

/// Every mapping reports its unknown keys with the full list of its keys.
#[test]
fn unknown_keys_list_the_keys_of_their_mapping() {
    let sync =
        |extra: &str| format!("{HEADER}  - name: a\n    source: {{files: [/x.env]{extra}}}\n");
    let cases: Vec<(String, &str)> = vec![
        (
            "agent: {id: web-01, zz: 1}\naws: {region: us-east-1}\n".to_string(),
            "id, socket, socket_mode, state_dir, debounce, reconcile_interval, \
             start_jitter, shutdown_timeout, log_format, log_level, max_file_size, metrics_listen",
        ),
        (
            format!("{HEADER}control: {{zz: 1}}\n"),
            "allow_uids, allow_groups",
        ),
        (
            "agent: {id: web-01}\naws: {region: us-east-1, zz: 1}\n".to_string(),
            "region, profile, role_arn, external_id, endpoint_url, max_write_tps, \
             max_read_tps, call_timeout",
        ),
        (format!("{HEADER}zz: 1\n"), "agent, control, aws, syncs"),
        (
            format!("{}    zz: 1\n", sync("")),
            "name, description, enabled, auto_sync, source, destination, options",
        ),
        (
            sync(", zz: 1"),
            "files, format, environment, include, exclude, expand",
        ),
        (
            one_sync("    destination: {zz: 1}\n"),
            "region, mapping, secret_name, key_schema, kms_key_id, description, tags, \
             sync_metadata_as_tags, replica_regions, profile, role_arn, external_id, \
             recovery_window_days, adopt_existing",
        ),
        (
            one_sync("    options: {zz: 1}\n"),
            "initial_sync, disable_secret_deletion, max_delete_fraction",
        ),
    ];
    for (text, keys) in &cases {
        let (line, column) = pos_of(text, "zz", 0);
        assert_eq!(
            error_lines(text),
            vec![format!(
                "{PATH}:{line}:{column}: unknown key `zz`, expected one of {keys}"
            )],
            "{text}"
        );
    }
    // Tags are the user's keys: anything goes there.
    assert!(parse(&one_sync("    destination: {tags: {zz: 1}}\n")).is_ok());
    // Keys that are not strings are named as written, or described.
    assert_errors(
        "odd keys",
        &one_sync("    destination: {7: a, ? [x, y] : b}\n"),
        &[
            ("7", 0, "unknown key `7`"),
            ("[x, y]", 0, "unknown key (a list or mapping used as a key)"),
        ],
    );
}

/// Type errors never quote the value: a config can hold secrets in odd
/// places (here `SECRET` stands for one).
#[test]
fn type_error_messages_do_not_quote_values() {
    let fields = [
        "agent: {id: VALUE}",
        "agent: {debounce: VALUE}",
        "agent: {socket_mode: VALUE}",
        "control: {allow_uids: VALUE}",
        "control: {allow_uids: [VALUE]}",
        "control: {allow_groups: [VALUE]}",
        "aws: {external_id: VALUE}",
        "aws: {max_write_tps: VALUE}",
        "syncs: [{name: a, enabled: VALUE, source: {files: [/x]}}]",
        "syncs: [{name: a, description: VALUE, source: {files: [/x]}}]",
        "syncs: [{name: a, source: {files: VALUE}}]",
        "syncs: [{name: a, source: {files: [/x], expand: VALUE}}]",
        "syncs: [{name: a, source: {files: [/x]}, destination: {tags: {t: VALUE}}}]",
        "syncs: [{name: a, source: {files: [/x]}, destination: {recovery_window_days: VALUE}}]",
        "syncs: [{name: a, source: {files: [/x]}, options: {max_delete_fraction: VALUE}}]",
        "syncs: [{name: a, source: VALUE}]",
        "syncs: [VALUE]",
        "aws: VALUE",
    ];
    for field in fields {
        // Shapes no field accepts: a list, a mapping, and (for the fields
        // that are not strings) a plain string. (A key inside a mapping may
        // be named in an unknown-key error; that is a key name.)
        for value in ["[SECRET]", "{k: SECRET}", "SECRET", "'SECRET'"] {
            let text = format!("{}\n", field.replace("VALUE", value));
            let Err(err) = parse(&text) else { continue };
            for error in &err.0 {
                let semantic = error.message.contains("must")
                    || error.message.contains("invalid duration")
                    || error.message.contains("missing required")
                    || error.message.contains("region");
                assert!(
                    semantic || !error.message.contains("SECRET"),
                    "{text}: {error}"
                );
            }
        }
    }
}

/// A secret pasted into the wrong key is never echoed: the rule is that a
/// config error names the key and the position of the offending value but
/// never quotes the value itself, whatever the key (enumerated ones
/// included: their message lists the accepted words instead). Quoted are
/// only key names (the config's own, and tag keys), single offending
/// characters, and, in the cross-sync overlap checks, names that already
/// passed their own validation.
#[test]
fn errors_never_echo_a_value_pasted_into_the_wrong_key() {
    const MARK: &str = "9d1e";
    let canaries = [
        "Canary Cfg#9d1e!",
        "canary-cfg-9d1e",
        "canary/cfg/9d1e",
        "{{canary9d1e}}",
        "canary:9d1e",
        "9d1e",
        "CANARY_9d1e$x",
    ];
    let sync = |extra: &str| {
        format!(
            "agent: {{id: w}}\naws: {{region: us-east-1}}\nsyncs:\n  - name: a\n    source: {{files: [/x.env]}}\n{extra}"
        )
    };
    let fields: Vec<String> = [
        "agent: {id: V}",
        "agent: {socket: V}",
        "agent: {state_dir: V}",
        "agent: {socket_mode: V}",
        "agent: {debounce: V}",
        "agent: {reconcile_interval: V}",
        "agent: {start_jitter: V}",
        "agent: {shutdown_timeout: V}",
        "agent: {log_format: V}",
        "agent: {log_level: V}",
        "agent: {max_file_size: V}",
        "agent: {metrics_listen: V}",
        "control: {allow_uids: [V]}",
        "control: {allow_groups: [V]}",
        "aws: {region: V}",
        "aws: {profile: V}",
        "aws: {role_arn: V}",
        "aws: {external_id: V}",
        "aws: {endpoint_url: V}",
        "aws: {call_timeout: V}",
        "aws: {max_write_tps: V}",
        "aws: {max_read_tps: V}",
    ]
    .iter()
    .map(|f| format!("{}\nsyncs: [{{name: a, source: {{files: [/x.env]}}}}]\n", f.replace("V", "'VALUE'")))
    .chain(
        [
            "    enabled: V\n",
            "    description: V\n",
            "    source: {files: [V]}\n",
            "    source: {files: [/x.env], format: V}\n",
            "    source: {files: [/x.env], environment: V}\n",
            "    source: {files: [/x.env], include: [V]}\n",
            "    source: {files: [/x.env], exclude: [V]}\n",
            "    source: {files: [/x.env], expand: V}\n",
            "    destination: {region: V}\n",
            "    destination: {mapping: V}\n",
            "    destination: {mapping: many-to-one, secret_name: V}\n",
            "    destination: {key_schema: V}\n",
            "    destination: {kms_key_id: V}\n",
            "    destination: {description: V}\n",
            "    destination: {tags: {team: V}}\n",
            "    destination: {sync_metadata_as_tags: V}\n",
            "    destination: {replica_regions: [V]}\n",
            "    destination: {profile: V}\n",
            "    destination: {role_arn: V}\n",
            "    destination: {external_id: V}\n",
            "    destination: {recovery_window_days: V}\n",
            "    destination: {adopt_existing: V}\n",
            "    options: {initial_sync: V}\n",
            "    options: {max_delete_fraction: V}\n",
            "    options: {disable_secret_deletion: V}\n",
        ]
        .iter()
        .map(|f| sync(&f.replace("V", "'VALUE'"))),
    )
    .chain(std::iter::once(
        "agent: {id: w}\naws: {region: us-east-1}\nsyncs: [{name: 'VALUE', source: {files: [/x.env]}}]\n".to_string(),
    ))
    .collect();
    let mut errors_seen = 0;
    for field in &fields {
        for canary in canaries {
            let text = field.replace("VALUE", canary);
            let Err(err) = parse(&text) else { continue };
            errors_seen += 1;
            let shown = err.to_string();
            assert!(!shown.contains(MARK), "{text}\n-> {shown}");
        }
    }
    // Most fields reject most of these values: the test is not vacuous.
    assert!(errors_seen > fields.len() * 3, "only {errors_seen} errors");
}

/// Found by the config fuzz test: a mapping used as a key at the top
/// level (here made by a stray `?` in a sync's `options:`) stopped the
/// typed read with an error that was dropped in favour of the key's own
/// message, which was then never added: `check` printed nothing and
/// exited 2.
#[test]
fn a_mapping_used_as_a_key_is_reported_even_when_the_read_stops() {
    let text = format!(
        "{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n    options:\n?      # stray\n      initial_sync: overwrite-destination\n"
    );
    let err = parse(&text).unwrap_err();
    assert!(!err.0.is_empty(), "an error without a message");
    assert!(
        err.0
            .iter()
            .any(|e| e.message.contains("a list or mapping used as a key")),
        "{err}"
    );
    for text in [
        "? {a: 1}\n: x\n".to_string(),
        "? [a]\n: x\nagent: {id: w}\n".to_string(),
        format!("{HEADER}? {{k: v}}\n: 1\n"),
    ] {
        let err = parse(&text).unwrap_err();
        assert!(!err.0.is_empty(), "{text:?}: an error without a message");
    }
}

#[test]
fn type_errors_stop_after_fifty() {
    let mut text = String::from(HEADER);
    for i in 0..60 {
        text.push_str(&format!(
            "  - name: s{i}\n    enabled: maybe\n    source: {{files: [/x.env]}}\n    \
             destination: {{key_schema: 's{i}/{{{{secretKey}}}}'}}\n"
        ));
    }
    let err = parse(&text).unwrap_err();
    assert_eq!(err.0.len(), 51, "{err}");
    assert!(err.0[50].message.contains("too many errors (50)"), "{err}");
}

#[test]
fn syntax_error_stops_with_one_error() {
    let text = format!("{HEADER}  - name: a\n    source: {{files: [/x.env]\n");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].line >= 5, "{err}");

    for (text, fragment) in [
        ("", "config file is empty"),
        ("# nothing\n", "config file is empty"),
        ("- a\n", "expected a mapping"),
        ("a: 1\na: 2\n", "duplicate mapping key"),
        ("agent: *nope\n", "unknown"),
        ("agent: {}\n---\nagent: {}\n", "single YAML document"),
    ] {
        let err = parse(text).unwrap_err();
        assert_eq!(err.0.len(), 1, "{text:?}: {err}");
        assert!(err.0[0].message.contains(fragment), "{text:?}: {err}");
    }
}

#[test]
fn alias_bomb_is_rejected_quickly() {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let prev = format!("*a{}", i - 1);
        text.push_str(&format!(
            "a{i}: &a{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    let start = std::time::Instant::now();
    let err = parse(&text).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// 10,000 levels of flow or block nesting, anywhere in the file: one
/// error with a position, not a stack overflow, and quickly.
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let n = 10_000;
    // Block nesting costs one more space per level: 1,000 levels is what
    // fits in MAX_CONFIG_BYTES.
    let block: String = (0..1000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let inputs = [
        "[".repeat(n),
        "{".repeat(n),
        format!("agent: {}", "[".repeat(n)),
        format!("agent: {}", "{a: ".repeat(n)),
        format!(
            "{HEADER}  - name: a\n    source: {{files: {}}}\n",
            "[".repeat(n)
        ),
        format!("aws: {}{}", "[".repeat(n), "]".repeat(n)),
        format!("control:\n  allow_groups: {}", "- ".repeat(n)),
        block,
    ];
    for text in inputs {
        let start = std::time::Instant::now();
        let err = parse(&text).unwrap_err();
        assert!(!err.0.is_empty());
        for e in &err.0 {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "slow on {:?}",
            &text[..20]
        );
    }
}

/// The classic "billion laughs" shape, aimed at a key the config reads
/// (tags of a sync): refused by the alias budget before anything expands.
#[test]
fn billion_laughs_in_agent_yaml_is_refused() {
    let mut text = String::from("x-lol0: &l0 lol\n");
    for i in 1..10 {
        let prev = format!("*l{}", i - 1);
        text.push_str(&format!(
            "x-lol{i}: &l{i} [{}]\n",
            [prev.as_str(); 10].join(", ")
        ));
    }
    text.push_str(&format!(
        "{HEADER}  - name: a\n    source: {{files: [/x.env]}}\n    destination: {{tags: {{t: *l9}}}}\n"
    ));
    let start = std::time::Instant::now();
    let err = parse(&text).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].line >= 1, "{err}");
    assert!(start.elapsed() < Duration::from_secs(5));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, &text).expect("write");
    let err = load_config(&path).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(
        err.to_string().starts_with(&path.display().to_string()),
        "{err}"
    );
}

/// NUL bytes and invalid UTF-8 in agent.yaml: an error at the offending
/// position, never a panic, and the neighbouring text is not quoted.
#[test]
fn nul_and_invalid_utf8_in_agent_yaml() {
    let path = Path::new(PATH);
    let cases: &[(&[u8], u64)] = &[
        (b"agent:\n  id: canary\0x\n", 2),
        (b"agent:\n  id: \"canary\0x\"\n", 2),
        (b"\0", 1),
        (b"agent: {id: w}\n\0\n", 2),
        (b"agent:\n  id: canary\xffx\n", 2),
        (b"agent:\n  id: canary\xc3\n", 2),
    ];
    for (bytes, line) in cases {
        let err = parse_config_bytes(path, bytes.to_vec(), &no_env).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.0[0].line, *line, "{bytes:?}: {text}");
        assert!(err.0[0].column >= 1, "{bytes:?}: {text}");
        assert!(!text.contains("canary"), "{bytes:?}: {text}");
    }
}

#[test]
fn overlap_detection() {
    let sync = |name: &str, dest: &str, source: &str| {
        format!(
            "  - name: {name}\n    source: {{files: [/x.env]{source}}}\n    destination: {{{dest}}}\n"
        )
    };
    let config = |syncs: &[String]| format!("{HEADER}{}", syncs.concat());
    let m2o = |name: &str| format!("mapping: many-to-one, secret_name: {name}");

    // (label, config, expected error fragment or None)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "identical many-to-one names",
            config(&[
                sync("a", &m2o("prod/all"), ""),
                sync("b", &m2o("prod/all"), ""),
            ]),
            Some("secret 'prod/all' in us-east-1 is also written by sync 'a' (line 4)"),
        ),
        (
            "many-to-one names identical after rendering",
            config(&[
                sync("a", &m2o("'{{environment}}/all'"), ", environment: prod"),
                sync("b", &m2o("prod/all"), ""),
            ]),
            Some("is also written by sync 'a'"),
        ),
        (
            "default key schemas in the same region",
            config(&[sync("a", "", ""), sync("b", "", "")]),
            Some("key_schema gives the same secret names in us-east-1 as sync 'a' (line 4)"),
        ),
        (
            "identical rendered key schemas",
            config(&[
                sync("a", "key_schema: 'prod/{{secretKey}}'", ""),
                sync(
                    "b",
                    "key_schema: '{{environment}}/{{secretKey}}'",
                    ", environment: prod",
                ),
            ]),
            Some("key_schema gives the same secret names"),
        ),
        (
            "syncName makes schemas differ",
            config(&[
                sync("a", "key_schema: '{{syncName}}/{{secretKey}}'", ""),
                sync("b", "key_schema: '{{syncName}}/{{secretKey}}'", ""),
            ]),
            None,
        ),
        (
            "many-to-one name equals a one-to-one name",
            config(&[
                sync("a", "key_schema: 'prod/app/{{secretKey}}'", ""),
                sync("b", &m2o("prod/app/DB_URL"), ""),
            ]),
            Some(
                "secret 'prod/app/DB_URL' in us-east-1 is also the name sync 'a' (line 4) gives key 'DB_URL'",
            ),
        ),
        (
            "one-to-one after many-to-one",
            config(&[
                sync("a", &m2o("prod/app/DB_URL"), ""),
                sync("b", "key_schema: 'prod/app/{{secretKey}}'", ""),
            ]),
            Some("key 'DB_URL' would be named 'prod/app/DB_URL' in us-east-1, the secret sync 'a'"),
        ),
        (
            "excluded key cannot collide",
            config(&[
                sync(
                    "a",
                    "key_schema: 'prod/app/{{secretKey}}'",
                    ", exclude: [DB_*]",
                ),
                sync("b", &m2o("prod/app/DB_URL"), ""),
            ]),
            None,
        ),
        (
            "not a valid key cannot collide",
            config(&[
                sync("a", "key_schema: 'prod/{{secretKey}}'", ""),
                sync("b", &m2o("prod/app/x"), ""),
            ]),
            None,
        ),
        (
            "different regions",
            config(&[
                sync("a", &m2o("prod/all"), ""),
                sync("b", &format!("{}, region: eu-west-1", m2o("prod/all")), ""),
            ]),
            None,
        ),
        (
            "replica region meets primary region",
            config(&[
                sync(
                    "a",
                    &format!("{}, replica_regions: [eu-west-1]", m2o("prod/all")),
                    "",
                ),
                sync("b", &format!("{}, region: eu-west-1", m2o("prod/all")), ""),
            ]),
            Some("secret 'prod/all' in eu-west-1 is also written by sync 'a'"),
        ),
        (
            "different role (likely another account)",
            config(&[
                sync("a", &m2o("prod/all"), ""),
                sync(
                    "b",
                    &format!(
                        "{}, role_arn: 'arn:aws:iam::123456789012:role/x'",
                        m2o("prod/all")
                    ),
                    "",
                ),
            ]),
            None,
        ),
    ];
    for (label, text, want) in &cases {
        let lines = error_lines(text);
        match want {
            None => assert!(
                lines.is_empty(),
                "{label}: unexpected errors:\n{}",
                lines.join("\n")
            ),
            Some(fragment) => {
                assert_eq!(lines.len(), 1, "{label}:\n{}", lines.join("\n"));
                assert!(lines[0].contains(fragment), "{label}:\n{}", lines[0]);
                // Reported on the later sync (lines 7..=9).
                let line: u64 = lines[0]
                    .trim_start_matches(&format!("{PATH}:"))
                    .split(':')
                    .next()
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                assert!((7..=9).contains(&line), "{label}: {}", lines[0]);
            }
        }
    }
}

#[test]
fn key_for_name_cases() {
    let parts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        key_for_name(&parts(&["p/", ""]), "p/KEY").as_deref(),
        Some("KEY")
    );
    assert_eq!(
        key_for_name(&parts(&["", "-x"]), "A-x").as_deref(),
        Some("A")
    );
    assert_eq!(
        key_for_name(&parts(&["a/", "/", ""]), "a/K/K").as_deref(),
        Some("K")
    );
    assert_eq!(key_for_name(&parts(&["a/", "/", ""]), "a/K/J"), None);
    assert_eq!(key_for_name(&parts(&["p/", ""]), "p/"), None);
    assert_eq!(key_for_name(&parts(&["p/", ""]), "q/KEY"), None);
    assert_eq!(key_for_name(&parts(&["p/", ""]), "p/9KEY"), None);
    assert_eq!(key_for_name(&parts(&["static"]), "static"), None);
}

#[test]
fn value_parsers() {
    for (s, want) in [
        ("500ms", Some(Duration::from_millis(500))),
        ("10s", Some(Duration::from_secs(10))),
        ("10m", Some(Duration::from_secs(600))),
        ("1h 30m", Some(Duration::from_secs(5400))),
        ("0", Some(Duration::ZERO)),
        ("10", None),
        ("fast", None),
        ("", None),
        ("-1s", None),
    ] {
        assert_eq!(parse_duration(s).ok(), want, "{s:?}");
    }
    for (s, want) in [
        ("1048576", Some(1 << 20)),
        ("1MiB", Some(1 << 20)),
        ("1 MiB", Some(1 << 20)),
        ("512KiB", Some(512 << 10)),
        ("2GiB", Some(2 << 30)),
        ("100B", Some(100)),
        ("1MB", None),
        ("1.5MiB", None),
        ("MiB", None),
        ("-1", None),
        ("99999999999999999999GiB", None),
        ("18446744073709551615GiB", None),
    ] {
        assert_eq!(parse_size(s).ok(), want, "{s:?}");
    }
    for (s, want) in [
        ("0660", Some(0o660)),
        ("660", Some(0o660)),
        ("0o600", Some(0o600)),
        ("0777", Some(0o777)),
        ("0888", None),
        ("1777", None),
        ("0066", None),
        ("", None),
        ("66000", None),
        ("rw-rw----", None),
    ] {
        assert_eq!(parse_socket_mode(s).ok(), want, "{s:?}");
    }
}

#[test]
fn errors_are_single_lines_even_with_control_characters() {
    // Key names are the one text from the file that errors quote.
    let text = "agent: {\"a\\nb\": 1}\n";
    let err = parse(text).unwrap_err();
    assert_eq!(err.to_string().lines().count(), 1, "{err}");
    assert!(err.to_string().contains("a\\nb"), "{err}");
}

#[test]
fn load_config_reads_files_and_bounds_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, EXAMPLE).expect("write");
    let config = load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.path, path);
    assert_eq!(config.syncs.len(), 2);

    let missing = dir.path().join("missing.yaml");
    let err = load_config(&missing).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot open config file", missing.display())),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("--config PATH or SECRETSYNC_CONFIG"),
        "{err}"
    );

    let big = dir.path().join("big.yaml");
    std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES + 10)).expect("write");
    let err = load_config(&big).unwrap_err();
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");

    let binary = dir.path().join("bin.yaml");
    std::fs::write(&binary, b"agent:\n  id: w\xff\n").expect("write");
    let err = load_config(&binary).unwrap_err();
    assert!(
        err.to_string()
            .ends_with(":2:8: config file is not valid UTF-8"),
        "{err}"
    );

    let err = load_config(dir.path()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot ", dir.path().display())),
        "{err}"
    );
}

/// Checks what every failed load must look like: at least one error,
/// each one `PATH:LINE:COL: message` on one line, with a position inside
/// the file (or no position, `PATH: message`, for errors about the file
/// as a whole).
fn check_errors(bytes: &[u8], e: &ConfigErrors) {
    assert!(!e.0.is_empty(), "{bytes:?}");
    // YAML also ends lines at a lone CR.
    let lines = bytes.iter().filter(|b| matches!(b, b'\n' | b'\r')).count() as u64 + 2;
    for error in &e.0 {
        assert!(!error.message.is_empty(), "{bytes:?}");
        assert!(!error.message.contains(['\n', '\r']), "{error}");
        assert_eq!(error.path, Path::new(PATH));
        assert!(
            (error.line >= 1 && error.column >= 1 && error.line <= lines)
                || (error.line, error.column) == (0, 0),
            "{bytes:?}: {error}"
        );
        let shown = error.to_string();
        let prefix = if error.line == 0 {
            format!("{PATH}: ")
        } else {
            format!("{PATH}:{}:{}: ", error.line, error.column)
        };
        assert!(shown.starts_with(&prefix), "{shown}");
    }
    assert_eq!(e.to_string().lines().count(), e.0.len());
}

/// Mutated versions of the example (raw bytes: bit flips, syntax
/// characters, NUL, invalid UTF-8, duplicated runs) must produce a config
/// or errors in `PATH:LINE:COL` form, never a panic.
#[test]
fn fuzz_config_mutated_example_never_panics() {
    use crate::test_rng::{Rng, cases};
    let interesting = b":-{}[],&*!|>'\"#\n \t0123456789{{}}%@`?\0\xff\xc3\r";
    let mut rng = Rng::seeded(0x9E37_79B9_7F4A_7C15);
    let base = EXAMPLE.as_bytes();
    let total = cases(3000);
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..total {
        let mut bytes = base.to_vec();
        for _ in 0..1 + rng.below(8) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(5) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes[at] = interesting[rng.below(interesting.len())],
                2 => bytes.insert(at, interesting[rng.below(interesting.len())]),
                3 => {
                    bytes.remove(at);
                }
                _ => {
                    // Duplicate a random run of bytes (lines, keys, syncs).
                    let end = (at + rng.below(200)).min(bytes.len());
                    let chunk = bytes[at..end].to_vec();
                    let to = rng.below(bytes.len());
                    bytes.splice(to..to, chunk);
                }
            }
        }
        match parse_config_bytes(Path::new(PATH), bytes.clone(), &no_env) {
            Ok(_) => ok += 1,
            Err(e) => {
                failed += 1;
                check_errors(&bytes, &e);
            }
        }
    }
    assert!(failed > 0 && ok + failed == total);
}

/// Arbitrary bytes (mostly YAML syntax characters) as a config: errors in
/// `PATH:LINE:COL` form (or, rarely, a config), never a panic.
#[test]
fn fuzz_config_random_bytes_never_panics() {
    use crate::test_rng::{Rng, cases};
    const SYNTAX: &[u8] = b" \n\t:-{}[],&*!|>'\"#%@`?~\0\r";
    let mut rng = Rng::seeded(0x2545_f491_4f6c_dd1d);
    for _ in 0..cases(20_000) {
        let len = rng.below(120);
        let bytes = rng.bytes(len, SYNTAX);
        match parse_config_bytes(Path::new(PATH), bytes.clone(), &no_env) {
            Ok(_) => {}
            Err(e) => check_errors(&bytes, &e),
        }
    }
}

#[test]
fn an_importing_sync_needs_a_plain_first_file() {
    let text = format!(
        "{HEADER}  - name: a\n    source: {{files: [/g/*.env]}}\n    options: {{initial_sync: import-prioritize-source}}\n"
    );
    let errors = error_lines(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("is a glob; list a plain file first"),
        "{errors:?}"
    );
    // Overwriting never writes a file, so a glob first is fine there.
    let text = format!("{HEADER}  - name: a\n    source: {{files: [/g/*.env]}}\n");
    assert!(parse(&text).is_ok());
}

#[test]
fn region_names_follow_the_service_model_pattern() {
    use super::validate::validate_region;
    for good in [
        "us-east-1",
        "us-gov-west-1",
        "ap-southeast-2",
        "eu-central-12",
    ] {
        assert!(validate_region(good).is_ok(), "{good}");
    }
    for bad in [
        "us-west2",
        "eu-west1",
        "useast1",
        "us-east-",
        "-us-1",
        "us--east-1",
        "US-EAST-1",
        "us-east-1a",
        "",
    ] {
        assert!(validate_region(bad).is_err(), "{bad}");
    }
}
