//! Deletion safety end to end (SPEC §5 rules 1, 4, 5): the real agent
//! watching real files against a private moto behind the counting proxy.
//! A source file that is truncated, half written, oversize, removed, or
//! whose directory goes away deletes nothing; a mass removal trips the
//! deletion guard until `resync --allow-deletes`; two agents configured on
//! the same names never overwrite each other; `adopt_existing: false`
//! never touches an untagged secret.
//!
//! Unmounting a directory needs privileges a test should not use; renaming
//! the directory away stands in for it (the agent sees the same thing: the
//! path is gone).

mod agent_support;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_support::{Agent, AgentOpts, CANARY, DEADLINE, DEBOUNCE, World, eventually, sync_entry};
use serde_json::Value;

/// Long enough after the last AWS call that a further pass would have shown up.
fn settle() -> Duration {
    DEBOUNCE * 3
}

const APP: &str = "# app\nA=one\nB=bee\n";
const SOLO: &str = "ONLY=1\n";

fn app_text() -> String {
    format!("{APP}TOKEN={CANARY}\n")
}

/// Every secret of the two syncs of [`hostile_file_states_delete_nothing`].
const NAMES: &[&str] = &["app/A", "app/B", "app/TOKEN", "solo/ONLY"];

/// Waits until the first file of `sync` shows an error containing
/// `fragment` and naming the file; returns the sync's status.
fn wait_file_error(w: &World, sync: &str, file: &Path, fragment: &str) -> Value {
    eventually(
        &format!("a file error '{fragment}' in sync {sync}"),
        DEADLINE,
        || {
            let s = w.sync_status(sync);
            let f = &s["files"][0];
            let error = f["error"].as_str().unwrap_or("");
            (f["status"] == "error"
                && error.contains(fragment)
                && error.starts_with(&file.display().to_string()))
            .then_some(s)
        },
        || w.sync_status(sync)["files"].to_string(),
    )
}

/// Asserts nothing was deleted: no DeleteSecret call, nothing scheduled
/// for deletion, every value as first synced.
fn assert_nothing_deleted(w: &World, what: &str) {
    assert_eq!(
        w.proxy.count("DeleteSecret"),
        0,
        "{what}: DeleteSecret called; calls: {:?}",
        w.proxy.calls()
    );
    for name in NAMES {
        assert!(
            !w.pending_deletion(name),
            "{what}: {name} scheduled for deletion"
        );
    }
    assert_eq!(w.value("app/A").as_deref(), Some("one"), "{what}");
    assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY), "{what}");
    assert_eq!(w.value("solo/ONLY").as_deref(), Some("1"), "{what}");
}

/// One way a source file can go wrong, and how to undo it.
struct Hostile {
    what: &'static str,
    /// Breaks `file` (whose good content is `good`).
    apply: fn(&Path, &str),
    /// Restores it.
    undo: fn(&Path, &str),
    /// Part of the file error status must show.
    error: &'static str,
}

fn rewrite(file: &Path, good: &str) {
    std::fs::write(file, good).unwrap();
}

fn moved_dir(file: &Path) -> PathBuf {
    let dir = file.parent().unwrap();
    dir.with_file_name(format!(
        "{}.moved",
        dir.file_name().unwrap().to_string_lossy()
    ))
}

const HOSTILE: &[Hostile] = &[
    Hostile {
        what: "truncated to 0 bytes",
        apply: |f, _| {
            std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(f)
                .unwrap();
        },
        undo: rewrite,
        error: "file is empty (0 bytes)",
    },
    Hostile {
        what: "half written: unterminated quote",
        apply: |f, good| std::fs::write(f, format!("{good}HALF=\"never closed")).unwrap(),
        undo: rewrite,
        error: "unterminated double-quoted value",
    },
    Hostile {
        what: "half written: cut inside a key",
        apply: |f, good| {
            let first = good.lines().find(|l| l.contains('=')).unwrap();
            std::fs::write(f, format!("{first}\nB")).unwrap()
        },
        undo: rewrite,
        error: ":2:2: expected '='",
    },
    Hostile {
        what: "replaced by a 10 MB file",
        apply: |f, good| {
            let line = format!("{good}# {}\n", "x".repeat(1000));
            std::fs::write(f, line.repeat(10 * 1024 * 1024 / line.len() + 1)).unwrap()
        },
        undo: rewrite,
        error: "larger than max_file_size (1048576 bytes)",
    },
    Hostile {
        what: "removed",
        apply: |f, _| std::fs::remove_file(f).unwrap(),
        undo: rewrite,
        error: "file does not exist",
    },
    Hostile {
        what: "directory renamed away",
        apply: |f, _| std::fs::rename(f.parent().unwrap(), moved_dir(f)).unwrap(),
        undo: |f, _| std::fs::rename(moved_dir(f), f.parent().unwrap()).unwrap(),
        error: "file does not exist",
    },
];

/// Each hostile state, applied to a three-key file (where the deletion
/// guard would also step in) and to a one-key file (where it would not:
/// one deletion is never "mass removal"), deletes nothing and shows the
/// file error with its path; undoing it syncs again with no write at all.
#[test]
fn hostile_file_states_delete_nothing() {
    let w = World::new();
    let app = w.write("app/app.env", &app_text());
    let solo = w.write("solo/solo.env", SOLO);
    w.config(
        &AgentOpts::default(),
        &[
            sync_entry("app", &[&app], ""),
            sync_entry("solo", &[&solo], ""),
        ],
    );
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.wait_synced("solo");
    for name in NAMES {
        assert!(w.value(name).is_some(), "{name} not created");
    }
    let files = [("app", &app, app_text()), ("solo", &solo, SOLO.to_string())];
    for h in HOSTILE {
        w.proxy.reset_counts();
        for (_, file, good) in &files {
            (h.apply)(file, good);
        }
        for (sync, file, _) in &files {
            wait_file_error(&w, sync, file, h.error);
        }
        w.wait_quiet(settle());
        assert_nothing_deleted(&w, h.what);
        assert_eq!(w.proxy.writes(), 0, "{}: {:?}", h.what, w.proxy.calls());

        for (_, file, good) in &files {
            (h.undo)(file, good);
        }
        for (sync, _, _) in &files {
            eventually(
                &format!("sync {sync} to read its file again after '{}'", h.what),
                DEADLINE,
                || {
                    let s = w.sync_status(sync);
                    (s["files"][0]["status"] == "ok" && s["sync_status"] == "SYNCED").then_some(())
                },
                || w.sync_status(sync).to_string(),
            );
        }
        w.wait_quiet(settle());
        assert_nothing_deleted(&w, h.what);
        assert_eq!(
            w.proxy.writes(),
            0,
            "{}: restoring the file wrote: {:?}",
            h.what,
            w.proxy.calls()
        );
    }
    agent.stop();
}

/// Removing most keys trips the guard: FAILED with a message, nothing
/// deleted (also on later passes), until `resync --allow-deletes`.
#[test]
fn mass_removal_trips_the_guard_until_resync_allow_deletes() {
    let w = World::new();
    let file = w.write("app/app.env", "A=1\nB=2\nC=3\nD=4\n");
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();

    std::fs::write(&file, "A=1\n").unwrap();
    let guarded = |w: &World| {
        eventually(
            "the deletion guard to trip",
            DEADLINE,
            || {
                let s = w.sync_status("app");
                let msg = s["last_sync_message"].as_str().unwrap_or("");
                (s["sync_status"] == "FAILED" && msg.contains("deletion guard")).then_some(s)
            },
            || w.sync_status("app").to_string(),
        )
    };
    let s = guarded(&w);
    let msg = s["last_sync_message"].as_str().unwrap();
    assert!(
        msg.contains("3 of 4") && msg.contains("--allow-deletes"),
        "{msg}"
    );
    w.wait_quiet(settle());
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());

    // Another pass (an unrelated edit) is still guarded.
    std::fs::write(&file, "A=1\n# still only A\n").unwrap();
    eventually(
        "the second pass to read the edit",
        DEADLINE,
        || (w.sync_status("app")["files"][0]["keys"] == 1).then_some(()),
        || w.sync_status("app").to_string(),
    );
    w.wait_quiet(settle());
    guarded(&w);
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());
    for k in ["B", "C", "D"] {
        assert!(!w.pending_deletion(&format!("app/{k}")));
    }

    let sock = w.socket();
    let out = w.cli(&[
        "resync",
        "--socket",
        sock.to_str().unwrap(),
        "--allow-deletes",
        "app",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.proxy.count("DeleteSecret"), 3, "{:?}", w.proxy.calls());
    for k in ["B", "C", "D"] {
        assert!(w.pending_deletion(&format!("app/{k}")), "app/{k}");
    }
    assert!(!w.pending_deletion("app/A"));
    assert_eq!(w.sync_status("app")["sync_status"], "SYNCED");
    agent.stop();
}

/// Value, tags and version ids (with stages) of a secret.
type Snapshot = (
    Option<String>,
    Vec<(String, String)>,
    Vec<(String, Vec<String>)>,
);

/// What must not change about a secret someone else owns.
fn snapshot(w: &World, name: &str) -> Snapshot {
    (
        w.value(name),
        w.tags(name).into_iter().collect(),
        w.version_ids(name),
    )
}

/// The states of the secrets of one sync, by name.
fn states(w: &World, socket: &Path) -> Vec<(String, String)> {
    let s = w.sync_status_at(socket, "app");
    s["secrets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    (
                        x["name"].as_str().unwrap_or("").to_string(),
                        x["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Two agents with different `agent.id`s, each configured on the same
/// secret names: each reports CONFLICT for the secret the other owns, and
/// neither changes the other's value, tags or versions, on event-driven
/// passes and on explicit resyncs.
#[test]
fn two_agents_on_the_same_names_conflict_and_never_overwrite() {
    let w = World::new();
    let fx = w.write("x/app.env", "A=x-a\n");
    let fy = w.write("y/app.env", "B=y-b\n");
    let opts = AgentOpts::default();
    let cx = w.config(&opts, &[sync_entry("app", &[&fx], "")]);
    let cy = w.config_for(
        &w.path("agent-y"),
        "other-agent",
        &opts,
        &[sync_entry("app", &[&fy], "")],
    );
    let sx = w.socket();
    let sy = w.path("agent-y/run/control.sock");
    let x = Agent::spawn_at(&w, &cx);
    let y = Agent::spawn_at(&w, &cy);
    eventually(
        "both agents to create their own secret",
        DEADLINE,
        || (w.value("app/A").is_some() && w.value("app/B").is_some()).then_some(()),
        || format!("{:?}", w.proxy.calls()),
    );
    eventually(
        "both syncs SYNCED",
        DEADLINE,
        || {
            (w.sync_status_at(&sx, "app")["sync_status"] == "SYNCED"
                && w.sync_status_at(&sy, "app")["sync_status"] == "SYNCED")
                .then_some(())
        },
        || {
            format!(
                "{} {}",
                w.sync_status_at(&sx, "app"),
                w.sync_status_at(&sy, "app")
            )
        },
    );
    assert_eq!(w.tags("app/A")["secretsync:agent"], "e2e-agent");
    assert_eq!(w.tags("app/B")["secretsync:agent"], "other-agent");
    let a0 = snapshot(&w, "app/A");
    let b0 = snapshot(&w, "app/B");

    // Now each file also defines the other agent's key.
    std::fs::write(&fx, "A=x-a\nB=x-b\n").unwrap();
    std::fs::write(&fy, "A=y-a\nB=y-b\n").unwrap();
    let conflict = |socket: &Path, theirs: &str| {
        eventually(
            &format!("CONFLICT on {theirs}"),
            DEADLINE,
            || {
                let st = states(&w, socket);
                st.iter()
                    .any(|(n, s)| n == theirs && s == "CONFLICT")
                    .then_some(st)
            },
            || w.sync_status_at(socket, "app").to_string(),
        )
    };
    let st = conflict(&sx, "app/B");
    assert!(st.contains(&("app/A".into(), "SYNCED".into())), "{st:?}");
    let st = conflict(&sy, "app/A");
    assert!(st.contains(&("app/B".into(), "SYNCED".into())), "{st:?}");
    w.wait_quiet(settle());
    assert_eq!(
        snapshot(&w, "app/A"),
        a0,
        "agent y changed agent x's secret"
    );
    assert_eq!(
        snapshot(&w, "app/B"),
        b0,
        "agent x changed agent y's secret"
    );

    // Explicit resyncs change nothing either, and fail (a conflict is a failure).
    for socket in [&sx, &sy] {
        let out = w.cli(&["resync", "--socket", socket.to_str().unwrap(), "app"]);
        assert_eq!(out.code, 1, "{out:?}");
    }
    assert_eq!(snapshot(&w, "app/A"), a0);
    assert_eq!(snapshot(&w, "app/B"), b0);
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    x.stop();
    y.stop();
}

/// `adopt_existing: false` (the default): an untagged secret with the
/// name a key maps to is a CONFLICT, and its value, tags and version ids
/// are the same after several passes (start, edit, resyncs).
#[test]
fn untagged_secret_is_never_touched_without_adopt_existing() {
    let w = World::new();
    w.create_foreign("app/U", "theirs", &[("owner", "bob")]);
    let before = snapshot(&w, "app/U");
    let file = w.write("app/app.env", "U=ours\nA=1\n");
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    let sock = w.socket();
    eventually(
        "CONFLICT on app/U",
        DEADLINE,
        || {
            states(&w, &sock)
                .contains(&("app/U".into(), "CONFLICT".into()))
                .then_some(())
        },
        || w.sync_status("app").to_string(),
    );
    assert_eq!(w.value("app/A").as_deref(), Some("1"));
    w.wait_quiet(settle());
    assert_eq!(snapshot(&w, "app/U"), before, "first pass");

    // An edit of the conflicting key, then explicit resyncs.
    std::fs::write(&file, "U=ours-again\nA=2\n").unwrap();
    w.wait_value("app/A", "2");
    w.wait_quiet(settle());
    assert_eq!(snapshot(&w, "app/U"), before, "after an edit");
    for i in 0..2 {
        let out = w.cli(&["resync", "--socket", sock.to_str().unwrap(), "app"]);
        assert_eq!(out.code, 1, "a conflict fails the resync: {out:?}");
        assert_eq!(snapshot(&w, "app/U"), before, "after resync {i}");
    }
    let touched: Vec<String> = [
        "PutSecretValue",
        "TagResource",
        "UntagResource",
        "UpdateSecret",
        "DeleteSecret",
    ]
    .iter()
    .flat_map(|op| w.proxy.bodies(op))
    .filter(|b| {
        b["SecretId"]
            .as_str()
            .is_some_and(|id| id.contains("app/U"))
    })
    .map(|b| b.to_string())
    .collect();
    assert!(
        touched.is_empty(),
        "calls on the untagged secret: {touched:?}"
    );
    agent.stop();
}
