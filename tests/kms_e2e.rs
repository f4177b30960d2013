//! KMS against moto: `check` judges the configured key with `DescribeKey`
//! (usable, disabled, missing), and a changed `kms_key_id` re-encrypts the
//! owned secrets with one `UpdateSecret` each, values untouched. Keys
//! compare by identity (the AWS-managed key that DescribeSecret omits, an
//! alias against the key ARN), falling back to spellings without
//! `kms:DescribeKey`. Secrets with AWS rotation enabled are left alone.

mod agent_support;
mod support;

use agent_support::{AgentOpts, CANARY, World, sync_entry};
use support::{Fault, op};

fn kms_client(w: &World) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
        .http_client(support::plain_http_client())
        .region(aws_sdk_kms::config::Region::new("us-east-1"))
        .endpoint_url(&w.moto.endpoint)
        .credentials_provider(aws_sdk_kms::config::Credentials::new(
            "AKIDKMS",
            "kms-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

/// Creates a key with `alias`, returns its id.
fn make_key(w: &World, kms: &aws_sdk_kms::Client, alias: &str) -> String {
    w.rt.block_on(async {
        let key = kms.create_key().send().await.expect("create key");
        let id = key.key_metadata().expect("metadata").key_id().to_string();
        kms.create_alias()
            .alias_name(alias)
            .target_key_id(&id)
            .send()
            .await
            .expect("alias");
        id
    })
}

/// KMS through the counting proxy (the agent's KMS client keeps AWS's
/// endpoint unless told otherwise: never the internet from a test).
fn kms_env(w: &World) -> [(&'static str, &str); 1] {
    [("AWS_ENDPOINT_URL_KMS", w.proxy.endpoint.as_str())]
}

fn config_with_key(w: &World, file: &std::path::Path, key: &str) -> String {
    w.config(
        &AgentOpts::default(),
        &[sync_entry(
            "app",
            &[file],
            &format!("      kms_key_id: {key}\n"),
        )],
    )
    .display()
    .to_string()
}

#[test]
fn check_reports_whether_the_kms_key_can_be_used() {
    let w = World::new();
    let kms = kms_client(&w);
    let id = make_key(&w, &kms, "alias/app");
    let file = w.write("app/app.env", "A=1\n");
    let env = [("AWS_ENDPOINT_URL_KMS", w.moto.endpoint.as_str())];

    let config = config_with_key(&w, &file, "alias/app");
    let out = w.cli_env(&["check", "--config", &config], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("sync app: us-east-1: KMS key alias/app usable")
            && out.stdout.contains(&id),
        "{}",
        out.stdout
    );

    w.rt.block_on(kms.disable_key().key_id(&id).send())
        .expect("disable");
    let out = w.cli_env(&["check", "--config", &config], &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("error: KMS key alias/app")
            && out.stdout.contains("is Disabled")
            && out.stdout.contains("cannot encrypt or decrypt"),
        "{}",
        out.stdout
    );

    let config = config_with_key(&w, &file, "alias/typo");
    let out = w.cli_env(&["check", "--config", &config], &env);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .contains("KMS key alias/typo does not exist in us-east-1"),
        "{}",
        out.stdout
    );

    // --offline makes no AWS call at all, KMS included.
    let out = w.cli_env(&["check", "--offline", "--config", &config], &env);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stdout.contains("KMS"), "{}", out.stdout);
}

#[test]
fn a_changed_key_reencrypts_owned_secrets_once_each_without_new_versions() {
    let w = World::new();
    let kms = kms_client(&w);
    make_key(&w, &kms, "alias/old");
    make_key(&w, &kms, "alias/new");
    let file = w.write("app/app.env", &format!("A=1\nB=2\nTOKEN={CANARY}\n"));
    let config = config_with_key(&w, &file, "alias/old");
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    let versions_before: Vec<usize> = ["app/A", "app/B", "app/TOKEN"]
        .iter()
        .map(|n| w.versions(n))
        .collect();

    let config = config_with_key(&w, &file, "alias/new");
    let out = w.cli_env(&["plan", "--json", "--config", &config], &kms_env(&w));
    let plan = out.json();
    assert_eq!(plan["syncs"][0]["counts"]["kms"], 3, "{plan}");
    w.proxy.reset_counts();
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    let report = &out.json()["syncs"][0];
    let kms_actions: Vec<&serde_json::Value> = report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "kms")
        .collect();
    assert_eq!(kms_actions.len(), 3, "{report}");
    assert!(kms_actions.iter().all(|a| a["outcome"] == "ok"), "{report}");
    assert_eq!(w.proxy.count("UpdateSecret"), 3, "{:?}", w.proxy.calls());
    assert_eq!(
        w.proxy.writes(),
        3,
        "only the re-encryption: {:?}",
        w.proxy.calls()
    );
    let versions_after: Vec<usize> = ["app/A", "app/B", "app/TOKEN"]
        .iter()
        .map(|n| w.versions(n))
        .collect();
    assert_eq!(versions_before, versions_after, "no new versions");
    assert_eq!(w.value("app/A").as_deref(), Some("1"));
    let described =
        w.rt.block_on(w.client.describe_secret().secret_id("app/A").send())
            .expect("describe");
    assert_eq!(described.kms_key_id(), Some("alias/new"));

    // In step afterwards: no more calls.
    w.proxy.reset_counts();
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
}

#[test]
fn the_aws_managed_key_named_explicitly_is_not_rewritten_on_every_pass() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=1\nTOKEN={CANARY}\n"));
    let config = config_with_key(&w, &file, "alias/aws/secretsmanager");
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.count("CreateSecret"), 2, "{:?}", w.proxy.calls());
    let described =
        w.rt.block_on(w.client.describe_secret().secret_id("app/A").send())
            .expect("describe");
    assert_eq!(described.kms_key_id(), None, "omitted, as AWS does");

    for _ in 0..2 {
        w.proxy.reset_counts();
        let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(out.json()["syncs"][0]["counts"]["kms"], 0, "{}", out.stdout);
        assert_eq!(w.proxy.count("UpdateSecret"), 0, "{:?}", w.proxy.calls());
        assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
        assert_eq!(
            w.proxy.count("DescribeKey"),
            0,
            "an omitted key is the managed key: no KMS call"
        );
    }
}

#[test]
fn an_alias_and_the_key_arn_of_one_key_are_equal() {
    let w = World::new();
    let kms = kms_client(&w);
    let id = make_key(&w, &kms, "alias/app");
    let file = w.write("app/app.env", &format!("A=1\nB=2\nTOKEN={CANARY}\n"));
    let config = config_with_key(&w, &file, "alias/app");
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");

    // The same key named by its ARN: nothing to re-encrypt, one DescribeKey.
    let arn = format!("arn:aws:kms:us-east-1:123456789012:key/{id}");
    let config = config_with_key(&w, &file, &arn);
    w.proxy.reset_counts();
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["syncs"][0]["counts"]["kms"], 0, "{}", out.stdout);
    assert_eq!(w.proxy.count("UpdateSecret"), 0, "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.count("DescribeKey"), 1, "resolved once per store");

    // Without kms:DescribeKey the spellings differ: written once, then the
    // key AWS reports is spelt like the configured one.
    w.proxy.inject(Fault::AwsError {
        op: op("DescribeKey"),
        status: 400,
        code: "AccessDeniedException".into(),
        message: "User is not authorized to perform: kms:DescribeKey".into(),
        count: 1_000,
    });
    w.proxy.reset_counts();
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.count("UpdateSecret"), 3, "{:?}", w.proxy.calls());
    w.proxy.reset_counts();
    let out = w.cli_env(&["sync", "--json", "--config", &config], &kms_env(&w));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
}

#[test]
fn a_secret_with_rotation_enabled_is_a_conflict_and_never_written() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=1\nB=2\nTOKEN={CANARY}\n"));
    let config = w
        .config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")])
        .display()
        .to_string();
    let out = w.cli(&["sync", "--json", "--config", &config]);
    assert_eq!(out.code, 0, "{out:?}");

    // Someone turns on AWS rotation for app/A (managed rotation: no Lambda).
    w.rt.block_on(
        w.client
            .rotate_secret()
            .secret_id("app/A")
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(30)
                    .build(),
            )
            .rotate_immediately(false)
            .send(),
    )
    .expect("rotate");
    let described =
        w.rt.block_on(w.client.describe_secret().secret_id("app/A").send())
            .expect("describe");
    assert_eq!(described.rotation_enabled(), Some(true));
    let versions = w.versions("app/A");

    w.write(
        "app/app.env",
        &format!("A=changed\nB=two\nTOKEN={CANARY}\n"),
    );
    for _ in 0..2 {
        w.proxy.reset_counts();
        let out = w.cli(&["sync", "--json", "--config", &config]);
        assert_eq!(out.code, 1, "a CONFLICT fails the sync: {out:?}");
        let report = &out.json()["syncs"][0];
        let a = report["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "app/A")
            .expect("app/A in the report");
        assert_eq!(a["state"], "CONFLICT", "{report}");
        assert_eq!(a["message"], "rotation enabled: AWS owns this value");
        assert_eq!(report["counts"]["conflict"], 1, "{report}");
        assert_eq!(w.value("app/A").as_deref(), Some("1"), "not reverted");
        assert_eq!(w.versions("app/A"), versions);
        assert_eq!(w.value("app/B").as_deref(), Some("two"), "the others sync");
        w.proxy.reset_counts();
    }

    // Its key leaves the file: retained, never deleted.
    w.write("app/app.env", &format!("B=two\nTOKEN={CANARY}\n"));
    w.proxy.reset_counts();
    let out = w.cli(&["sync", "--json", "--config", &config]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());
    let described =
        w.rt.block_on(w.client.describe_secret().secret_id("app/A").send())
            .expect("describe");
    assert!(described.deleted_date().is_none());
}
