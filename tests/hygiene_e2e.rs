//! Secret hygiene end to end (SPEC §5 rule 9): canary values go through
//! every path that touches a value (create, update, import write-back, an
//! AWS error that quotes the value, a parse error on the value's line,
//! `--json` and human outputs, agent logs in text and JSON format) and
//! must appear in no output, log, socket reply or file the agent writes
//! outside the source files. Also: the import write-back keeps the file's
//! mode (0600) and owner, `state.json` is 0600, and the state dir holds no
//! value-derived data (no hashes of values; the idempotency-token key is
//! random, not derived from anything).
//!
//! Journald: the journald layer sends the same event fields (message,
//! `error`, `secret`, span fields) as the JSON format prints, so the JSON
//! log stands in for what the journal would receive.
//!
//! Panics: no panic is reachable from the binary's inputs; the panic hook
//! (which prints where, never a formatted message) is tested in
//! `logging::tests::panic_hook_prints_location_not_message`.

mod agent_support;
mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use agent_support::{
    Agent, AgentOpts, CANARY, DEADLINE, DEBOUNCE, Out, World, eventually, sync_entry,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Fault, op};

/// The part every canary value shares; a quote of any 8 characters of a
/// value would contain most of it, so searching for it also finds partial
/// echoes.
const MARK: &str = "3b91e7";

fn settle() -> std::time::Duration {
    DEBOUNCE * 3
}

/// Every value the test uses, for the hash check.
fn values() -> Vec<String> {
    let mut v = vec![CANARY.to_string()];
    for suffix in ["-v2", "-v3", "-v4", "-v5", "-imported"] {
        v.push(format!("{CANARY}{suffix}"));
    }
    v
}

/// Asserts `text` holds no canary and no piece of one.
fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(MARK),
        "a canary (or part of one) leaked into {what}"
    );
    for v in values() {
        let hex: String = Sha256::digest(v.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!text.contains(&hex), "a SHA-256 of a value is in {what}");
    }
}

fn assert_out_clean(what: &str, out: &Out) {
    assert_clean(&format!("stdout of {what}"), &out.stdout);
    assert_clean(&format!("stderr of {what}"), &out.stderr);
}

/// Every file under the agent's directory (config, state, logs): no canary,
/// no value hash.
fn assert_agent_dir_clean(w: &World) {
    let mut stack = vec![w.agent_path("")];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                assert_clean(
                    &entry.path().display().to_string(),
                    &String::from_utf8_lossy(&bytes),
                );
                seen += 1;
            }
        }
    }
    assert!(
        seen >= 3,
        "expected config, state and logs; found {seen} files"
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// The state dir: only `state.json` and its backup (0600), whose fields are the known
/// ones, and `install-id` (0600, 16 random hex characters); the token key is 32 random
/// bytes in hex, nothing value-derived.
fn check_state_dir(w: &World) {
    let dir = w.agent_path("state");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["install-id", "state.json", "state.json.bak"],
        "unexpected files in the state dir"
    );
    let id_file = dir.join("install-id");
    assert_eq!(mode(&id_file), 0o600, "install-id mode");
    let id = std::fs::read_to_string(&id_file).unwrap();
    assert!(
        id.len() == 17
            && id.ends_with('\n')
            && id.trim_end().bytes().all(|b| b.is_ascii_hexdigit()),
        "install-id is 16 hex characters"
    );
    for name in names.iter().filter(|n| n.starts_with("state.json")) {
        check_state_file(&dir.join(name));
    }
}

/// One state file: 0600, only the known fields, no values.
fn check_state_file(path: &std::path::Path) {
    assert_eq!(mode(path), 0o600, "{} mode", path.display());
    let state: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut keys: Vec<&String> = state.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["syncs", "token_key", "version"], "{state}");
    let key = state["token_key"].as_str().unwrap();
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "token key is 32 bytes of hex"
    );
    for (name, sync) in state["syncs"].as_object().unwrap() {
        let mut fields: Vec<&String> = sync.as_object().unwrap().keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "guard_window",
                "initial_sync_done",
                "managed_replicas",
                "managed_tags"
            ],
            "sync {name}: {sync}"
        );
        // guard_window: deletion-guard marks, counts and times only.
        for mark in sync["guard_window"].as_array().unwrap() {
            assert!(
                mark.as_object().unwrap().values().all(Value::is_u64),
                "sync {name}: {mark}"
            );
        }
        // managed_tags: secret name -> tag keys; managed_replicas: secret
        // name -> regions; no values anywhere.
        for field in ["managed_tags", "managed_replicas"] {
            for list in sync[field].as_object().unwrap().values() {
                assert!(list.as_array().unwrap().iter().all(Value::is_string));
            }
        }
    }
}

/// Status through the socket and the CLI (JSON and human), each checked.
fn status_outputs(w: &World) -> Value {
    let sock = w.socket();
    let sock = sock.to_str().unwrap();
    let human = w.cli(&["status", "--socket", sock]);
    assert_eq!(human.code, 0, "{human:?}");
    assert_out_clean("status", &human);
    let json = w.cli(&["status", "--json", "--socket", sock]);
    assert_out_clean("status --json", &json);
    let st = w.status();
    assert_clean("the status reply", &st.to_string());
    st
}

fn secret_entry(st: &Value, name: &str) -> Value {
    st["syncs"][0]["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn canary_values_never_leave_the_source_files() {
    let w = World::new();
    // Import write-back: an owned secret the file lacks, imported on the
    // first pass (import-prioritize-destination).
    let imported = format!("{CANARY}-imported");
    w.create_foreign(
        "app/IMPORTED",
        &imported,
        &[
            ("secretsync:agent", "e2e-agent"),
            ("secretsync:sync", "app"),
        ],
    );
    let file = w.write("app/app.env", &format!("# app\nA=1\nTOKEN={CANARY}\n"));
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let owner = std::fs::metadata(&file).unwrap().uid();
    let cfg = w.config(
        &AgentOpts::default(),
        &[sync_entry(
            "app",
            &[&file],
            "    options:\n      initial_sync: import-prioritize-destination\n",
        )],
    );
    let cfg = cfg.to_str().unwrap().to_string();

    // 1. Create + import (text logs at debug level).
    let agent = Agent::start(&w);
    w.wait_synced("app");
    assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains(&format!("IMPORTED={imported}")),
        "import written"
    );
    assert_eq!(mode(&file), 0o600, "import write-back keeps the mode");
    assert_eq!(
        std::fs::metadata(&file).unwrap().uid(),
        owner,
        "and the owner"
    );
    check_state_dir(&w);

    // 2. Update.
    let body = |token: &str| format!("# app\nA=1\nTOKEN={token}\nIMPORTED={imported}\n");
    std::fs::write(&file, body(&format!("{CANARY}-v2"))).unwrap();
    w.wait_value("app/TOKEN", &format!("{CANARY}-v2"));

    // 3. AWS rejects the next write with a message quoting part of the
    // value, the way AWS truncates quoted input.
    let v3 = format!("{CANARY}-v3");
    w.proxy.inject(Fault::AwsError {
        op: op("PutSecretValue"),
        status: 400,
        code: "ValidationException".into(),
        message: format!(
            "1 validation error detected: Value '{}...' at 'secretString' failed to satisfy constraint",
            &v3[..24]
        ),
        count: 1,
    });
    std::fs::write(&file, body(&v3)).unwrap();
    let s = eventually(
        "app/TOKEN in ERROR after the rejected write",
        DEADLINE,
        || {
            let st = w.status();
            let e = secret_entry(&st, "app/TOKEN");
            (e["state"] == "ERROR").then_some(e)
        },
        || secret_entry(&w.status(), "app/TOKEN")["state"].to_string(),
    );
    let msg = s["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("ValidationException") && msg.contains("withheld"),
        "the AWS error is reported without its message: {msg}"
    );
    status_outputs(&w);
    let sock = w.socket();
    let out = w.cli(&["resync", "--socket", sock.to_str().unwrap(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_out_clean("resync --json", &out);
    w.wait_value("app/TOKEN", &v3);

    // 4. A parse error on the value's line: status shows file:line only.
    std::fs::write(&file, format!("# app\nA=1\nTOKEN=\"{CANARY}-v4\n")).unwrap();
    eventually(
        "the parse error in status",
        DEADLINE,
        || {
            let st = w.status();
            let f = &st["syncs"][0]["files"][0];
            (f["status"] == "error"
                && f["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("app.env:3:")))
            .then_some(())
        },
        || w.status()["syncs"][0]["files"].to_string(),
    );
    status_outputs(&w);
    w.wait_quiet(settle());

    // 5. One-shot commands, JSON and human, while the file is broken and
    // after it is fixed.
    for args in [
        vec!["plan", "--json", "--config", &cfg],
        vec!["plan", "--config", &cfg],
        vec!["sync", "--json", "--config", &cfg],
        vec!["check", "--config", &cfg],
    ] {
        let out = w.cli(&args);
        assert_out_clean(&format!("{args:?}"), &out);
    }
    std::fs::write(&file, body(&format!("{CANARY}-v4"))).unwrap();
    w.wait_value("app/TOKEN", &format!("{CANARY}-v4"));
    for args in [
        vec!["plan", "--json", "--config", &cfg],
        vec!["sync", "--json", "--config", &cfg],
        vec!["sync", "--config", &cfg],
    ] {
        let out = w.cli(&args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert_out_clean(&format!("{args:?}"), &out);
    }
    agent.stop();

    // 6. The same agent with JSON logs at the most verbose level (the
    // SDK's wire-level targets stay capped): an update and an AWS error
    // that quotes the whole value.
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    assert!(yaml.contains("log_format: text"));
    std::fs::write(&cfg, yaml.replace("log_format: text", "log_format: json")).unwrap();
    let mut agent = Agent::spawn_env(&w, &[("RUST_LOG", "trace")]);
    agent.wait_ready(&w);
    w.wait_synced("app");
    let v5 = format!("{CANARY}-v5");
    w.proxy.inject(Fault::AwsError {
        op: op("PutSecretValue"),
        status: 400,
        code: "InvalidParameterException".into(),
        message: format!("The secret value '{v5}' is not valid"),
        count: 1,
    });
    std::fs::write(&file, body(&v5)).unwrap();
    eventually(
        "the rejected write to show",
        DEADLINE,
        || (secret_entry(&w.status(), "app/TOKEN")["state"] == "ERROR").then_some(()),
        || secret_entry(&w.status(), "app/TOKEN").to_string(),
    );
    status_outputs(&w);
    let out = w.cli(&["resync", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    w.wait_value("app/TOKEN", &v5);
    let log = agent.stderr();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "TRACE"),
        "trace-level events were logged"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("InvalidParameterException") && e.contains("withheld"))),
        "the JSON log reports the AWS error (without its message)"
    );
    agent.stop();

    // Everything the agent wrote: logs of both runs, state, config.
    assert_agent_dir_clean(&w);
    check_state_dir(&w);
    assert_eq!(mode(&file), 0o600);
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), owner);
}
