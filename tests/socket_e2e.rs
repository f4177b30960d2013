//! End-to-end tests of the agent's control socket: the protocol over a raw
//! `UnixStream`, the CLI's exit codes, peer-credential checks, abuse, and
//! socket ownership between agents.

mod agent_support;
mod support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use agent_support::{
    Agent, AgentOpts, CANARY, Conn, DEADLINE, World, assert_error, eventually, sync_entry,
};
use serde_json::{Value, json};

fn app_env() -> String {
    format!("A=1\nB=2\nTOKEN={CANARY}\n")
}

#[test]
fn every_command_and_error_code_over_the_raw_protocol() {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    let opts = AgentOpts::default();
    let config = w.config(&opts, &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let mut c = Conn::open(&w.socket());

    // status: the whole document, id echoed.
    let r = c.call(&json!({"id": 1, "cmd": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 1);
    let st = &r["result"];
    assert_eq!(st["agent"]["id"], "e2e-agent");
    assert_eq!(st["agent"]["pid"], agent.pid());
    assert_eq!(st["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(st["agent"]["config_error"].is_null());
    assert!(
        st["agent"]["started_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{st}"
    );
    let app = &st["syncs"][0];
    assert_eq!(app["name"], "app");
    assert_eq!(app["sync_status"], "SYNCED");
    assert_eq!(app["counts"]["secrets"], 3);
    assert_eq!(app["counts"]["synced"], 3);
    assert_eq!(app["files"][0]["status"], "ok");
    assert_eq!(app["files"][0]["keys"], 3);
    assert_eq!(app["secrets"].as_array().unwrap().len(), 3);
    assert_status_shape(st);
    // version_id is AWS's current version.
    let a = app["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "A")
        .unwrap();
    let current = w.rt.block_on(async {
        w.client
            .get_secret_value()
            .secret_id("app/A")
            .send()
            .await
            .unwrap()
            .version_id
    });
    assert_eq!(a["version_id"].as_str(), current.as_deref(), "{a}");

    // status narrowed to one sync; unknown sync.
    let r = c.call(&json!({"id": "two", "cmd": "status", "sync": "app"}));
    assert_eq!(
        (r["ok"].clone(), r["id"].clone()),
        (json!(true), json!("two"))
    );
    assert_eq!(r["result"]["syncs"].as_array().unwrap().len(), 1);
    let id = json!({"n": [3, "x"]});
    let r = c.call(&json!({"id": id, "cmd": "status", "sync": "nope"}));
    let msg = assert_error(&r, "not_found", &id);
    assert!(msg.contains("nope"), "{msg}");

    // plan: all, one, unknown. Nothing pending.
    let r = c.call(&json!({"id": 4, "cmd": "plan"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 4);
    assert_eq!(r["result"]["syncs"][0]["name"], "app");
    assert_eq!(r["result"]["syncs"][0]["counts"]["unchanged"], 3, "{r}");
    assert_eq!(r["result"]["syncs"][0]["counts"]["create"], 0, "{r}");
    let r = c.call(&json!({"id": 5, "cmd": "plan", "sync": "app"}));
    assert_eq!(r["ok"], true, "{r}");
    let r = c.call(&json!({"id": 6, "cmd": "plan", "sync": "nope"}));
    assert_error(&r, "not_found", &json!(6));

    // Several requests in one write: answered in order on the connection.
    c.send_raw(
        b"{\"id\":10,\"cmd\":\"status\"}\n{\"id\":11,\"cmd\":\"plan\",\"sync\":\"app\"}\n{\"id\":12,\"cmd\":\"status\",\"sync\":\"nope\"}\n",
    )
    .unwrap();
    let replies: Vec<Value> = (0..3).map(|_| c.read_reply().unwrap()).collect();
    let ids: Vec<&Value> = replies.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&json!(10), &json!(11), &json!(12)]);
    assert_eq!(replies[0]["ok"], true);
    assert_eq!(replies[1]["ok"], true);
    assert_eq!(replies[2]["error"]["code"], "not_found");

    // resync: all, one, unknown. In step already: no writes.
    w.proxy.reset_counts();
    let r = c.call(&json!({"id": 20, "cmd": "resync"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 20);
    assert_eq!(r["result"]["syncs"][0]["sync_status"], "SYNCED", "{r}");
    let r = c.call(&json!({"id": 21, "cmd": "resync", "sync": "app"}));
    assert_eq!(r["result"]["syncs"][0]["name"], "app", "{r}");
    let r = c.call(&json!({"id": 22, "cmd": "resync", "sync": "nope"}));
    assert_error(&r, "not_found", &json!(22));
    assert!(w.proxy.count("ListSecrets") >= 2, "resync read nothing");
    assert_eq!(w.proxy.writes(), 0, "{:?}", w.proxy.calls());

    // Two of three keys leave the file: the deletion guard holds the
    // deletes (sync FAILED) until a resync with allow_deletes.
    std::fs::write(&file, "A=1\n").unwrap();
    let s = eventually(
        "the deletion guard to trip",
        DEADLINE,
        || {
            let s = w.sync_status("app");
            (s["sync_status"] == "FAILED").then_some(s)
        },
        || w.sync_status("app").to_string(),
    );
    assert!(s["last_sync_message"].is_string(), "{s}");
    let r = c.call(&json!({"id": 23, "cmd": "resync", "sync": "app"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["syncs"][0]["sync_status"], "FAILED", "{r}");
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    let r = c.call(&json!({"id": 24, "cmd": "resync", "sync": "app", "allow_deletes": true}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 24);
    assert_eq!(r["result"]["syncs"][0]["sync_status"], "SYNCED", "{r}");
    assert_eq!(w.proxy.count("DeleteSecret"), 2, "{:?}", w.proxy.calls());
    assert!(w.pending_deletion("app/B") && w.pending_deletion("app/TOKEN"));
    assert!(!w.pending_deletion("app/A"));

    // reload: fine, then an invalid config (old one kept), then fine again.
    let r = c.call(&json!({"id": 30, "cmd": "reload"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["reloaded"], true, "{r}");
    let valid = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        valid.replace("debounce:", "debounce: 1s\n  debounse:"),
    )
    .unwrap();
    let r = c.call(&json!({"id": 31, "cmd": "reload"}));
    let msg = assert_error(&r, "invalid_config", &json!(31));
    assert!(
        msg.contains(&format!("{}:", config.display())) && msg.contains("debounse"),
        "invalid_config should carry file:line:col errors: {msg}"
    );
    let r = c.call(&json!({"id": 32, "cmd": "status"}));
    assert!(r["result"]["agent"]["config_error"].is_string(), "{r}");
    std::fs::write(&config, &valid).unwrap();
    let r = c.call(&json!({"id": 33, "cmd": "reload"}));
    assert_eq!(r["ok"], true, "{r}");

    // bad_request: invalid JSON (id unknown: null), unknown cmd, unknown
    // field, missing cmd, wrong type (id still echoed when readable).
    c.send_raw(b"{not json\n").unwrap();
    assert_error(&c.read_reply().unwrap(), "bad_request", &Value::Null);
    let r = c.call(&json!({"id": 40, "cmd": "frobnicate"}));
    let msg = assert_error(&r, "bad_request", &json!(40));
    assert!(msg.contains("frobnicate"), "{msg}");
    let r = c.call(&json!({"id": 41, "cmd": "status", "bogus": true}));
    assert_error(&r, "bad_request", &json!(41));
    let r = c.call(&json!({"id": 42}));
    assert_error(&r, "bad_request", &json!(42));
    let r = c.call(&json!({"id": 43, "cmd": "resync", "allow_deletes": "yes"}));
    assert_error(&r, "bad_request", &json!(43));
    // A request without an id gets `null` back.
    let r = c.call(&json!({"cmd": "status"}));
    assert_eq!(r["ok"], true);
    assert!(r["id"].is_null(), "{r}");
    // The connection survived all of that.
    let r = c.call(&json!({"id": 44, "cmd": "status"}));
    assert_eq!((r["ok"].clone(), r["id"].clone()), (json!(true), json!(44)));

    // Over 64 KiB: bad_request, then the connection is closed.
    let mut big = Conn::open(&w.socket());
    let pad = "x".repeat(70 * 1024);
    let line = format!("{{\"id\":50,\"cmd\":\"status\",\"sync\":\"{pad}\"}}\n");
    let _ = big.send_raw(line.as_bytes()); // may fail once the agent hangs up
    let r = big
        .read_reply()
        .expect("a reply to an oversize request before the close");
    let msg = assert_error(&r, "bad_request", &Value::Null);
    assert!(msg.contains("65536") || msg.contains("64"), "{msg}");
    assert!(big.read_reply().is_none(), "connection should be closed");

    agent.stop();
}

/// Every field of the §6 status document is there, with the right type.
fn assert_status_shape(st: &Value) {
    let time = |v: &Value, what: &str| {
        let t = v
            .as_str()
            .unwrap_or_else(|| panic!("{what} is not a time: {v}"));
        assert!(
            t.ends_with('Z') && humantime_like(t),
            "{what} not RFC 3339 UTC: {t}"
        );
    };
    let agent = &st["agent"];
    for k in ["id", "version", "config_path"] {
        assert!(agent[k].is_string(), "agent.{k}: {agent}");
    }
    assert!(agent["pid"].is_u64(), "{agent}");
    time(&agent["started_at"], "agent.started_at");
    time(&agent["config_loaded_at"], "agent.config_loaded_at");
    assert!(agent.get("config_error").is_some(), "{agent}");
    for s in st["syncs"].as_array().unwrap() {
        for k in [
            "last_sync_message",
            "import_status",
            "last_import_message",
            "last_imported_at",
            "remove_status",
            "last_remove_message",
            "last_removed_at",
            "last_synced_at",
        ] {
            assert!(s.get(k).is_some(), "sync.{k} missing: {s}");
        }
        for k in ["name", "sync_status", "region", "mapping"] {
            assert!(s[k].is_string(), "sync.{k}: {s}");
        }
        assert!(
            s["enabled"].is_boolean() && s["auto_sync"].is_boolean(),
            "{s}"
        );
        time(&s["last_synced_at"], "sync.last_synced_at");
        for f in s["files"].as_array().unwrap() {
            assert!(f["path"].is_string() && f["status"].is_string(), "{f}");
            assert!(f.get("error").is_some() && f["keys"].is_u64(), "{f}");
            time(&f["read_at"], "file.read_at");
        }
        for k in [
            "secrets", "synced", "pending", "conflict", "error", "deleted",
        ] {
            assert!(s["counts"][k].is_u64(), "counts.{k}: {s}");
        }
        for x in s["secrets"].as_array().unwrap() {
            for k in ["key", "name", "state"] {
                assert!(x[k].is_string(), "secret.{k}: {x}");
            }
            assert!(
                x.get("message").is_some() && x.get("version_id").is_some(),
                "{x}"
            );
            time(&x["last_synced_at"], "secret.last_synced_at");
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]Z`.
fn humantime_like(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && t[..4].bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn cli_resync_and_reload_exit_codes() {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    let config = w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();
    let sock = sock.to_str().unwrap();

    let out = w.cli(&["resync", "--socket", sock]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("app SYNCED"), "{}", out.stdout);
    let out = w.cli(&["resync", "--socket", sock, "app", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["syncs"][0]["name"], "app");
    let out = w.cli(&["resync", "--socket", sock, "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = w.cli(&["resync", "--socket", sock, "--no-wait"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("queued"), "{}", out.stdout);
    let out = w.cli(&["resync", "--socket", sock, "--no-wait", "nope"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = w.cli(&["reload", "--socket", sock]);
    assert_eq!(out.code, 0, "{out:?}");

    // A sync that is FAILED makes `resync` exit 1.
    let valid = std::fs::read_to_string(&config).unwrap();
    w.write("app/app.env", "A=1\nthis line is not dotenv\n");
    let out = w.cli(&["resync", "--socket", sock, "app"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    // Status names the file and line; nothing was deleted (last good view).
    let st = w.status_cli().unwrap();
    let f = &st["syncs"][0]["files"][0];
    assert_eq!(f["status"], "error", "{st}");
    let err = f["error"].as_str().unwrap_or("");
    assert!(
        err.contains("app/app.env:2"),
        "file error needs file:line: {err}"
    );
    assert_eq!(w.proxy.count("DeleteSecret"), 0);
    assert_eq!(w.value("app/TOKEN").as_deref(), Some(CANARY));
    std::fs::write(&config, format!("{valid}nope: 1\n")).unwrap();
    let out = w.cli(&["reload", "--socket", sock]);
    assert_eq!(out.code, 2, "{out:?}");
    agent.stop();

    // No agent: exit 3.
    let out = w.cli(&["status", "--socket", sock]);
    assert_eq!(out.code, 3, "{out:?}");
    let out = w.cli(&["resync", "--socket", sock]);
    assert_eq!(out.code, 3, "{out:?}");
    let out = w.cli(&["reload", "--socket", sock]);
    assert_eq!(out.code, 3, "{out:?}");
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const NOBODY: u32 = 65534;

#[test]
fn socket_permissions_and_peer_credentials() {
    if !is_root() {
        // CI runs as root; there this test must run, never skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "socket_permissions_and_peer_credentials needs root under CI"
        );
        eprintln!(
            "SKIPPED socket_permissions_and_peer_credentials: needs root to run a client as uid {NOBODY}"
        );
        return;
    }
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    let syncs = [sync_entry("app", &[file], "")];
    let open = AgentOpts {
        socket_mode: "0666",
        ..AgentOpts::default()
    };
    w.config(&open, &syncs);
    // Let other users reach the socket's directory.
    for dir in [w.path(""), w.agent_path("")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "socket mode {mode:o}");
    let sock = sock.to_str().unwrap();

    // Anyone who can connect may read; changing things needs privileges.
    let out = w.cli_with(&["status", "--json", "--socket", sock], Some(NOBODY));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["syncs"][0]["name"], "app");
    let out = w.cli_with(&["resync", "--socket", sock], Some(NOBODY));
    assert_eq!(out.code, 1, "forbidden resync: {out:?}");
    assert!(
        out.stderr.contains("65534") && out.stderr.contains("resync"),
        "{}",
        out.stderr
    );
    let out = w.cli_with(&["reload", "--socket", sock], Some(NOBODY));
    assert_eq!(out.code, 1, "forbidden reload: {out:?}");
    // A denied request with a made-up command (here the canary) is logged
    // without it; `agent.stop()` below fails the test on a leak.
    use std::os::unix::process::CommandExt;
    let request = format!("{{\"id\":1,\"cmd\":\"{CANARY}\"}}\n");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); \
             s.sendall(sys.argv[2].encode()); print(s.makefile().readline())",
            sock,
            &request,
        ])
        .uid(NOBODY)
        .gid(NOBODY)
        .current_dir("/")
        .output()
        .expect("run python3 as nobody");
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("\"forbidden\""), "{reply} {out:?}");
    eventually(
        "the denial to be logged",
        DEADLINE,
        || {
            agent
                .stderr()
                .contains("control request denied")
                .then_some(())
        },
        || agent.stderr_tail(),
    );
    let out = w.cli(&["resync", "--socket", sock]);
    assert_eq!(out.code, 0, "root may resync: {out:?}");
    agent.stop();

    // control.allow_uids lets that user resync.
    let allowed = AgentOpts {
        extra: "control:\n  allow_uids: [65534]\n",
        ..open.clone()
    };
    w.config(&allowed, &syncs);
    let agent = Agent::start(&w);
    let out = w.cli_with(&["resync", "--socket", sock], Some(NOBODY));
    assert_eq!(out.code, 0, "allowed uid resync: {out:?}");
    agent.stop();

    // Mode 0660: other users cannot even connect.
    w.config(&AgentOpts::default(), &syncs);
    let agent = Agent::start(&w);
    let mode = std::fs::metadata(sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    let out = w.cli_with(&["status", "--socket", sock], Some(NOBODY));
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.to_lowercase().contains("permission denied"),
        "{}",
        out.stderr
    );
    agent.stop();
}

/// Reads one line from a connection in non-blocking mode: `Ok(Some)` a
/// complete line, `Ok(None)` nothing yet, `Err` closed before a full line.
fn poll_line(stream: &mut UnixStream, buf: &mut Vec<u8>) -> Result<Option<Value>, String> {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes", buf.len())),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf[..i].to_vec();
                    return serde_json::from_slice(&line)
                        .map(Some)
                        .map_err(|e| format!("not JSON: {e}"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[test]
fn abuse_never_stops_the_agent() {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let mut agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();

    // Opened first and never used: closed by the agent after 10 s idle.
    let idle = UnixStream::connect(&sock).unwrap();
    let idle_since = Instant::now();

    // A 1 MB line.
    let mut big = Conn::open(&sock);
    let mut line = vec![b'{'; 1024 * 1024];
    line.push(b'\n');
    let _ = big.send_raw(&line);
    let r = big.read_reply().expect("a reply to the 1 MB line");
    assert_error(&r, "bad_request", &Value::Null);
    assert!(big.read_reply().is_none());
    drop(big);

    // Invalid UTF-8, then a good request on the same connection.
    let mut c = Conn::open(&sock);
    c.send_raw(b"\xff\xfe\xfd{\"id\":1,\"cmd\":\"status\"}\n")
        .unwrap();
    assert_error(&c.read_reply().unwrap(), "bad_request", &Value::Null);
    c.send_raw(b"{\"id\":\"\xc3\xa9\xff\",\"cmd\":\"status\"}\n")
        .unwrap();
    assert_error(&c.read_reply().unwrap(), "bad_request", &Value::Null);
    let r = c.call(&json!({"id": "after-utf8", "cmd": "status"}));
    assert_eq!(r["ok"], true, "{r}");

    // Random bytes (with newlines), then a good request: every line before
    // it gets bad_request.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut noise = Vec::with_capacity(8192);
    for _ in 0..8192 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        noise.push((seed >> 24) as u8);
    }
    let lines = noise.iter().filter(|b| **b == b'\n').count() + 1;
    noise.extend_from_slice(b"\n{\"id\":\"after-noise\",\"cmd\":\"status\"}\n");
    c.send_raw(&noise).unwrap();
    let mut replies = 0;
    loop {
        let r = c.read_reply().expect("connection closed during the noise");
        if r["id"] == "after-noise" {
            assert_eq!(r["ok"], true, "{r}");
            break;
        }
        assert_eq!(r["error"]["code"], "bad_request", "{r}");
        replies += 1;
        assert!(replies <= lines, "more replies than lines sent");
    }
    drop(c);

    // Half-closed clients: the request is answered, then the agent closes.
    let mut h = Conn::open(&sock);
    h.send_raw(b"{\"id\":\"half\",\"cmd\":\"status\"}").unwrap();
    h.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let r = h.read_reply().expect("reply to a half-closed client");
    assert_eq!(
        (r["ok"].clone(), r["id"].clone()),
        (json!(true), json!("half"))
    );
    assert!(h.read_reply().is_none());
    let mut h = Conn::open(&sock);
    h.stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(h.read_reply().is_none());
    drop(h);

    // 200 connections held open: at most 64 clients at once, the others
    // get `busy` and are closed.
    std::thread::sleep(Duration::from_millis(200)); // closed ones above release their slots
    let mut conns: Vec<UnixStream> = (0..200)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    for s in &conns {
        s.set_nonblocking(true).unwrap();
    }
    let mut bufs = vec![Vec::new(); conns.len()];
    let mut busy = vec![false; conns.len()];
    let mut poll_all = |busy: &mut Vec<bool>| {
        for (i, s) in conns.iter_mut().enumerate() {
            if busy[i] {
                continue;
            }
            match poll_line(s, &mut bufs[i]) {
                Ok(None) => {}
                Ok(Some(r)) => {
                    assert_error(&r, "busy", &Value::Null);
                    busy[i] = true;
                }
                Err(e) => panic!("connection {i}: {e} without a busy reply"),
            }
        }
    };
    // With the idle client connected, 63 of the 200 get a slot, the other
    // 137 a busy reply (a few more if a slot of a closed client above is
    // not released yet).
    let count = |busy: &Vec<bool>| busy.iter().filter(|b| **b).count();
    let deadline = Instant::now() + DEADLINE;
    while count(&busy) < 200 - 63 && Instant::now() < deadline {
        poll_all(&mut busy);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    poll_all(&mut busy);
    let n_busy = count(&busy);
    assert!(
        (200 - 63..=200 - 58).contains(&n_busy),
        "{n_busy} of 200 clients got busy; expected 137 (64 slots, one taken by the idle client)"
    );
    // Busy ones are closed; the idle (admitted) ones are served.
    for (i, s) in conns.iter_mut().enumerate() {
        if busy[i] {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            assert_eq!(
                s.read_to_end(&mut rest).unwrap(),
                0,
                "busy conn {i} not closed"
            );
        }
    }
    let admitted = busy.iter().position(|b| !b).unwrap();
    let mut a = Conn::from_stream(conns[admitted].try_clone().unwrap());
    a.stream.set_nonblocking(false).unwrap();
    let r = a.call(&json!({"id": "admitted", "cmd": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    drop(a);
    // The CLI meets a full house too.
    let s = sock.to_str().unwrap();
    let out = w.cli(&["status", "--socket", s]);
    assert_eq!(out.code, 3, "status while saturated: {out:?}");
    assert!(out.stderr.contains("too many"), "{}", out.stderr);

    drop(conns);
    eventually(
        "status to work once the clients are gone",
        DEADLINE,
        || w.status_cli(),
        || "status --json fails".into(),
    );
    assert!(agent.alive());

    // The idle connection is closed by the agent after about 10 s.
    let mut idle = idle;
    idle.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let n = idle
        .read_to_end(&mut rest)
        .expect("idle connection closed cleanly");
    let waited = idle_since.elapsed();
    assert_eq!(n, 0, "idle connection got data: {rest:?}");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(14)).contains(&waited),
        "idle connection closed after {waited:?}, expected about 10 s"
    );
    assert!(agent.alive());
    let st = w.status_cli().expect("status works after the abuse");
    assert_eq!(st["syncs"][0]["sync_status"], "SYNCED");
    agent.stop();
}

#[test]
fn one_agent_per_socket_and_stale_sockets_are_replaced() {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let first = Agent::start(&w);

    // A second agent on the same socket refuses to start, and leaves the
    // first one's socket alone.
    let mut second = Agent::spawn(&w);
    let st = second.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(2), "second agent: {st}");
    let err = second.stderr();
    assert!(
        err.contains("already running") && err.contains(w.socket().to_str().unwrap()),
        "second agent should say why: {}",
        second.stderr_tail()
    );
    assert!(w.status_cli().is_some(), "first agent lost its socket");
    first.stop();

    // A stale socket file (its listener is gone) is replaced.
    drop(UnixListener::bind(w.socket()).unwrap());
    assert!(w.socket().exists());
    let third = Agent::start(&w);
    w.wait_synced("app");
    third.stop();

    // Something that is not a socket is left alone: exit 2.
    std::fs::write(w.socket(), "not a socket").unwrap();
    let mut fourth = Agent::spawn(&w);
    let st = fourth.wait_exit(DEADLINE);
    assert_eq!(st.code(), Some(2), "{st}");
    assert!(
        fourth.stderr().contains("not a socket"),
        "{}",
        fourth.stderr_tail()
    );
    assert_eq!(std::fs::read_to_string(w.socket()).unwrap(), "not a socket");
}

/// Random byte streams (NUL, invalid UTF-8, lone CR, no final newline,
/// 1 MiB lines with and without a newline), each on its own connection and
/// then half-closed: every reply is a well-formed `bad_request` line, no
/// stream stops the agent, and status answers after each one. The number
/// of streams is `SECRETSYNC_FUZZ_CASES / 100` when set (default 40).
#[test]
fn fuzz_random_byte_streams_never_stop_the_agent() {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let mut agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();

    let streams = std::env::var("SECRETSYNC_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(40, |n| (n / 100).max(1));
    let mut seed: u64 = 0x243f_6a88_85a3_08d3;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    const SYNTAX: &[u8] = b"{}[]\":,\\\0\r\n\xff\xc3 ";
    let started = Instant::now();
    for i in 0..streams {
        let kind = i % 5;
        let len = match kind {
            3 | 4 => 1024 * 1024,
            _ => (next() % 16384) as usize,
        };
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| match next() % 4 {
                0 => next() as u8,
                1 => SYNTAX[(next() % SYNTAX.len() as u64) as usize],
                _ => b'a' + (next() % 26) as u8,
            })
            .collect();
        match kind {
            // No newline at all: one unterminated line, read at EOF.
            1 => bytes.retain(|b| *b != b'\n'),
            // Only NULs and invalid UTF-8 lead bytes, lines of them.
            2 => bytes.iter_mut().for_each(|b| {
                *b = [0u8, 0xff, 0xc3, 0xe2, b'\n'][(*b % 5) as usize];
            }),
            // A 1 MiB line without a newline.
            3 => bytes.retain(|b| *b != b'\n'),
            // A 1 MiB line, then a newline.
            4 => {
                bytes.retain(|b| *b != b'\n');
                bytes.push(b'\n');
            }
            _ => {}
        }
        let lines = bytes.split(|b| *b == b'\n').count();
        let mut c = Conn::open(&sock);
        let mut reader = Conn::from_stream(c.stream.try_clone().unwrap());
        let replies = std::thread::spawn(move || {
            let mut n = 0usize;
            while let Some(r) = reader.read_reply() {
                assert_error(&r, "bad_request", &Value::Null);
                n += 1;
            }
            n
        });
        // The agent closes a connection after an oversize line, so a write
        // may fail part-way; that is expected.
        let _ = c.send_raw(&bytes);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        let n = replies.join().expect("reply reader");
        assert!(n <= lines, "stream {i}: {n} replies to {lines} lines");
        if kind >= 3 {
            assert_eq!(n, 1, "stream {i}: one bad_request for an oversize line");
        }
        assert!(agent.alive(), "agent died on stream {i}");
        let r = Conn::open(&sock).call(&json!({"id": i, "cmd": "status"}));
        assert_eq!(r["ok"], true, "status after stream {i}: {r}");
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "streams too slow"
        );
    }
    let st = w.status_cli().expect("status works after the streams");
    assert_eq!(st["syncs"][0]["sync_status"], "SYNCED");
    agent.check_canary();
    agent.stop();
}

/// A client process run as another user: opens `n` connections to the
/// socket at once, then on each sends `request` `repeat` times, reading the
/// reply each time, and prints one JSON line of what came back:
/// `{"replies": [[code, ...] per connection], "messages": [first error
/// messages]}` where a code is `ok`, an error code, or `closed`. It then holds
/// its connections until its stdin closes.
const CLIENT_PY: &str = r#"
import json, socket, sys
path, n, repeat, request = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
conns = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    conns.append(s)
replies, messages, readers = [], [], []
for s in conns:
    s.settimeout(10)
    r = s.makefile("rb")
    readers.append(r)
    codes = []
    for _ in range(repeat):
        try:
            s.sendall(request.encode())
        except OSError:
            pass
        try:
            line = r.readline()
        except OSError:
            line = b""
        if not line:
            codes.append("closed")
            break
        reply = json.loads(line)
        if reply["ok"]:
            codes.append("ok")
        else:
            codes.append(reply["error"]["code"])
            if len(messages) < 3:
                messages.append(reply["error"]["message"])
    replies.append(codes)
print(json.dumps({"replies": replies, "messages": messages}), flush=True)
sys.stdin.read()
"#;

/// A [`CLIENT_PY`] run: its report, and the process holding its
/// connections until this is dropped.
struct Held {
    child: std::process::Child,
    replies: Vec<Vec<String>>,
    messages: Vec<String>,
}

impl Held {
    /// Runs the client as `uid` and waits for its report.
    fn run(sock: &std::path::Path, uid: u32, conns: usize, repeat: usize, request: &Value) -> Held {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        // The system interpreter: a per-user shim (pyenv under /root) is
        // out of reach once the uid is dropped.
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("python3");
        let mut child = Command::new(python)
            .args(["-c", CLIENT_PY])
            .arg(sock)
            .args([
                conns.to_string(),
                repeat.to_string(),
                format!("{request}\n"),
            ])
            .uid(uid)
            .gid(uid)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 as another user");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("client report");
        let report: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("client (uid {uid}) report is not JSON ({e}): {line:?}"));
        let replies = serde_json::from_value(report["replies"].clone()).unwrap();
        let messages = serde_json::from_value(report["messages"].clone()).unwrap();
        Held {
            child,
            replies,
            messages,
        }
    }

    /// How many replies had `code`.
    fn count(&self, code: &str) -> usize {
        self.replies.iter().flatten().filter(|c| *c == code).count()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A world whose socket other users can reach (mode 0666, directories 0755).
fn open_world(extra: &'static str) -> (World, String) {
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    let open = AgentOpts {
        socket_mode: "0666",
        extra,
        ..AgentOpts::default()
    };
    w.config(&open, &[sync_entry("app", &[file], "")]);
    for dir in [w.path(""), w.agent_path("")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let sock = w.socket().to_str().unwrap().to_string();
    (w, sock)
}

/// Returns false (test skipped) when not root, except under CI.
fn need_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root under CI"
    );
    eprintln!("SKIPPED {test}: needs root to run clients as other users");
    false
}

#[test]
fn per_uid_cap_and_reserved_slots_keep_root_served() {
    if !need_root("per_uid_cap_and_reserved_slots_keep_root_served") {
        return;
    }
    let (w, sock) = open_world("");
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let status = json!({"id": 1, "cmd": "status"});

    // One user asks for 12 connections: 8 are served, 4 get `busy`.
    let nobody = Held::run(sock.as_ref(), NOBODY, 12, 1, &status);
    assert_eq!(nobody.count("ok"), 8, "{:?}", nobody.replies);
    assert_eq!(nobody.count("busy"), 4, "{:?}", nobody.replies);
    assert!(
        nobody
            .messages
            .iter()
            .all(|m| m.contains("65534") && m.contains('8')),
        "{:?}",
        nobody.messages
    );
    // That user's CLI is refused too: exit 3, "cannot reach the agent".
    let out = w.cli_with(&["status", "--socket", &sock], Some(NOBODY));
    assert_eq!(out.code, 3, "status over the per-uid cap: {out:?}");
    assert!(out.stderr.contains("too many"), "{}", out.stderr);
    // Root gets an answer at once.
    let t = Instant::now();
    let out = w.cli(&["status", "--socket", &sock]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // Six more users take 8 each: 56 unprivileged clients in all, which is
    // every slot but the reserve. A seventh user finds the house full.
    let others: Vec<Held> = (60001..=60006)
        .map(|uid| {
            let h = Held::run(sock.as_ref(), uid, 8, 1, &status);
            assert_eq!(h.count("ok"), 8, "uid {uid}: {:?}", h.replies);
            h
        })
        .collect();
    let late = Held::run(sock.as_ref(), 60007, 1, 1, &status);
    assert_eq!(late.replies, [["busy"]], "{:?}", late.messages);
    assert!(late.messages[0].contains("too many"), "{:?}", late.messages);
    // Root still finds a slot: the CLI, and 8 connections held at once.
    let out = w.cli(&["status", "--socket", &sock]);
    assert_eq!(
        out.code, 0,
        "root status with other users at their caps: {out:?}"
    );
    let mut mine: Vec<Conn> = (0..8).map(|_| Conn::open(w.socket().as_ref())).collect();
    for (i, c) in mine.iter_mut().enumerate() {
        let r = c.call(&json!({"id": i, "cmd": "status"}));
        assert_eq!(r["ok"], true, "root connection {i}: {r}");
    }
    drop(mine);
    drop(others);
    drop(late);
    drop(nobody);
    agent.stop();
}

#[test]
fn five_hundred_connections_from_one_user_do_not_block_root() {
    if !need_root("five_hundred_connections_from_one_user_do_not_block_root") {
        return;
    }
    let (w, sock) = open_world("");
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let socket = w.socket();

    // Root asks for status in a loop while the flood runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = std::sync::Arc::clone(&stop);
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut calls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = Conn::open(&socket).call(&json!({"id": calls, "cmd": "status"}));
                assert_eq!(r["ok"], true, "root status during the flood: {r}");
                slowest = slowest.max(t.elapsed());
                calls += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (calls, slowest)
        })
    };
    let flood = Held::run(
        socket.as_ref(),
        NOBODY,
        500,
        1,
        &json!({"id": 1, "cmd": "status"}),
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (calls, slowest) = prober.join().expect("root prober");
    eprintln!("500-connection flood: {calls} root status calls, slowest {slowest:?}");
    assert_eq!(flood.count("ok"), 8, "{:?}", flood.messages);
    assert_eq!(flood.count("busy"), 492, "{:?}", flood.messages);
    assert!(calls > 0);
    assert!(
        slowest < Duration::from_secs(1),
        "root waited {slowest:?} for status during the flood"
    );
    // With the 8 still held, root's CLI answers at once.
    let t = Instant::now();
    let out = w.cli(&["status", "--socket", &sock]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(flood);
    agent.stop();
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn a_client_that_never_reads_is_closed_within_the_timeout() {
    use std::io::Write;
    let w = World::new();
    let file = w.write("app/app.env", &app_env());
    w.config(&AgentOpts::default(), &[sync_entry("app", &[file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let sock = w.socket();
    let before = rss_kib(agent.pid());

    // Pipeline status requests as fast as the agent takes them; never read.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_nonblocking(true).unwrap();
    let request = b"{\"id\":1,\"cmd\":\"status\"}\n";
    let started = Instant::now();
    let mut sent = 0usize;
    let mut partial = 0usize;
    let closed_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "a client that never reads was not closed after {:?} ({sent} requests sent)",
            started.elapsed()
        );
        match s.write(&request[partial..]) {
            Ok(n) => {
                partial += n;
                if partial == request.len() {
                    partial = 0;
                    sent += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ),
                    "{e}"
                );
                break started.elapsed();
            }
        }
    };
    // Closed about one idle timeout (10 s) after its replies stopped
    // draining, which happens within a moment of the first request.
    assert!(
        closed_after < Duration::from_secs(15),
        "closed after {closed_after:?}"
    );
    // What it gets when it finally reads is what the socket buffers held,
    // not everything it asked for.
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        rest.len() < 8 * 1024 * 1024,
        "{} bytes of replies were buffered for a client that never read",
        rest.len()
    );
    let after = rss_kib(agent.pid());
    eprintln!(
        "never-reading client: {sent} requests, closed after {closed_after:?}, {} bytes left to read, agent RSS {before} -> {after} KiB",
        rest.len()
    );
    assert!(
        after < before + 16 * 1024,
        "agent RSS grew from {before} KiB to {after} KiB"
    );
    let r = Conn::open(&sock).call(&json!({"id": "after", "cmd": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    agent.stop();
}

#[test]
fn plan_from_unlisted_users_is_rate_limited() {
    if !need_root("plan_from_unlisted_users_is_rate_limited") {
        return;
    }
    let (w, _sock) = open_world("control:\n  allow_uids: [60001]\n");
    let agent = Agent::start(&w);
    w.wait_synced("app");
    let socket = w.socket();
    let plan = json!({"id": 1, "cmd": "plan"});

    // A user outside control.allow_*: a burst of 2, then `busy`.
    let nobody = Held::run(socket.as_ref(), NOBODY, 1, 6, &plan);
    let codes = &nobody.replies[0];
    assert_eq!(codes[..2], ["ok", "ok"], "{codes:?} {:?}", nobody.messages);
    assert!(
        codes[2..].iter().filter(|c| *c == "busy").count() >= 3,
        "{codes:?}"
    );
    assert!(
        nobody
            .messages
            .iter()
            .any(|m| m.contains("plan") && m.contains("2 s")),
        "{:?}",
        nobody.messages
    );
    drop(nobody);
    // Root, and a uid in control.allow_uids, are not limited.
    let mut root = Conn::open(&socket);
    for i in 0..5 {
        let r = root.call(&json!({"id": i, "cmd": "plan"}));
        assert_eq!(r["ok"], true, "root plan {i}: {r}");
    }
    let listed = Held::run(socket.as_ref(), 60001, 1, 5, &plan);
    assert_eq!(listed.replies, [["ok"; 5]], "{:?}", listed.messages);
    drop(listed);
    // The bucket refills: one more plan after 2 s.
    std::thread::sleep(Duration::from_millis(2100));
    let again = Held::run(socket.as_ref(), NOBODY, 1, 1, &plan);
    assert_eq!(again.replies, [["ok"]], "{:?}", again.messages);
    drop(again);
    agent.stop();
}
