//! End-to-end tests of the CLI faces a newcomer meets first: `status`,
//! `resync`, `reload` finding an agent on a non-default socket through its
//! config, `status --check` for monitoring, what a failed pass logs, and
//! `check` without credentials. The real binary against a private moto.

mod agent_support;
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use agent_support::{Agent, AgentOpts, BIN, CANARY, DEADLINE, World, eventually, sync_entry};
use serde_json::Value;
use support::Fault;

/// Switches `world`'s agent.yaml to JSON logs (the harness writes text).
fn json_logs(config: &Path) {
    let text = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, text.replace("log_format: text", "log_format: json")).unwrap();
}

/// The agent's JSON log lines.
fn log_lines(agent: &Agent) -> Vec<Value> {
    agent
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or("")
}

#[test]
fn status_resync_reload_find_the_socket_through_the_config() {
    let w = World::new();
    let env = w.write("src/app.env", &format!("A=one\nTOKEN={CANARY}\n"));
    let cfg = w.config(&AgentOpts::default(), &[sync_entry("app", &[&env], "")]);
    let cfg_s = cfg.to_str().unwrap();
    assert_ne!(
        w.socket(),
        PathBuf::from("/run/secretsync/control.sock"),
        "the test agent must use a non-default socket"
    );
    let _agent = Agent::start(&w);
    w.wait_synced("app");

    // --config, and SECRETSYNC_CONFIG, without --socket.
    let out = w.cli(&["status", "--config", cfg_s]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("app") && out.stdout.contains("SYNCED"),
        "{out:?}"
    );
    let out = w.cli_env(&["status", "--json"], &[("SECRETSYNC_CONFIG", cfg_s)]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.json()["syncs"][0]["name"], "app");

    // --check: everything SYNCED is 0.
    let out = w.cli(&["status", "--check", "--config", cfg_s]);
    assert_eq!(out.code, 0, "{out:?}");

    let out = w.cli(&["resync", "--config", cfg_s]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "app SYNCED\n", "no trailing space");

    let out = w.cli(&["reload", "--config", cfg_s]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("config reloaded"), "{out:?}");

    // --socket wins over the config; a missing one points at the config's.
    let out = w.cli(&[
        "status",
        "--config",
        cfg_s,
        "--socket",
        "/nonexistent/x.sock",
    ]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("names another socket")
            && out.stderr.contains(w.socket().to_str().unwrap()),
        "{out:?}"
    );

    // With no config anywhere, the default socket is tried and the error
    // says how to point at another agent.
    if !Path::new("/etc/secretsync/agent.yaml").exists() {
        let out = w.cli(&["status"]);
        assert_eq!(out.code, 3, "{out:?}");
        assert!(out.stderr.contains("--config PATH"), "{out:?}");
    }

    // A config named explicitly that does not exist is a usage error.
    let out = w.cli(&["status", "--config", "/nonexistent/agent.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(!out.stderr.contains(":0:0"), "{out:?}");

    // A regular file is not "a stale socket".
    let out = w.cli(&["status", "--socket", cfg_s]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("is a regular file, not a control socket")
            && !out.stderr.contains("stale"),
        "{out:?}"
    );

    // --check with no agent is 3.
    let out = w.cli(&["status", "--check", "--socket", "/nonexistent/x.sock"]);
    assert_eq!(out.code, 3, "{out:?}");
}

#[test]
fn status_shows_the_config_path_absolute() {
    let w = World::new();
    let env = w.write("src/app.env", "A=one\n");
    w.config(&AgentOpts::default(), &[sync_entry("app", &[&env], "")]);
    let mut child = Command::new(BIN)
        .args(["run", "--config", "agent.yaml"])
        .current_dir(w.agent_path(""))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDAGENTE2E")
        .env("AWS_SECRET_ACCESS_KEY", "agent-e2e-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = eventually(
        "agent ready",
        DEADLINE,
        || w.status_cli(),
        || "no answer".into(),
    );
    let _ = child.kill();
    let _ = child.wait();
    let shown = status["agent"]["config_path"].as_str().unwrap().to_string();
    assert_eq!(Path::new(&shown), w.config_path(), "{shown}");
}

#[test]
fn a_failed_pass_logs_its_reason_and_check_exits_1() {
    let w = World::new();
    let env = w.write(
        "src/app.env",
        &format!("A=one\nB=bee\nC=sea\nTOKEN={CANARY}\n"),
    );
    let cfg = w.config(&AgentOpts::default(), &[sync_entry("app", &[&env], "")]);
    json_logs(&cfg);
    let agent = Agent::start(&w);
    w.wait_synced("app");
    // Three of four keys go: the deletion guard (0.5) trips.
    std::fs::write(&env, format!("TOKEN={CANARY}\n")).unwrap();
    let st = eventually(
        "app FAILED",
        DEADLINE,
        || {
            let s = w.sync_status("app");
            (s["sync_status"] == "FAILED").then_some(s)
        },
        || w.sync_status("app").to_string(),
    );
    let reason = st["last_sync_message"].as_str().unwrap().to_string();
    let failed = eventually(
        "a FAILED log line",
        DEADLINE,
        || {
            log_lines(&agent)
                .into_iter()
                .find(|l| message(l).contains("app FAILED"))
        },
        || agent.stderr_tail(),
    );
    assert_eq!(failed["level"], "ERROR", "{failed}");
    assert!(
        message(&failed).contains(&reason),
        "{failed}\nreason: {reason}"
    );

    let cfg_s = cfg.to_str().unwrap();
    let out = w.cli(&["status", "--check", "--config", cfg_s]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("sync app: FAILED"), "{out:?}");

    // A file that does not parse: the reason names file:line:col.
    std::fs::write(&env, format!("A=one\nB=\"open\nTOKEN={CANARY}\n")).unwrap();
    let out = w.cli(&["resync", "--config", cfg_s, "--allow-deletes"]);
    assert_ne!(out.code, 0, "{out:?}");
    let needle = format!("{}:2:", env.display());
    eventually(
        "a log line naming the parse error",
        DEADLINE,
        || {
            log_lines(&agent).into_iter().find(|l| {
                matches!(l["level"].as_str(), Some("ERROR" | "WARN"))
                    && message(l).contains(&needle)
            })
        },
        || agent.stderr_tail(),
    );
    agent.check_canary();
}

#[test]
fn a_retried_pass_logs_its_cause() {
    let w = World::new();
    let env = w.write("src/app.env", "A=one\n");
    let cfg = w.config(&AgentOpts::default(), &[sync_entry("app", &[&env], "")]);
    json_logs(&cfg);
    w.proxy.inject(Fault::ServerError {
        op: None,
        status: 503,
        count: 1_000_000,
    });
    let agent = Agent::start(&w);
    let line = eventually(
        "a WARN line for the retry",
        Duration::from_secs(20),
        || {
            log_lines(&agent)
                .into_iter()
                .find(|l| l["level"] == "WARN" && message(l).contains("will retry"))
        },
        || agent.stderr_tail(),
    );
    assert!(message(&line).starts_with("app PENDING"), "{line}");
    assert!(message(&line).contains("InternalServiceError"), "{line}");
    let out = w.cli(&["status", "--check", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("PENDING (retrying)"), "{out:?}");
    w.proxy.clear_faults();
}

/// Runs the binary with no AWS credentials anywhere, plus `env`.
fn no_credentials(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn one_sync_config(dir: &Path) -> PathBuf {
    let p = dir.join("agent.yaml");
    std::fs::write(
        &p,
        format!(
            "agent:\n  id: t\n  state_dir: {}\naws:\n  region: us-east-1\n  call_timeout: 2s\nsyncs:\n  - name: app\n    source:\n      files: [{}]\n",
            dir.join("state").display(),
            dir.join("app.env").display()
        ),
    )
    .unwrap();
    p
}

/// An IMDS stand-in that answers every request `403`, as a host that
/// blocks the metadata service does.
fn forbidding_imds() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\ndenied",
            );
        }
    });
    format!("http://{addr}")
}

#[test]
fn check_without_credentials_names_the_chain_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = one_sync_config(dir.path());
    let cfg_s = cfg.to_str().unwrap();
    let imds = forbidding_imds();
    for env in [
        vec![("AWS_EC2_METADATA_DISABLED", "true")],
        vec![("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str())],
    ] {
        let (code, stdout, stderr) = no_credentials(&["check", "--config", cfg_s], &env);
        assert_eq!(code, 3, "{env:?}\n{stdout}\n{stderr}");
        assert!(stdout.contains("config OK (1 sync)\n"), "{stdout}");
        assert!(
            stdout.contains("no AWS credentials found (tried: environment variables")
                && stdout.contains("IMDS")
                && stdout.contains("endpoint_url")
                && stdout.contains("dummy credentials"),
            "{env:?}\n{stdout}"
        );
        assert!(
            !stderr.contains("Response {") && !stderr.contains("WARN"),
            "{env:?}: SDK debug dump on stderr:\n{stderr}"
        );
    }
}

#[test]
fn a_missing_config_has_no_position_and_names_the_flag() {
    let (code, _, stderr) = no_credentials(
        &["check", "--offline", "--config", "/nonexistent/a.yaml"],
        &[],
    );
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("/nonexistent/a.yaml: cannot open config file")
            && stderr.contains("--config PATH or SECRETSYNC_CONFIG"),
        "{stderr}"
    );
}
