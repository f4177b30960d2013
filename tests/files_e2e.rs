//! Source files that are not plain, finished files, end to end (SPEC §5
//! rule 5, §7): the real agent and CLI against a private moto behind the
//! counting proxy.
//!
//! - A FIFO named as a source never blocks: `sync` exits 1 at once with an
//!   error naming it, the agent shows the file error, recovers when it
//!   becomes a regular file, and SIGTERM still ends within
//!   `shutdown_timeout`.
//! - A glob match that turns into a dangling symlink, a directory or a FIFO
//!   is a file error holding its keys: nothing is deleted.
//! - A writer slower than the debounce, and a truncate-and-rewrite loop,
//!   never get a half-written file read: no cut value is ever written,
//!   nothing is deleted, and the "file events were dropped" warning is
//!   rate limited.

mod agent_support;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_support::{Agent, AgentOpts, DEADLINE, DEBOUNCE, World, eventually, sync_entry};
use serde_json::Value;

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo has no other preconditions.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Waits until the file `file` of sync `sync` shows an error containing
/// `fragment`; returns the sync's status.
fn wait_file_error(w: &World, sync: &str, file: &Path, fragment: &str) -> Value {
    let shown = file.display().to_string();
    eventually(
        &format!("file error '{fragment}' for {shown} in sync {sync}"),
        DEADLINE,
        || {
            let s = w.sync_status(sync);
            let hit = s["files"].as_array()?.iter().any(|f| {
                f["status"] == "error"
                    && f["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with(&shown) && e.contains(fragment))
            });
            hit.then_some(s)
        },
        || w.sync_status(sync).to_string(),
    )
}

fn settle(w: &World) {
    w.wait_quiet(DEBOUNCE * 4);
}

/// A FIFO named directly: `sync` and `plan` answer at once (exit 1, the
/// error names the path); the agent shows the file error, syncs once the
/// FIFO is replaced by a regular file, and stops within its
/// `shutdown_timeout` with a FIFO configured.
#[test]
fn a_fifo_source_never_blocks_the_cli_or_the_agent() {
    let w = World::new();
    let fifo = w.path("p/p.env");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    mkfifo(&fifo);
    let opts = AgentOpts {
        shutdown_timeout: "2s",
        ..AgentOpts::default()
    };
    let config = w.config(&opts, &[sync_entry("p", &[&fifo], "")]);
    let config = config.display().to_string();
    for cmd in ["sync", "plan"] {
        let t = Instant::now();
        let out = w.cli(&[cmd, "--config", &config]);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{cmd} took {:?}",
            t.elapsed()
        );
        assert_eq!(out.code, 1, "{cmd}: {out:?}");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains(&format!("{}: not a regular file (a FIFO)", fifo.display())),
            "{cmd}: {text}"
        );
    }

    let agent = Agent::start(&w);
    wait_file_error(&w, "p", &fifo, "not a regular file (a FIFO)");
    // resync answers (it hung while a reader was blocked on the FIFO).
    let out = w.cli(&["resync", "--socket", &w.socket().display().to_string()]);
    assert!(
        out.stdout.contains("not a regular file") || out.code != 0,
        "{out:?}"
    );
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, "P=1\n").unwrap();
    w.wait_value("p/P", "1");
    w.wait_synced("p");

    std::fs::remove_file(&fifo).unwrap();
    mkfifo(&fifo);
    wait_file_error(&w, "p", &fifo, "not a regular file (a FIFO)");
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    let took = agent.stop_within(Duration::from_secs(4));
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
}

/// One way a glob match stops being a regular file.
struct Hostile {
    what: &'static str,
    apply: fn(&Path),
    error: &'static str,
}

const HOSTILE: &[Hostile] = &[
    Hostile {
        what: "dangling symlink",
        apply: |p| std::os::unix::fs::symlink(p.with_file_name("nowhere"), p).unwrap(),
        error: "dangling symlink",
    },
    Hostile {
        what: "directory",
        apply: |p| std::fs::create_dir(p).unwrap(),
        error: "not a regular file (a directory)",
    },
    Hostile {
        what: "FIFO",
        apply: mkfifo,
        error: "not a regular file (a FIFO)",
    },
];

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

const GB: &str = "GB1=b1\nGB2=b2\nGB3=b3\n";

/// `files: ["g/*.env"]`: b.env replaced by a dangling symlink, a directory
/// or a FIFO is a file error naming it; its keys stay, no DeleteSecret, and
/// putting the file back writes nothing.
#[test]
fn a_glob_match_that_is_no_longer_a_file_holds_its_keys() {
    let w = World::new();
    w.write("g/a.env", "GA1=a1\nGA2=a2\nGA3=a3\n");
    let b = w.write("g/b.env", GB);
    let pattern = w.path("g/*.env");
    w.config(
        &AgentOpts::default(),
        &[sync_entry("glob", &[&pattern], "")],
    );
    let agent = Agent::start(&w);
    w.wait_synced("glob");
    for h in HOSTILE {
        w.proxy.reset_counts();
        std::fs::remove_file(&b).unwrap();
        (h.apply)(&b);
        let s = wait_file_error(&w, "glob", &b, h.error);
        assert_ne!(s["sync_status"], "SYNCED", "{}: {s}", h.what);
        settle(&w);
        assert_eq!(
            w.proxy.count("DeleteSecret"),
            0,
            "{}: {:?}",
            h.what,
            w.proxy.calls()
        );
        for k in ["GB1", "GB2", "GB3", "GA1"] {
            let name = format!("glob/{k}");
            assert!(!w.pending_deletion(&name), "{}: {name}", h.what);
            assert!(w.value(&name).is_some(), "{}: {name}", h.what);
        }
        remove_any(&b);
        std::fs::write(&b, GB).unwrap();
        eventually(
            &format!("glob to read b.env again after '{}'", h.what),
            DEADLINE,
            || {
                let s = w.sync_status("glob");
                let ok = s["files"]
                    .as_array()
                    .is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["status"] == "ok"));
                (ok && s["sync_status"] == "SYNCED").then_some(())
            },
            || w.sync_status("glob").to_string(),
        );
        settle(&w);
        assert_eq!(w.proxy.writes(), 0, "{}: {:?}", h.what, w.proxy.calls());
    }
    agent.stop();
}

/// The final text and a 120-byte prefix of it that cuts A's value.
fn long_env(tag: &str) -> String {
    format!(
        "# rewritten\nA={tag}-{}\nB=bee-{tag}\nC=cee-{tag}\n",
        "x".repeat(150)
    )
}

/// `{ head -c 120 new.env; sleep 1.5; tail -c +121 new.env; } > app.env`:
/// the half-written file (A cut, B and C absent) sits there for 1.5 s, far
/// past the debounce. AWS ends with exactly the final content, each secret
/// gets one new version (no cut value was ever written), nothing deleted.
#[test]
fn a_slow_in_place_writer_is_never_read_half_way() {
    let w = World::new();
    let app = w.write("app/app.env", &long_env("old"));
    w.write("app/new.env", &long_env("new"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&app], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg("{ head -c 120 new.env; sleep 1.5; tail -c +121 new.env; } > app.env")
        .current_dir(app.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let want = format!("new-{}", "x".repeat(150));
    w.wait_value("app/A", &want);
    w.wait_value("app/C", "cee-new");
    settle(&w);
    assert_eq!(w.value("app/B").as_deref(), Some("bee-new"));
    for k in ["A", "B", "C"] {
        let name = format!("app/{k}");
        assert_eq!(
            w.version_ids(&name).len(),
            2,
            "{name}: a cut value was written"
        );
        assert!(!w.pending_deletion(&name), "{name}");
    }
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.count("RestoreSecret"), 0, "{:?}", w.proxy.calls());
    agent.stop();
}

/// A loop truncating and rewriting the file in two writes for 4 s ends
/// with the final content: two versions per secret, nothing deleted, and
/// at most one "file events were dropped" line per 10 s.
#[test]
fn a_truncate_and_rewrite_loop_converges_without_cut_values() {
    let w = World::new();
    let app = w.write("app/app.env", &long_env("old"));
    w.write("app/new.env", &long_env("new"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&app], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();
    let script = "end=$((SECONDS + 4)); while [ $SECONDS -lt $end ]; do \
                  { head -c 120 new.env; tail -c +121 new.env; } > app.env; \
                  : > app.env; printf 'A=1\\n' >> app.env; cat new.env > app.env; done";
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(app.parent().unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let want = format!("new-{}", "x".repeat(150));
    w.wait_value("app/A", &want);
    w.wait_value("app/C", "cee-new");
    w.wait_synced("app");
    settle(&w);
    for k in ["A", "B", "C"] {
        let name = format!("app/{k}");
        assert_eq!(
            w.version_ids(&name).len(),
            2,
            "{name}: {:?}",
            w.version_ids(&name)
        );
        assert!(!w.pending_deletion(&name), "{name}");
    }
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());
    let dropped = agent
        .stderr()
        .lines()
        .filter(|l| l.contains("file events were dropped"))
        .count();
    let passes = agent
        .stderr()
        .lines()
        .filter(|l| l.contains("reading again in"))
        .count();
    eprintln!("loop: {dropped} 'dropped' warning line(s), {passes} pass(es) put off to settle");
    assert!(dropped <= 2, "{dropped} 'dropped' warnings");
    agent.stop();
}
