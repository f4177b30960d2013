//! KMS against moto: `check` judges the configured key with `DescribeKey`
//! (usable, disabled, missing), and a changed `kms_key_id` re-encrypts the
//! owned secrets with one `UpdateSecret` each, values untouched.

mod agent_support;
mod support;

use agent_support::{AgentOpts, CANARY, World, sync_entry};

fn kms_client(w: &World) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::Config::builder()
        .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
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
    let out = w.cli(&["sync", "--json", "--config", &config]);
    assert_eq!(out.code, 0, "{out:?}");
    let versions_before: Vec<usize> = ["app/A", "app/B", "app/TOKEN"]
        .iter()
        .map(|n| w.versions(n))
        .collect();

    let config = config_with_key(&w, &file, "alias/new");
    let out = w.cli(&["plan", "--json", "--config", &config]);
    let plan = out.json();
    assert_eq!(plan["syncs"][0]["counts"]["kms"], 3, "{plan}");
    w.proxy.reset_counts();
    let out = w.cli(&["sync", "--json", "--config", &config]);
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
    let out = w.cli(&["sync", "--json", "--config", &config]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
}
