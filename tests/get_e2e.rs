//! End-to-end tests of `secretsync get`: the real binary against a private
//! moto. The value is the one thing it prints: stdout holds exactly the
//! value; stderr (errors and debug logs) never contains it.

mod agent_support;
mod support;

use std::io::Read;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use agent_support::{AgentOpts, BIN, World, sync_entry};

/// The value `get` must print, and nothing else may.
const VALUE: &str = "get-canary-8c41-printed-on-stdout-only";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn command(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("get")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDGETE2E")
        .env("AWS_SECRET_ACCESS_KEY", "get-e2e-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    cmd
}

/// `secretsync get --config CONFIG ARGS` with stdout on a pipe.
fn get(config: &Path, args: &[&str]) -> Run {
    let out = command(config, args).output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains(VALUE),
        "the value leaked on stderr of get {args:?}"
    );
    run
}

/// Two syncs: `app` one-to-one (`app/KEY`), `bundle` many-to-one
/// (`bundle/all`), both written by a `sync` first.
fn world() -> (World, std::path::PathBuf) {
    let w = World::new();
    let app = w.write("src/app.env", &format!("TOKEN={VALUE}\nPORT=8080\n"));
    let bundle = w.write("src/bundle.env", &format!("API_KEY={VALUE}\nMODE=fast\n"));
    let cfg = w.config(
        &AgentOpts::default(),
        &[
            sync_entry("app", &[&app], ""),
            format!(
                "  - name: bundle\n    source:\n      files: [\"{}\"]\n    destination:\n      mapping: many-to-one\n      secret_name: bundle/all\n",
                bundle.display()
            ),
        ],
    );
    let mut sync = Command::new(BIN);
    let out = sync
        .args(["sync", "--config", cfg.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDGETE2E")
        .env("AWS_SECRET_ACCESS_KEY", "get-e2e-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (w, cfg)
}

#[test]
fn get_prints_owned_values_exactly() {
    let (w, cfg) = world();

    let r = get(&cfg, &["--sync", "app", "TOKEN"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, VALUE), "{}", r.stderr);
    let r = get(&cfg, &["--sync", "app", "PORT"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "8080"), "{}", r.stderr);
    let r = get(&cfg, &["--sync", "bundle", "API_KEY"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, VALUE), "{}", r.stderr);

    // Missing secret, missing JSON key: 1, nothing on stdout.
    for (sync, key) in [("app", "NOPE"), ("bundle", "NOPE")] {
        let r = get(&cfg, &["--sync", sync, key]);
        assert_eq!(r.code, 1, "{sync} {key}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert!(r.stderr.contains("NOPE"), "{}", r.stderr);
    }

    // Unknown sync, bad key, missing KEY: usage, 2.
    assert_eq!(get(&cfg, &["--sync", "nope", "TOKEN"]).code, 2);
    assert_eq!(get(&cfg, &["--sync", "app", "not a key"]).code, 2);
    assert_eq!(get(&cfg, &["--sync", "app"]).code, 2);

    // A same-named secret this sync does not own: 1, unless --any.
    w.create_foreign(
        "app/FOREIGN",
        VALUE,
        &[
            ("secretsync:agent", "someone-else"),
            ("secretsync:sync", "app"),
        ],
    );
    let r = get(&cfg, &["--sync", "app", "FOREIGN"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("not owned") && r.stderr.contains("--any"),
        "{}",
        r.stderr
    );
    let r = get(&cfg, &["--sync", "app", "FOREIGN", "--any"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, VALUE), "{}", r.stderr);
}

#[test]
fn get_reports_an_unreachable_aws_as_3() {
    let (w, cfg) = world();
    let text = std::fs::read_to_string(&cfg).unwrap();
    // A port nobody listens on, and quick attempts.
    let dead = w.path("dead.yaml");
    std::fs::write(
        &dead,
        text.replace(&w.proxy.endpoint, "http://127.0.0.1:9")
            .replace("call_timeout: 2s", "call_timeout: 500ms"),
    )
    .unwrap();
    let r = get(&dead, &["--sync", "app", "TOKEN"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

/// stdout on a pseudo-terminal: refused (2) without `--reveal`, printed
/// with it. Returns (exit code, what the terminal received).
fn on_terminal(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with null name/termios/winsize writes the two fds.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty");
    // SAFETY: both fds were just opened by openpty and are owned here.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            std::fs::File::from_raw_fd(slave),
        )
    };
    let child = command(cfg, args)
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The child has exited and its copy of the slave is closed: read what
    // is buffered (EIO once empty).
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.ends_with(b"\n") {
            break;
        }
    }
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&seen).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn get_refuses_a_terminal_without_reveal() {
    let (_w, cfg) = world();
    let (code, _, stderr) = on_terminal(&cfg, &["--sync", "app", "TOKEN"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--reveal"), "{stderr}");
    assert!(!stderr.contains(VALUE));
    let (code, seen, stderr) = on_terminal(&cfg, &["--sync", "app", "TOKEN", "--reveal"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(seen.trim_end(), VALUE);
    assert!(!stderr.contains(VALUE));
}
