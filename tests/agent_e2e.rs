//! End-to-end tests of the agent (`secretsync run`): the real binary watching
//! real files, against a private moto behind the counting/fault-injecting
//! proxy. Socket protocol and abuse tests live in `socket_e2e.rs`.

mod agent_support;
mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_support::{Agent, AgentOpts, CANARY, DEADLINE, DEBOUNCE, World, eventually, sync_entry};
use support::{Fault, op};

/// Source content before and after the edit of every save-pattern test: only
/// `A` changes, so exactly one PutSecretValue (for `app/A`) is right.
fn before() -> String {
    format!("# app secrets\nA=one\nB=bee\nTOKEN={CANARY}\n")
}
fn after() -> String {
    format!("# app secrets\nA=two\nB=bee\nTOKEN={CANARY}\n")
}

/// Long enough after the last AWS call that a second pass would have shown up.
fn settle() -> Duration {
    DEBOUNCE * 3
}

/// Starts an agent on the files `setup` creates (sync `app`), waits for the
/// initial sync (`A=one`), runs `edit`, and asserts the result is `A=two` in
/// AWS with exactly one write: one PutSecretValue for `app/A`.
fn save_pattern(setup: impl FnOnce(&World) -> Vec<PathBuf>, edit: impl FnOnce(&World)) {
    let w = World::new();
    let files = setup(&w);
    w.config(&AgentOpts::default(), &[sync_entry("app", &files, "")]);
    let agent = Agent::start(&w);
    w.wait_pass_done("app");
    assert_eq!(w.value("app/A").as_deref(), Some("one"));
    assert_eq!(w.value("app/B").as_deref(), Some("bee"));
    assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY));
    w.proxy.reset_counts();

    edit(&w);

    w.wait_value("app/A", "two");
    w.wait_quiet(settle());
    assert_eq!(
        w.put_ids(),
        ["app/A"],
        "one PutSecretValue for the edited key; calls: {:?}",
        w.proxy.calls()
    );
    assert_eq!(
        w.proxy.writes(),
        1,
        "no write besides the one PutSecretValue: {:?}",
        w.proxy.calls()
    );
    assert_eq!(w.value("app/B").as_deref(), Some("bee"));
    assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY));
    assert_eq!(w.versions("app/A"), 2);
    agent.stop();
}

/// The common case: one existing `app/app.env`.
fn plain_file(w: &World) -> Vec<PathBuf> {
    vec![w.write("app/app.env", &before())]
}

#[test]
fn save_atomic_rename_like_vscode() {
    save_pattern(plain_file, |w| {
        let tmp = w.write("app/.app.env.tmp-4711", &after());
        std::fs::rename(tmp, w.path("app/app.env")).unwrap();
    });
}

#[test]
fn save_vim_default_backup_rename() {
    // vim's default (backupcopy=auto on a plain file): rename the original to
    // a backup, write a new file, delete the backup.
    save_pattern(plain_file, |w| {
        let file = w.path("app/app.env");
        let backup = w.path("app/app.env~");
        std::fs::rename(&file, &backup).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&file, after()).unwrap();
        std::fs::remove_file(&backup).unwrap();
    });
}

#[test]
fn save_vim_backupcopy_yes_in_place() {
    // In place: truncate, then the new content in two writes with a pause.
    save_pattern(plain_file, |w| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(w.path("app/app.env"))
            .unwrap();
        let text = after();
        let (head, tail) = text.split_at(text.find("A=two").unwrap() + 3);
        f.write_all(head.as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        f.write_all(tail.as_bytes()).unwrap();
        f.sync_all().unwrap();
    });
}

#[test]
fn save_sed_in_place() {
    save_pattern(plain_file, |w| {
        let st = Command::new("sed")
            .args(["-i", "s/^A=one$/A=two/"])
            .arg(w.path("app/app.env"))
            .status()
            .expect("run sed");
        assert!(st.success());
    });
}

#[test]
fn save_shell_redirect_truncate_and_write() {
    // `cat > file`: the shell truncates at open, cat writes what arrives.
    save_pattern(plain_file, |w| {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("cat > \"$0\"")
            .arg(w.path("app/app.env"))
            .stdin(Stdio::piped())
            .spawn()
            .expect("run sh");
        let mut stdin = child.stdin.take().unwrap();
        let text = after();
        // Cut inside the new value: a read between the writes sees `A=t`.
        let (head, tail) = text.split_at(text.find("A=two").unwrap() + 3);
        stdin.write_all(head.as_bytes()).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(40));
        stdin.write_all(tail.as_bytes()).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn save_delete_and_recreate() {
    save_pattern(plain_file, |w| {
        let file = w.path("app/app.env");
        std::fs::remove_file(&file).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        std::fs::write(&file, after()).unwrap();
    });
}

#[test]
fn save_mv_other_file_onto_path() {
    save_pattern(plain_file, |w| {
        // Prepared elsewhere (like a deploy tool), then moved into place.
        let staged = w.write("staging/app.env.new", &after());
        let st = Command::new("mv")
            .arg(&staged)
            .arg(w.path("app/app.env"))
            .status()
            .expect("run mv");
        assert!(st.success());
    });
}

#[test]
fn save_kubernetes_symlink_swap() {
    // The layout kubelet gives a mounted Secret/ConfigMap:
    //   app.env -> ..data/app.env, ..data -> ..v1, ..v1/app.env
    let setup = |w: &World| {
        w.write("k8s/..v1/app.env", &before());
        std::os::unix::fs::symlink("..v1", w.path("k8s/..data")).unwrap();
        std::os::unix::fs::symlink("..data/app.env", w.path("k8s/app.env")).unwrap();
        vec![w.path("k8s/app.env")]
    };
    save_pattern(setup, |w| {
        w.write("k8s/..v2/app.env", &after());
        std::os::unix::fs::symlink("..v2", w.path("k8s/..data_tmp")).unwrap();
        std::fs::rename(w.path("k8s/..data_tmp"), w.path("k8s/..data")).unwrap();
        std::fs::remove_dir_all(w.path("k8s/..v1")).unwrap();
    });
}

#[test]
fn save_source_directory_created_after_start() {
    // Later files win: `override.env` in a directory that does not exist yet
    // changes A when it appears.
    let setup = |w: &World| {
        vec![
            w.write("app/base.env", &before()),
            w.path("later/override.env"),
        ]
    };
    save_pattern(setup, |w| {
        // The directory first, the file only once the agent has seen the
        // directory: the file's creation is then visible only through a
        // watch on the new directory.
        std::fs::create_dir(w.path("later")).unwrap();
        std::thread::sleep(DEBOUNCE * 3);
        std::fs::write(w.path("later/override.env"), "A=two\n").unwrap();
    });
}

#[test]
fn save_file_missing_at_start_appears_later() {
    let setup = |w: &World| vec![w.write("app/base.env", &before()), w.path("app/local.env")];
    save_pattern(setup, |w| {
        std::fs::write(w.path("app/local.env"), "A=two\n").unwrap();
    });
}

#[test]
fn save_new_file_in_a_glob_directory() {
    // Later files win: a new file matching `conf.d/*.env` overrides A.
    let setup = |w: &World| {
        std::fs::create_dir_all(w.path("app/conf.d")).unwrap();
        vec![
            w.write("app/base.env", &before()),
            w.path("app/conf.d/*.env"),
        ]
    };
    save_pattern(setup, |w| {
        w.write("app/conf.d/10-override.env", "A=two\n");
    });
}

#[test]
fn unrelated_writes_in_a_watched_directory_do_not_starve_a_sync() {
    // An application log next to the .env file, written every 50 ms: its
    // events must not keep postponing the sync of an edit forever.
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = w.path("app/nohup.out");
    let noise = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(log).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writeln!(f, "request served").unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _stop_noise = StopOnDrop(std::sync::Arc::clone(&stop));
    std::thread::sleep(DEBOUNCE * 2);

    std::fs::write(&file, after()).unwrap();
    w.wait_value("app/A", "two");
    // Passes over unchanged files (the log keeps writing) make no calls.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.put_ids(), ["app/A"], "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.writes(), 1, "{:?}", w.proxy.calls());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise.join().unwrap();
    agent.stop();
}

#[test]
fn burst_is_one_write_and_unchanged_saves_are_none() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();

    // 20 saves 5 ms apart: each within the debounce period of the one
    // before, so the whole burst is one quiet-period window.
    let mut last = Instant::now();
    let mut max_gap = Duration::ZERO;
    for i in 1..=20 {
        std::fs::write(&file, format!("A=burst-{i}\nB=bee\nTOKEN={CANARY}\n")).unwrap();
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        max_gap < DEBOUNCE / 2,
        "two saves of the burst were {max_gap:?} apart; the machine is too slow for this test"
    );
    w.wait_value("app/A", "burst-20");
    w.wait_quiet(settle());
    assert_eq!(w.put_ids(), ["app/A"], "calls: {:?}", w.proxy.calls());
    assert_eq!(w.proxy.writes(), 1, "calls: {:?}", w.proxy.calls());
    assert_eq!(
        w.versions("app/A"),
        2,
        "one new version for the whole burst"
    );

    // Saving the same content, in place and by rename, and touching the file:
    // events, but no write call.
    w.proxy.reset_counts();
    let same = std::fs::read(&file).unwrap();
    std::fs::write(&file, &same).unwrap();
    std::thread::sleep(DEBOUNCE * 2);
    let tmp = w.path("app/.app.env.swp");
    std::fs::write(&tmp, &same).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    std::thread::sleep(DEBOUNCE * 2);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now())
        .unwrap();
    std::thread::sleep(DEBOUNCE * 3);
    w.wait_quiet(settle());
    assert_eq!(
        w.proxy.writes(),
        0,
        "unchanged saves made write calls: {:?}",
        w.proxy.calls()
    );
    assert_eq!(w.sync_status("app")["sync_status"], "SYNCED");
    agent.stop();
}

#[test]
fn edit_during_a_pass_is_not_lost() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();

    // The first write is slow; the second edit arrives while it is in flight.
    w.proxy.inject(Fault::Delay {
        op: op("PutSecretValue"),
        delay: Duration::from_millis(800),
    });
    std::fs::write(&file, after()).unwrap();
    assert!(
        w.proxy
            .wait_for_count_blocking("PutSecretValue", 1, DEADLINE)
    );
    std::fs::write(&file, format!("A=three\nB=bee\nTOKEN={CANARY}\n")).unwrap();
    w.wait_value("app/A", "three");
    w.wait_quiet(settle());
    assert_eq!(w.put_ids(), ["app/A", "app/A"], "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.writes(), 2);
    assert_eq!(w.versions("app/A"), 3);
    w.wait_synced("app");
    agent.stop();
}

/// Receives sd_notify datagrams into `got` until one has the line `want`
/// (panics after [`DEADLINE`]); returns its index in `got`.
fn notified(sock: &std::os::unix::net::UnixDatagram, got: &mut Vec<String>, want: &str) -> usize {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(i) = got.iter().position(|m| m.lines().any(|l| l == want)) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "no {want} from the agent; got {got:?}"
        );
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[test]
fn systemd_notify_ready_status_watchdog_reloading_stopping() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let notify_path = w.agent_path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut agent = Agent::spawn_env(
        &w,
        &[
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut got = Vec::new();
    notified(&sock, &mut got, "READY=1");
    assert!(
        w.socket().exists(),
        "READY=1 before the control socket was bound"
    );
    w.wait_synced("app");

    // A STATUS= summary, and the watchdog petted at least every 400 ms.
    got.clear();
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1200) {
        let mut buf = [0u8; 4096];
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let pets = got
        .iter()
        .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
        .count();
    assert!(
        pets >= 2,
        "{pets} watchdog pets in 1.2 s with WATCHDOG_USEC=400000: {got:?}"
    );

    got.clear();
    agent.signal(libc::SIGHUP);
    let reloading = notified(&sock, &mut got, "RELOADING=1");
    let ready = notified(&sock, &mut got, "READY=1");
    assert!(
        reloading <= ready,
        "READY=1 must follow RELOADING=1: {got:?}"
    );
    assert!(
        got.iter()
            .any(|m| m.starts_with("MONOTONIC_USEC=") || m.contains("\nMONOTONIC_USEC=")),
        "RELOADING=1 needs MONOTONIC_USEC: {got:?}"
    );

    agent.signal(libc::SIGTERM);
    notified(&sock, &mut got, "STOPPING=1");
    let st = agent.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(0));
}

#[test]
fn auto_sync_off_plans_and_writes_only_on_resync() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(
        &AgentOpts::default(),
        &[sync_entry("app", &[&file], "    auto_sync: false\n")],
    );
    let agent = Agent::start(&w);
    let s = eventually(
        "the first (plan-only) pass",
        DEADLINE,
        || {
            let s = w.sync_status("app");
            (s["counts"]["pending"] == 3).then_some(s)
        },
        || w.sync_status("app").to_string(),
    );
    assert_eq!(s["sync_status"], "PENDING", "{s}");
    assert!(s["last_synced_at"].is_null(), "{s}");
    w.wait_quiet(settle());
    assert_eq!(
        w.proxy.writes(),
        0,
        "auto_sync: false wrote: {:?}",
        w.proxy.calls()
    );

    let sock = w.socket();
    let sock = sock.to_str().unwrap();
    let out = w.cli(&["resync", "--socket", sock, "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.value("app/A").as_deref(), Some("one"));
    assert_eq!(w.sync_status("app")["sync_status"], "SYNCED");

    // An edit is planned, not written, until the next resync.
    w.proxy.reset_counts();
    std::fs::write(&file, after()).unwrap();
    eventually(
        "the edit to show as pending",
        DEADLINE,
        || (w.sync_status("app")["sync_status"] == "PENDING").then_some(()),
        || w.sync_status("app").to_string(),
    );
    w.wait_quiet(settle());
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());
    assert_eq!(w.value("app/A").as_deref(), Some("one"));
    let out = w.cli(&["resync", "--socket", sock]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.value("app/A").as_deref(), Some("two"));
    assert_eq!(w.put_ids(), ["app/A"]);
    agent.stop();
}

#[test]
fn sighup_reload_valid_then_invalid_config() {
    let w = World::new();
    let one = w.write("one/app.env", &format!("A=1\nTOKEN={CANARY}\n"));
    let two = w.write("two/app.env", "B=2\n");
    let opts = AgentOpts::default();
    let first = sync_entry("first", &[&one], "");
    let second = sync_entry("second", &[two], "");
    let config = w.config(&opts, std::slice::from_ref(&first));
    let mut agent = Agent::start(&w);
    w.wait_synced("first");
    assert!(w.sync_status("second").is_null());

    // A valid config that adds a sync.
    w.config(&opts, &[first.clone(), second.clone()]);
    agent.signal(libc::SIGHUP);
    w.wait_synced("second");
    w.wait_value("second/B", "2");
    assert!(w.status()["agent"]["config_error"].is_null());
    // The new sync's directory is watched.
    std::fs::write(w.path("two/app.env"), "B=22\n").unwrap();
    w.wait_value("second/B", "22");

    // An invalid one: the agent keeps running on the old config and says why.
    let valid = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{valid}bogus_key: 1\n")).unwrap();
    agent.signal(libc::SIGHUP);
    let err = eventually(
        "config_error after a bad SIGHUP",
        DEADLINE,
        || {
            w.status()["agent"]["config_error"]
                .as_str()
                .map(String::from)
        },
        || w.status()["agent"].to_string(),
    );
    let cfg = config.display().to_string();
    assert!(
        err.contains(&format!("{cfg}:")) && err.contains("bogus_key"),
        "config_error should name file:line:col and the key: {err}"
    );
    assert!(agent.alive(), "agent died on an invalid reload");
    let json = w.status_cli().expect("status --json works");
    assert_eq!(json["agent"]["config_error"].as_str(), Some(err.as_str()));
    let names: Vec<&str> = json["syncs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"], "old config keeps running");
    // Old syncs still sync.
    std::fs::write(&one, format!("A=3\nTOKEN={CANARY}\n")).unwrap();
    w.wait_value("first/A", "3");

    // `secretsync reload` with the invalid config: exit 2 and the errors.
    let sock = w.socket();
    let out = w.cli(&["reload", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.code, 2, "reload of an invalid config: {out:?}");
    assert!(
        out.stderr.contains(&format!("{cfg}:")) && out.stderr.contains("bogus_key"),
        "reload should print the validation errors: {}",
        out.stderr
    );
    assert!(agent.alive());

    // Fixed: reload succeeds and the error is cleared; the removed sync goes.
    w.config(&opts, &[second]);
    let out = w.cli(&["reload", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let st = w.status();
    assert!(st["agent"]["config_error"].is_null(), "{st}");
    assert_eq!(st["syncs"].as_array().unwrap().len(), 1, "{st}");
    assert_eq!(st["syncs"][0]["name"], "second");
    agent.stop();
}

#[test]
fn sigterm_exits_0_within_shutdown_timeout() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    let opts = AgentOpts {
        shutdown_timeout: "1s",
        ..AgentOpts::default()
    };
    w.config(&opts, &[sync_entry("app", &[&file], "")]);
    // Idle: SIGTERM exits at once.
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let took = agent.stop_within(Duration::from_secs(3));
    assert!(took < Duration::from_secs(2), "idle exit took {took:?}");

    // A write that never gets an answer is in flight when SIGTERM comes: the
    // agent waits for it up to shutdown_timeout, then exits 0 and says so.
    let agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.inject(Fault::Hang {
        op: op("PutSecretValue"),
    });
    std::fs::write(&file, after()).unwrap();
    assert!(
        w.proxy
            .wait_for_count_blocking("PutSecretValue", 1, DEADLINE),
        "the edit never reached AWS: {:?}",
        w.proxy.calls()
    );
    let log = agent.stderr_path().to_path_buf();
    let took = agent.stop_within(Duration::from_secs(4));
    assert!(
        took >= Duration::from_millis(800),
        "exited after {took:?}: it should wait for the in-flight call up to shutdown_timeout (1s)"
    );
    let log = std::fs::read_to_string(log).unwrap().to_lowercase();
    assert!(
        log.contains("abandon"),
        "calls abandoned at the shutdown timeout must be logged"
    );
}

#[test]
fn outage_shows_pending_then_edit_arrives_without_restart() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    // The agent starts (and answers) while AWS is unreachable.
    w.proxy.inject(Fault::Outage);
    let mut agent = Agent::start(&w);
    assert!(w.proxy.wait_for_count_blocking("ListSecrets", 1, DEADLINE));
    assert_ne!(w.sync_status("app")["sync_status"], "SYNCED");
    w.proxy.clear_faults();
    eventually(
        "the first sync once AWS is back",
        Duration::from_secs(20),
        || (w.sync_status("app")["sync_status"] == "SYNCED").then_some(()),
        || w.sync_status("app").to_string(),
    );

    w.proxy.inject(Fault::Outage);
    w.proxy.reset_counts();
    std::fs::write(&file, after()).unwrap();
    // The pass first spends the SDK's retries on the dead endpoint (5
    // attempts with up to 1+2+4+8 s of jittered backoff) before it gives up
    // and reports the sync PENDING; until then status says RUNNING.
    let s = eventually(
        "sync PENDING with a reason during the outage",
        Duration::from_secs(30),
        || {
            let s = w.sync_status("app");
            (s["sync_status"] == "PENDING" && s["last_sync_message"].is_string()).then_some(s)
        },
        || w.sync_status("app").to_string(),
    );
    assert!(
        !s["last_sync_message"].as_str().unwrap().is_empty(),
        "PENDING needs a reason: {s}"
    );
    assert!(w.proxy.total() > 0, "the agent never tried AWS");
    assert!(agent.alive());

    w.proxy.clear_faults();
    // The retry is on a backoff of a few seconds.
    eventually(
        "the edit to arrive after the outage",
        Duration::from_secs(20),
        || (w.value("app/A").as_deref() == Some("two")).then_some(()),
        || w.sync_status("app").to_string(),
    );
    w.wait_synced("app");
    assert_eq!(w.versions("app/A"), 2, "exactly one new version");
    assert_eq!(w.value("app/B").as_deref(), Some("bee"));
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    agent.stop();
}

#[test]
fn drift_is_repaired_by_the_reconcile_interval() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    let opts = AgentOpts {
        reconcile_interval: "2s",
        ..AgentOpts::default()
    };
    w.config(&opts, &[sync_entry("app", &[file], "")]);
    let mut agent = Agent::start(&w);
    w.wait_synced("app");
    w.proxy.reset_counts();

    // A drift check with nothing drifted reads and writes nothing.
    assert!(
        w.proxy.wait_for_count_blocking("ListSecrets", 1, DEADLINE),
        "no drift check within {DEADLINE:?}"
    );
    w.wait_quiet(settle());
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());

    // Someone changes a value behind the agent's back.
    w.tamper("app/B", "tampered");
    w.tamper("app/TOKEN", "tampered-too");
    eventually(
        "drift to be repaired",
        DEADLINE,
        || {
            (w.value("app/B").as_deref() == Some("bee")
                && w.value("app/TOKEN").as_deref() == Some(CANARY))
            .then_some(())
        },
        || format!("{:?}", w.proxy.calls()),
    );
    w.wait_quiet(settle());
    let mut puts = w.put_ids();
    puts.sort();
    assert_eq!(puts, ["app/B", "app/TOKEN"]);
    assert_eq!(w.proxy.writes(), 2);

    // Someone schedules one for deletion, and force-deletes another: both
    // keys are still in the file, so the drift check brings them back.
    w.rt.block_on(async {
        w.client
            .delete_secret()
            .secret_id("app/A")
            .recovery_window_in_days(7)
            .send()
            .await
            .unwrap();
        w.client
            .delete_secret()
            .secret_id("app/B")
            .force_delete_without_recovery(true)
            .send()
            .await
            .unwrap();
    });
    eventually(
        "deleted secrets to be restored / recreated",
        DEADLINE,
        || {
            (w.value("app/A").as_deref() == Some("one")
                && w.value("app/B").as_deref() == Some("bee"))
            .then_some(())
        },
        || format!("{:?} {}", w.proxy.calls(), w.sync_status("app")),
    );
    assert!(!w.pending_deletion("app/A"));
    w.wait_synced("app");

    // SIGINT works like SIGTERM.
    agent.signal(libc::SIGINT);
    let st = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0));
}

#[test]
fn kill_9_mid_pass_then_restart_converges_without_duplicate_versions() {
    const N: usize = 50;
    let w = World::new();
    let content = |v: &str| -> String {
        let mut s = String::new();
        for i in 0..N {
            s.push_str(&format!("K{i:02}={v}-{i}\n"));
        }
        s.push_str(&format!("TOKEN={CANARY}\n"));
        s
    };
    let file = w.write("app/app.env", &content("v1"));
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&file], "")]);
    let mut agent = Agent::start(&w);
    let s = w.wait_synced("app");
    assert_eq!(s["counts"]["synced"], N + 1, "{s}");
    w.proxy.reset_counts();

    // Every update is held by "AWS" before it is applied, and applied even
    // when the caller has died: the pass is in flight with many writes when
    // the agent is killed, and those writes land after the restarted agent
    // has read the old values and sent the same updates again.
    let hold = Duration::from_secs(4);
    w.proxy.inject(Fault::DelayDetached {
        op: op("PutSecretValue"),
        delay: hold,
    });
    std::fs::write(&file, content("v2")).unwrap();
    assert!(
        w.proxy
            .wait_for_count_blocking("PutSecretValue", 10, DEADLINE),
        "the pass never started writing: {:?}",
        w.proxy.calls()
    );
    agent.kill9();
    let killed_at = Instant::now();
    let sent_before_kill = w.put_ids();
    assert!(
        sent_before_kill.len() < N,
        "all {N} writes were sent before the kill; nothing was left in flight"
    );

    w.proxy.clear_faults();
    let agent = Agent::start(&w);
    eventually(
        "all secrets to reach v2 after the restart",
        DEADLINE,
        || {
            (0..N)
                .all(|i| {
                    w.value(&format!("app/K{i:02}")).as_deref() == Some(&format!("v2-{i}")[..])
                })
                .then_some(())
        },
        || w.sync_status("app")["counts"].to_string(),
    );
    let s = w.wait_synced("app");
    assert_eq!(s["counts"]["synced"], N + 1, "{s}");
    // The held writes of the killed agent land at `killed_at + hold` at the latest.
    let landed = killed_at + hold + Duration::from_millis(500);
    std::thread::sleep(landed.saturating_duration_since(Instant::now()));
    w.wait_quiet(settle());

    for i in 0..N {
        let name = format!("app/K{i:02}");
        assert_eq!(
            w.versions(&name),
            2,
            "{name}: one version per distinct value (v1, v2); a retried write made a duplicate"
        );
        assert_eq!(w.value(&name).as_deref(), Some(&format!("v2-{i}")[..]));
    }
    // The race this test is about did happen: the restarted agent wrote
    // secrets whose earlier write was still held, with the same token.
    let bodies = w.proxy.bodies("PutSecretValue");
    let token = |id: &str, nth: usize| {
        bodies
            .iter()
            .filter(|b| b["SecretId"] == id)
            .nth(nth)
            .map(|b| b["ClientRequestToken"].clone())
    };
    let rewritten: Vec<&String> = sent_before_kill
        .iter()
        .filter(|id| token(id, 1).is_some())
        .collect();
    assert!(
        !rewritten.is_empty(),
        "the restarted agent re-sent none of the {} held writes (it read AWS after they landed); the race was not exercised",
        sent_before_kill.len()
    );
    for id in &rewritten {
        assert_eq!(
            token(id, 0),
            token(id, 1),
            "{id}: the retry after restart must carry the same ClientRequestToken"
        );
    }

    assert_eq!(w.versions("app/TOKEN"), 1);
    assert_eq!(w.proxy.count("DeleteSecret"), 0, "{:?}", w.proxy.calls());
    assert_eq!(w.proxy.count("CreateSecret"), 0, "{:?}", w.proxy.calls());
    agent.stop();
}

#[test]
fn remove_schedules_deletion_only_for_a_sync_gone_from_the_config() {
    let w = World::new();
    let keep = w.write("keep/app.env", "K=1\n");
    let gone = w.write("gone/app.env", &format!("G1=a\nG2=b\nTOKEN={CANARY}\n"));
    let opts = AgentOpts::default();
    let keep_entry = sync_entry("keep", &[keep], "");
    let gone_entry = sync_entry("gone", &[gone], "");
    let config = w.config(&opts, &[keep_entry.clone(), gone_entry]);
    let cfg = config.to_str().unwrap().to_string();
    let agent = Agent::start(&w);
    w.wait_synced("keep");
    w.wait_synced("gone");
    w.proxy.reset_counts();

    // Refused while the sync is present and enabled.
    let out = w.cli(&["remove", "--config", &cfg, "gone", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("enabled"), "{}", out.stderr);
    assert_eq!(w.proxy.writes(), 0);

    // Taken out of the config (and the agent reloaded): the agent leaves its
    // secrets alone; `remove` without --yes and without a TTY refuses.
    w.config(&opts, &[keep_entry]);
    let sock = w.socket();
    let out = w.cli(&["reload", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = w.cli(&["remove", "--config", &cfg, "gone"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());

    let out = w.cli(&["remove", "--config", &cfg, "gone", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    for name in ["gone/G1", "gone/G2", "gone/TOKEN"] {
        assert!(
            w.pending_deletion(name),
            "{name} not scheduled for deletion"
        );
        assert!(out.stdout.contains(name), "{}", out.stdout);
    }
    assert!(!w.pending_deletion("keep/K"));
    let deletes = w.proxy.bodies("DeleteSecret");
    assert_eq!(deletes.len(), 3, "{deletes:?}");
    for d in &deletes {
        assert_eq!(d["RecoveryWindowInDays"], 7, "{d}");
        assert_ne!(d["ForceDeleteWithoutRecovery"], true, "{d}");
    }
    assert_eq!(w.proxy.writes(), 3, "{:?}", w.proxy.calls());

    // Again: nothing left to remove. The remaining sync is untouched.
    let out = w.cli(&["remove", "--config", &cfg, "gone", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = w.cli(&["resync", "--socket", sock.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(w.value("keep/K").as_deref(), Some("1"));
    assert_eq!(w.proxy.writes(), 3, "{:?}", w.proxy.calls());
    agent.stop();
}

#[test]
fn status_human_output() {
    let w = World::new();
    let file = w.write("app/app.env", &before());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();
    let sock = sock.to_str().unwrap();

    let out = w.cli(&["status", "--socket", sock]);
    assert_eq!(out.code, 0, "{out:?}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("app "))
        .unwrap_or_else(|| panic!("no row for sync app:\n{}", out.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    // name, status, secrets, synced, pending, conflict, error, "N s ago"
    assert_eq!(
        &cols[..7],
        ["app", "SYNCED", "3", "3", "0", "0", "0"],
        "{row}"
    );
    assert!(row.contains("ago"), "{row}");
    assert!(out.stdout.contains("e2e-agent"), "{}", out.stdout);

    let out = w.cli(&["status", "--socket", sock, "app"]);
    assert_eq!(out.code, 0, "{out:?}");
    for key in ["A", "B", "TOKEN"] {
        let name = format!("app/{key}");
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}:\n{}", out.stdout));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[..3], [key, name.as_str(), "SYNCED"], "{line}");
    }

    let out = w.cli(&["status", "--socket", sock, "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
    let missing = w.path("run/none.sock");
    let out = w.cli(&["status", "--socket", missing.to_str().unwrap()]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
    agent.stop();
}
