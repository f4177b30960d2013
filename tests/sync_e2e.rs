//! End-to-end tests of the one-shot commands: the real binary against a real
//! moto server, through the counting/fault-injecting proxy.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use aws_sdk_secretsmanager::types::Tag;
use serde_json::Value;
use support::{Fault, FaultProxy, Moto};

const CANARY: &str = "canary-5f1c9e-do-not-print";

struct Env {
    rt: tokio::runtime::Runtime,
    _moto: Moto,
    proxy: FaultProxy,
    client: aws_sdk_secretsmanager::Client,
    dir: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Env {
    fn new() -> Env {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint);
        let client = rt.block_on(moto.client());
        Env {
            rt,
            _moto: moto,
            proxy,
            client,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Writes agent.yaml with the given `syncs:` block (already indented by 2).
    fn config(&self, syncs: &str) -> PathBuf {
        let text = format!(
            "agent:\n  id: test-agent\n  state_dir: {state}\naws:\n  region: us-east-1\n  endpoint_url: {ep}\n  max_write_tps: 500\n  max_read_tps: 500\n  call_timeout: 5s\nsyncs:\n{syncs}",
            state = self.path("state").display(),
            ep = self.proxy.endpoint,
        );
        self.write("agent.yaml", &text)
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_secretsync"))
            .args(args)
            .env("SECRETSYNC_CONFIG", self.path("agent.yaml"))
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .env("RUST_LOG", "debug")
            .output()
            .unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains(CANARY) && !run.stderr.contains(CANARY),
            "canary value leaked in output of {args:?}"
        );
        run
    }

    fn value(&self, name: &str) -> Option<String> {
        self.rt.block_on(async {
            self.client
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .ok()
                .and_then(|o| o.secret_string)
        })
    }

    fn tags(&self, name: &str) -> BTreeMap<String, String> {
        self.rt.block_on(async {
            let d = self
                .client
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap();
            d.tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }

    fn pending_deletion(&self, name: &str) -> bool {
        self.rt.block_on(async {
            self.client
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap()
                .deleted_date
                .is_some()
        })
    }

    fn versions(&self, name: &str) -> usize {
        self.rt.block_on(async {
            self.client
                .list_secret_version_ids()
                .secret_id(name)
                .include_deprecated(true)
                .send()
                .await
                .unwrap()
                .versions()
                .len()
        })
    }

    fn create_foreign(&self, name: &str, value: &str, tags: &[(&str, &str)]) {
        self.rt.block_on(async {
            let mut req = self.client.create_secret().name(name).secret_string(value);
            for (k, v) in tags {
                req = req.tags(Tag::builder().key(*k).value(*v).build());
            }
            req.send().await.unwrap();
        });
    }
}

fn one_to_one(env: &Env, extra: &str) -> PathBuf {
    let file = env.path("app/prod.env");
    env.config(&format!(
        "  - name: app\n    source:\n      files: [{}]\n      environment: prod\n    destination:\n      key_schema: \"{{{{environment}}}}/app/{{{{secretKey}}}}\"\n      tags: {{team: payments}}\n{extra}",
        file.display()
    ))
}

#[test]
fn create_then_noop_then_update_then_delete() {
    let env = Env::new();
    env.write(
        "app/prod.env",
        &format!("DB_URL=postgres://db\nAPI_KEY={CANARY}\nOLD=1\nKEEP=1\n"),
    );
    one_to_one(&env, "");

    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["syncs"][0]["counts"]["create"], 4);
    assert_eq!(j["syncs"][0]["sync_status"], "SYNCED");
    assert_eq!(
        env.value("prod/app/DB_URL").as_deref(),
        Some("postgres://db")
    );
    assert_eq!(env.value("prod/app/API_KEY").as_deref(), Some(CANARY));
    let tags = env.tags("prod/app/DB_URL");
    assert_eq!(tags["secretsync:agent"], "test-agent");
    assert_eq!(tags["secretsync:sync"], "app");
    assert_eq!(tags["team"], "payments");
    assert_eq!(env.proxy.count("CreateSecret"), 4);

    // Unchanged files: zero write calls.
    env.proxy.reset_counts();
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.proxy.writes(), 0, "calls: {:?}", env.proxy.calls());
    assert_eq!(run.json()["syncs"][0]["counts"]["unchanged"], 4);

    // One changed key: exactly one PutSecretValue.
    env.write(
        "app/prod.env",
        &format!("DB_URL=postgres://db2\nAPI_KEY={CANARY}\nOLD=1\nKEEP=1\n"),
    );
    env.proxy.reset_counts();
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(env.proxy.writes(), 1, "calls: {:?}", env.proxy.calls());
    assert_eq!(env.proxy.count("PutSecretValue"), 1);
    assert_eq!(
        env.value("prod/app/DB_URL").as_deref(),
        Some("postgres://db2")
    );

    // A removed key is scheduled for deletion (1 of 4: under the guard).
    env.write(
        "app/prod.env",
        &format!("DB_URL=postgres://db2\nAPI_KEY={CANARY}\nKEEP=1\n"),
    );
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(env.pending_deletion("prod/app/OLD"));
    let secrets = run.json()["syncs"][0]["secrets"].clone();
    let old = secrets
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "prod/app/OLD")
        .unwrap()
        .clone();
    assert_eq!(old["state"], "DELETED");

    // The key comes back: restored and updated.
    env.write(
        "app/prod.env",
        &format!("DB_URL=postgres://db2\nAPI_KEY={CANARY}\nKEEP=1\nOLD=2\n"),
    );
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!env.pending_deletion("prod/app/OLD"));
    assert_eq!(env.value("prod/app/OLD").as_deref(), Some("2"));
    assert_eq!(run.json()["syncs"][0]["counts"]["restore"], 1);
}

#[test]
fn plan_shows_actions_without_values_and_writes_nothing() {
    let env = Env::new();
    env.write("app/prod.env", &format!("A={CANARY}\nB=2\n"));
    one_to_one(&env, "");
    let run = env.run(&["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["syncs"][0]["actions"][0]["action"], "create");
    assert_eq!(j["syncs"][0]["actions"][0]["name"], "prod/app/A");
    assert_eq!(j["syncs"][0]["actions"][0]["reason"], "not in AWS");
    assert_eq!(env.proxy.writes(), 0);
    let run = env.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 4, "{}", run.stdout);
    assert!(run.stdout.contains("prod/app/A"));
    env.run(&["sync"]);
    assert_eq!(env.run(&["plan", "--detailed-exitcode"]).code, 0);
}

#[test]
fn unowned_secret_is_a_conflict_unless_adopted() {
    let env = Env::new();
    env.create_foreign("prod/app/A", "theirs", &[("owner", "bob")]);
    env.create_foreign(
        "prod/app/B",
        "other-agent",
        &[("secretsync:agent", "web-99"), ("secretsync:sync", "app")],
    );
    env.write("app/prod.env", "A=ours\nB=ours\nC=ours\n");
    one_to_one(&env, "");
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1, "conflicts must fail the sync: {}", run.stdout);
    assert_eq!(env.value("prod/app/A").as_deref(), Some("theirs"));
    assert_eq!(env.value("prod/app/B").as_deref(), Some("other-agent"));
    assert_eq!(env.value("prod/app/C").as_deref(), Some("ours"));
    let j = run.json();
    assert_eq!(j["syncs"][0]["counts"]["conflict"], 2);
    assert_eq!(j["syncs"][0]["sync_status"], "FAILED");

    // adopt_existing takes over the untagged one only.
    one_to_one(&env, "      adopt_existing: true\n");
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1);
    assert_eq!(env.value("prod/app/A").as_deref(), Some("ours"));
    assert_eq!(env.tags("prod/app/A")["secretsync:agent"], "test-agent");
    assert_eq!(env.tags("prod/app/A")["owner"], "bob", "others' tags stay");
    assert_eq!(env.value("prod/app/B").as_deref(), Some("other-agent"));
}

#[test]
fn deletion_guard_and_allow_deletes() {
    let env = Env::new();
    env.write("app/prod.env", "A=1\nB=1\nC=1\nD=1\n");
    one_to_one(&env, "");
    assert_eq!(env.run(&["sync"]).code, 0);
    env.write("app/prod.env", "A=1\n");
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1);
    assert!(
        run.json()["syncs"][0]["last_sync_message"]
            .as_str()
            .unwrap()
            .contains("deletion guard")
    );
    for k in ["B", "C", "D"] {
        assert!(!env.pending_deletion(&format!("prod/app/{k}")));
    }
    let run = env.run(&["sync", "--allow-deletes"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    for k in ["B", "C", "D"] {
        assert!(env.pending_deletion(&format!("prod/app/{k}")));
    }
}

#[test]
fn missing_or_broken_source_deletes_nothing() {
    let env = Env::new();
    env.write("app/prod.env", "A=1\nB=1\n");
    one_to_one(&env, "");
    assert_eq!(env.run(&["sync"]).code, 0);
    env.write("app/prod.env", &format!("A=1\nB=\"{CANARY}\n"));
    let run = env.run(&["sync", "--json", "--allow-deletes"]);
    assert_eq!(run.code, 1);
    let file = &run.json()["syncs"][0]["files"][0];
    assert_eq!(file["status"], "error");
    assert!(
        file["error"].as_str().unwrap().contains("prod.env:2:"),
        "{file}"
    );
    assert!(!env.pending_deletion("prod/app/A"));
    std::fs::remove_file(env.path("app/prod.env")).unwrap();
    let run = env.run(&["sync", "--allow-deletes"]);
    assert_eq!(run.code, 1);
    assert!(!env.pending_deletion("prod/app/A") && !env.pending_deletion("prod/app/B"));
}

#[test]
fn many_to_one_yaml_with_metadata_tags_and_semantic_compare() {
    let env = Env::new();
    env.write(
        "app/db.yaml",
        &format!("PORT: 0080\nPASSWORD:\n  value: {CANARY}\n  metadata: {{owner: alice}}\n"),
    );
    env.config(&format!(
        "  - name: db\n    source:\n      files: [{}]\n    destination:\n      mapping: many-to-one\n      secret_name: \"{{{{syncName}}}}/config\"\n      sync_metadata_as_tags: true\n",
        env.path("app/db.yaml").display()
    ));
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&env.value("db/config").unwrap()).unwrap();
    assert_eq!(v["PORT"], "0080");
    assert_eq!(v["PASSWORD"], CANARY);
    assert_eq!(env.tags("db/config")["owner"], "alice");
    // Someone reformats the JSON in AWS: same content, no write.
    env.rt.block_on(async {
        let pretty = format!("{{\n  \"PASSWORD\": \"{CANARY}\",\n  \"PORT\": \"0080\"\n}}");
        env.client
            .put_secret_value()
            .secret_id("db/config")
            .secret_string(pretty)
            .send()
            .await
            .unwrap();
    });
    env.proxy.reset_counts();
    assert_eq!(env.run(&["sync"]).code, 0);
    assert_eq!(env.proxy.writes(), 0, "{:?}", env.proxy.calls());
}

#[test]
fn oversize_value_is_error_and_others_sync() {
    let env = Env::new();
    env.write(
        "app/prod.env",
        &format!("BIG={}\nOK=1\n", "x".repeat(70_000)),
    );
    one_to_one(&env, "");
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1);
    assert_eq!(env.value("prod/app/OK").as_deref(), Some("1"));
    assert!(env.value("prod/app/BIG").is_none());
    assert_eq!(
        env.proxy.count("CreateSecret"),
        1,
        "no call for the oversize value"
    );
    let j = run.json();
    let big = j["syncs"][0]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "BIG")
        .unwrap()
        .clone();
    assert_eq!(big["state"], "ERROR");
    assert!(big["message"].as_str().unwrap().contains("65536"));
}

#[test]
fn throttling_is_retried_without_duplicate_versions() {
    let env = Env::new();
    let body: String = (0..30).map(|i| format!("K{i}=v{i}\n")).collect();
    env.write("app/prod.env", &body);
    one_to_one(&env, "");
    env.proxy.inject(Fault::Throttle {
        op: None,
        every_nth: 3,
    });
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    env.proxy.clear_faults();
    for i in 0..30 {
        assert_eq!(
            env.value(&format!("prod/app/K{i}")).as_deref(),
            Some(format!("v{i}").as_str())
        );
        assert_eq!(env.versions(&format!("prod/app/K{i}")), 1);
    }
}

#[test]
fn reading_1000_owned_secrets_is_cheap() {
    let env = Env::new();
    let body: String = (0..1000).map(|i| format!("K{i:04}=v{i}\n")).collect();
    env.write("app/prod.env", &body);
    one_to_one(&env, "");
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    env.proxy.reset_counts();
    let run = env.run(&["plan", "--json"]);
    assert_eq!(run.code, 0);
    assert_eq!(run.json()["syncs"][0]["counts"]["unchanged"], 1000);
    let list = env.proxy.count("ListSecrets");
    let batch = env.proxy.count("BatchGetSecretValue");
    assert!(list <= 10, "ListSecrets calls: {list}");
    assert!(batch <= 50, "BatchGetSecretValue calls: {batch}");
    assert_eq!(
        env.proxy.count("GetSecretValue") + env.proxy.count("DescribeSecret"),
        0
    );
}

#[test]
fn invalid_config_exits_2_with_positions() {
    let env = Env::new();
    env.config(concat!(
        "  - name: Bad_Name\n    source:\n      files: [/x.env]\n",
        "  - name: two\n    source:\n      files: [/y.env]\n    unknown: 1\n",
    ));
    let run = env.run(&["check", "--offline"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert!(
        run.stderr.lines().count() >= 2,
        "all errors at once: {}",
        run.stderr
    );
    assert!(run.stderr.contains("agent.yaml:"), "{}", run.stderr);
    assert_eq!(env.run(&["plan", "--sync", "nope"]).code, 2);

    // One sync with an unknown key and a bad slug: both lines, each at its
    // own position (the sync starts on line 11 of the generated config).
    env.config("  - name: Bad_Name\n    source:\n      files: [/x.env]\n    unknown: 1\n");
    let run = env.run(&["check", "--offline"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    for line in [
        "agent.yaml:11:11: sync name contains 'B'",
        "agent.yaml:14:5: unknown key `unknown`, expected one of name,",
    ] {
        assert!(
            run.stderr.lines().any(|l| l.contains(line)),
            "missing {line:?} in:\n{}",
            run.stderr
        );
    }

    // A secret pasted into keys where it does not belong: `check` points
    // at each one and quotes none (`run` fails the test on the canary).
    env.config(&format!(
        "  - name: a\n    source:\n      files: [/x.env]\n      format: \"{CANARY}\"\n    \
         destination:\n      region: \"{CANARY}\"\n      key_schema: \"{CANARY} {{{{secretKey}}}}\"\n      \
         role_arn: \"{CANARY}\"\n    options:\n      initial_sync: \"{CANARY}\"\n"
    ));
    let run = env.run(&["check", "--offline"]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    assert_eq!(run.stderr.lines().count(), 5, "{}", run.stderr);
}

#[test]
fn check_probes_aws() {
    let env = Env::new();
    env.write("app/prod.env", "A=1\n");
    one_to_one(&env, "");
    let run = env.run(&["check"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("AWS reachable"));
    assert_eq!(env.proxy.writes(), 0);
    env.proxy.inject(Fault::Outage);
    let run = env.run(&["check"]);
    assert_eq!(run.code, 3, "{}", run.stdout);
}

#[test]
fn import_modes_bring_aws_values_into_the_file() {
    let env = Env::new();
    let owner = [
        ("secretsync:agent", "test-agent"),
        ("secretsync:sync", "app"),
    ];
    env.create_foreign("prod/app/FROM_AWS", CANARY, &owner);
    env.create_foreign("prod/app/BOTH", "aws-side", &owner);
    let file = env.write("app/prod.env", "# keep me\nBOTH=local-side\n");
    one_to_one(
        &env,
        "    options:\n      initial_sync: import-prioritize-source\n",
    );
    let run = env.run(&["plan", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let actions = run.json()["syncs"][0]["actions"].clone();
    assert!(
        actions
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "import" && a["key"] == "FROM_AWS"),
        "{actions}"
    );
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["syncs"][0]["import_status"], "SYNCED");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# keep me\nBOTH=local-side\n"),
        "file kept its lines"
    );
    assert!(
        text.contains(&format!("FROM_AWS={CANARY}")),
        "imported key appended"
    );
    assert_eq!(
        env.value("prod/app/BOTH").as_deref(),
        Some("local-side"),
        "source wins"
    );
    // A second sync does not import again (initial sync remembered).
    env.rt.block_on(async {
        env.client
            .put_secret_value()
            .secret_id("prod/app/FROM_AWS")
            .secret_string("changed")
            .send()
            .await
            .unwrap();
    });
    assert_eq!(env.run(&["sync"]).code, 0);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains(&format!("FROM_AWS={CANARY}"))
    );
    assert_eq!(
        env.value("prod/app/FROM_AWS").as_deref(),
        Some(CANARY),
        "files rule after the initial sync"
    );
}

#[test]
fn import_prioritize_destination_many_to_one_yaml() {
    let env = Env::new();
    let owner = [
        ("secretsync:agent", "test-agent"),
        ("secretsync:sync", "db"),
    ];
    env.create_foreign(
        "db/config",
        &format!(r#"{{"PASSWORD":"{CANARY}","PORT":"5432"}}"#),
        &owner,
    );
    let file = env.write(
        "app/db.yaml",
        "# database\nPORT: '0080'  # local port\nHOST: db.internal\n",
    );
    env.config(&format!(
        "  - name: db\n    source:\n      files: [{}]\n    destination:\n      mapping: many-to-one\n      secret_name: \"{{{{syncName}}}}/config\"\n    options:\n      initial_sync: import-prioritize-destination\n",
        file.display()
    ));
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(j["syncs"][0]["import_status"], "SYNCED");
    assert_eq!(
        j["syncs"][0]["last_import_message"],
        "imported 2 keys, 1 conflict(s) resolved in favour of AWS"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("# database\n"),
        "comments kept: {}",
        text.len()
    );
    assert!(text.contains("HOST: db.internal\n"), "untouched line kept");
    let v: Value = serde_json::from_str(&env.value("db/config").unwrap()).unwrap();
    assert_eq!(v["PORT"], "5432", "AWS won the conflict");
    assert_eq!(v["PASSWORD"], CANARY);
    assert_eq!(v["HOST"], "db.internal", "local-only key pushed");
}

#[test]
fn empty_values_are_skipped_and_never_block_the_others() {
    let env = Env::new();
    // SENTRY_DSN existed with a value before the file emptied it.
    env.write("app/prod.env", "SENTRY_DSN=dsn-1\nOK=1\n");
    one_to_one(&env, "");
    assert_eq!(env.run(&["sync"]).code, 0);
    env.write("app/prod.env", "SENTRY_DSN=\nEMPTY_QUOTED=\"\"\nOK=2\n");

    let plan = env.run(&["plan", "--json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let j = plan.json();
    let skips: Vec<&str> = j["syncs"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "skip")
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(skips, ["EMPTY_QUOTED", "SENTRY_DSN"]);
    assert_eq!(j["syncs"][0]["counts"]["skip"], 2);

    let puts_before = env.proxy.count("PutSecretValue");
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let j = run.json();
    assert_eq!(j["syncs"][0]["sync_status"], "SYNCED");
    let state = |key: &str| {
        j["syncs"][0]["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))["state"]
            .clone()
    };
    assert_eq!(state("SENTRY_DSN"), "SKIPPED");
    assert_eq!(state("EMPTY_QUOTED"), "SKIPPED");
    assert_eq!(state("OK"), "SYNCED");
    // The other key synced; the emptied one kept its value and was not
    // deleted; nothing was created for the empty one.
    assert_eq!(env.value("prod/app/OK").as_deref(), Some("2"));
    assert_eq!(env.value("prod/app/SENTRY_DSN").as_deref(), Some("dsn-1"));
    assert!(!env.pending_deletion("prod/app/SENTRY_DSN"));
    assert!(env.value("prod/app/EMPTY_QUOTED").is_none());
    assert_eq!(env.proxy.count("PutSecretValue") - puts_before, 1);
    assert_eq!(env.proxy.count("DeleteSecret"), 0);
    // A second pass is a no-op that stays SYNCED.
    let again = env.run(&["sync"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

#[test]
fn an_owned_secret_without_a_value_never_blocks_the_others() {
    let env = Env::new();
    env.write("app/prod.env", "A=1\nB=2\nC=3\n");
    one_to_one(&env, "");
    // Someone created B with our ownership tags but no value (no version).
    env.rt.block_on(async {
        env.client
            .create_secret()
            .name("prod/app/B")
            .tags(
                Tag::builder()
                    .key("secretsync:agent")
                    .value("test-agent")
                    .build(),
            )
            .tags(Tag::builder().key("secretsync:sync").value("app").build())
            .send()
            .await
            .unwrap();
    });
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(env.value("prod/app/A").as_deref(), Some("1"));
    assert_eq!(env.value("prod/app/B").as_deref(), Some("2"));
    assert_eq!(env.value("prod/app/C").as_deref(), Some("3"));
    assert_eq!(env.run(&["sync"]).code, 0);
}

#[test]
fn two_installs_sharing_an_identity_never_delete_each_other() {
    let env = Env::new();
    // Install 1: the usual config and state dir, keys K0 and K1.
    env.write("app/prod.env", "K0=a\nK1=b\n");
    one_to_one(&env, "");
    assert_eq!(env.run(&["sync"]).code, 0);

    // Install 2: a cloned host, same agent.id and sync name, its own state
    // dir and file (Z0..Z9).
    let zs: String = (0..10).map(|i| format!("Z{i}=z{i}\n")).collect();
    let file2 = env.write("host2/prod.env", &zs);
    let cfg1 = std::fs::read_to_string(env.path("agent.yaml")).unwrap();
    let cfg2 = cfg1
        .replace(
            &env.path("state").display().to_string(),
            &env.path("host2/state").display().to_string(),
        )
        .replace(
            &env.path("app/prod.env").display().to_string(),
            &file2.display().to_string(),
        );
    let cfg2 = env.write("host2/agent.yaml", &cfg2);
    let cfg2 = cfg2.to_str().unwrap();
    for _ in 0..2 {
        let run = env.run(&["sync", "--config", cfg2, "--json"]);
        assert_eq!(run.code, 1, "a collision is a CONFLICT: {}", run.stderr);
        let j = run.json();
        let msgs: Vec<String> = j["syncs"][0]["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "CONFLICT")
            .map(|s| s["message"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            msgs.iter().all(|m| m.contains("identity collision")),
            "{msgs:?}"
        );
    }
    assert_eq!(env.proxy.count("DeleteSecret"), 0);
    assert_eq!(env.value("prod/app/K0").as_deref(), Some("a"));
    assert!(!env.pending_deletion("prod/app/K1"));
    // And install 1 leaves install 2's secrets alone in turn.
    let run = env.run(&["sync"]);
    assert_eq!(run.code, 1);
    assert_eq!(env.proxy.count("DeleteSecret"), 0);
    assert_eq!(env.value("prod/app/Z3").as_deref(), Some("z3"));

    // Taking over on purpose works.
    let run = env.run(&["sync", "--config", cfg2, "--take-over"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(env.pending_deletion("prod/app/K0"));
}

#[test]
fn invalid_keys_are_reported_with_their_position_in_both_mappings() {
    let env = Env::new();
    let file = env.write("app/prod.env", "OK=1\n1KEY=x\n");
    let json_file = env.write("app/json.env", "A=1\n  9BAD=y\n");
    env.config(&format!(
        "  - name: app\n    source: {{files: [{}], environment: prod}}\n    destination: {{key_schema: \"{{{{environment}}}}/app/{{{{secretKey}}}}\"}}\n  - name: blob\n    source: {{files: [{}]}}\n    destination: {{mapping: many-to-one, secret_name: prod/blob}}\n",
        file.display(),
        json_file.display()
    ));
    let run = env.run(&["sync", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let j = run.json();
    let message = |sync: usize, key: &str| {
        j["syncs"][sync]["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap_or_else(|| panic!("no {key}: {j}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let app = j["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["name"] == "app")
        .unwrap();
    let blob = 1 - app;
    assert!(
        message(app, "1KEY").starts_with(&format!("{}:2:1: ", file.display())),
        "{}",
        message(app, "1KEY")
    );
    assert!(
        message(blob, "9BAD").starts_with(&format!("{}:2:3: ", json_file.display())),
        "{}",
        message(blob, "9BAD")
    );
    // The valid one-to-one key synced; the JSON secret was not written
    // without its bad key.
    assert_eq!(env.value("prod/app/OK").as_deref(), Some("1"));
    assert!(env.value("prod/blob").is_none());
}
