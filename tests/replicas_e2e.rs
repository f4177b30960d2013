//! Replica regions against moto (which implements `AddReplicaRegions`,
//! `ReplicateSecretToRegions`, `RemoveRegionsFromReplication` and
//! `ReplicationStatus` in `DescribeSecret`, and refuses to delete a
//! replicated secret as AWS does): add, swap, leave others' replicas alone,
//! remove before deletion, and status read only on the drift timer.

mod agent_support;
mod support;

use std::time::Duration;

use agent_support::{Agent, AgentOpts, CANARY, DEADLINE, World, eventually, sync_entry};
use serde_json::Value;

/// Replica regions of `name` as moto reports them, sorted.
fn moto_replicas(w: &World, name: &str) -> Vec<String> {
    let out =
        w.rt.block_on(w.client.describe_secret().secret_id(name).send())
            .expect("describe");
    let mut r: Vec<String> = out
        .replication_status()
        .iter()
        .filter_map(|r| r.region().map(String::from))
        .collect();
    r.sort();
    r
}

fn replica_config(w: &World, file: &std::path::Path, regions: &[&str]) -> std::path::PathBuf {
    let list = regions.join(", ");
    w.config(
        &AgentOpts::default(),
        &[sync_entry(
            "app",
            &[file],
            &format!("      replica_regions: [{list}]\n"),
        )],
    )
}

/// `sync --json` for the config; returns the one sync's report.
fn sync(w: &World, extra: &[&str]) -> Value {
    let config = w.config_path();
    let mut args = vec!["sync", "--json", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = w.cli(&args);
    assert_eq!(out.code, 0, "{out:?}");
    out.json()["syncs"][0].clone()
}

fn actions(report: &Value) -> Vec<(String, String, String)> {
    report["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["name"].as_str().unwrap().to_string(),
                a["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn replicas_are_added_swapped_kept_and_removed_before_deletion() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=1\nTOKEN={CANARY}\n"));

    // Create with one replica.
    replica_config(&w, &file, &["eu-west-1"]);
    let r = sync(&w, &[]);
    assert_eq!(r["counts"]["create"], 2, "{r}");
    assert_eq!(moto_replicas(&w, "app/A"), ["eu-west-1"]);

    // A second run describes and finds everything in place; status shows it.
    let r = sync(&w, &[]);
    assert!(actions(&r).is_empty(), "{r}");
    let secret = &r["secrets"][0];
    assert_eq!(secret["replicas"][0]["region"], "eu-west-1", "{r}");
    assert_eq!(secret["replicas"][0]["status"], "InSync", "{r}");

    // Add a region: one ReplicateSecretToRegions per secret, nothing else.
    replica_config(&w, &file, &["eu-west-1", "eu-central-1"]);
    w.proxy.reset_counts();
    let r = sync(&w, &[]);
    let acts = actions(&r);
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert!(
        acts.iter()
            .all(|(k, _, why)| k == "replicate" && why == "add replica region(s) eu-central-1"),
        "{acts:?}"
    );
    assert_eq!(w.proxy.count("ReplicateSecretToRegions"), 2);
    assert_eq!(w.proxy.writes(), 2, "{:?}", w.proxy.calls());
    assert_eq!(moto_replicas(&w, "app/A"), ["eu-central-1", "eu-west-1"]);

    // Drop eu-west-1: removed; someone else's sa-east-1 is left alone.
    w.rt.block_on(
        w.client
            .replicate_secret_to_regions()
            .secret_id("app/A")
            .add_replica_regions(
                aws_sdk_secretsmanager::types::ReplicaRegionType::builder()
                    .region("sa-east-1")
                    .build(),
            )
            .send(),
    )
    .expect("out-of-band replica");
    replica_config(&w, &file, &["eu-central-1"]);
    let r = sync(&w, &[]);
    let acts = actions(&r);
    assert_eq!(acts.len(), 2, "{acts:?}");
    assert!(
        acts.iter().all(|(k, _, why)| k == "replicate"
            && why == "remove replica region(s) eu-west-1 (no longer configured)"),
        "{acts:?}"
    );
    assert_eq!(moto_replicas(&w, "app/A"), ["eu-central-1", "sa-east-1"]);
    assert_eq!(moto_replicas(&w, "app/TOKEN"), ["eu-central-1"]);

    // A key leaves the source: its replicas (all of them) go first, then the
    // secret is scheduled for deletion, which AWS would refuse otherwise.
    std::fs::write(&file, format!("TOKEN={CANARY}\n")).unwrap();
    let r = sync(&w, &["--allow-deletes"]);
    let acts = actions(&r);
    let for_a: Vec<&str> = acts
        .iter()
        .filter(|(_, n, _)| n == "app/A")
        .map(|(k, _, _)| k.as_str())
        .collect();
    assert_eq!(for_a, ["replicate", "delete"], "{acts:?}");
    assert!(
        r["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["outcome"] == "ok"),
        "{r}"
    );
    assert!(w.pending_deletion("app/A"));
    assert!(moto_replicas(&w, "app/A").is_empty());
}

#[test]
fn agent_reads_replication_status_on_the_drift_timer_only() {
    let w = World::new();
    let file = w.write("app/app.env", "A=1\n");
    let entry = sync_entry("app", &[&file], "      replica_regions: [eu-west-1]\n");
    w.config(&AgentOpts::default(), std::slice::from_ref(&entry));
    // No drift timer: after the first pass, edits never describe.
    let agent = Agent::start(&w);
    let st = w.wait_synced("app");
    assert_eq!(moto_replicas(&w, "app/A"), ["eu-west-1"]);
    assert_eq!(
        st["secrets"][0]["replicas"][0]["status"], "InProgress",
        "after the create, before any describe: {st}"
    );
    w.proxy.reset_counts();
    let tmp = w.write("app/.tmp", "A=2\n");
    std::fs::rename(&tmp, &file).unwrap();
    w.wait_value("app/A", "2");
    w.wait_synced("app");
    assert_eq!(w.proxy.count("DescribeSecret"), 0, "{:?}", w.proxy.calls());
    agent.stop();

    // With a drift timer: the first pass and each drift check describe.
    let opts = AgentOpts {
        reconcile_interval: "1s",
        ..AgentOpts::default()
    };
    w.config(&opts, std::slice::from_ref(&entry));
    w.proxy.reset_counts();
    let agent = Agent::start(&w);
    let st = eventually(
        "replica status InSync from DescribeSecret",
        DEADLINE,
        || {
            let s = w.sync_status("app");
            (s["secrets"][0]["replicas"][0]["status"] == "InSync").then_some(s)
        },
        || w.sync_status("app").to_string(),
    );
    assert_eq!(st["secrets"][0]["replicas"][0]["region"], "eu-west-1");
    eventually(
        "two drift checks",
        Duration::from_secs(8),
        || (w.proxy.count("DescribeSecret") >= 3).then_some(()),
        || format!("{:?}", w.proxy.calls()),
    );
    assert_eq!(w.proxy.count("ReplicateSecretToRegions"), 0);
    agent.stop();
}
