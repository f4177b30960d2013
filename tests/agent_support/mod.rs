//! Harness for the agent end-to-end tests (`agent_e2e.rs`, `socket_e2e.rs`):
//! a [`World`] (private moto behind a [`FaultProxy`], a temp dir, an SDK client
//! straight to moto for setup and inspection), the spawned `secretsync run`
//! ([`Agent`], killed on drop), CLI runs with a deadline ([`World::cli`]), a raw
//! control-socket client ([`Conn`]) and deadline-based polling helpers.
//!
//! Every output of every spawned process is checked for [`CANARY`], a secret
//! value the tests put into source files: it must never be printed.

// Each test file compiles its own copy and uses only part of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{FaultProxy, Moto};

/// A secret value that must never appear in any output.
pub const CANARY: &str = "canary-agent-3b91e7-must-not-leak";
/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_secretsync");
/// The default deadline for "eventually" checks.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Debounce configured for every agent (keep in step with [`AgentOpts`]).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Polls `check` every 25 ms until it returns `Some`, or panics after
/// `limit` with `what` and the last value seen by `describe`.
pub fn eventually<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\nlast state: {}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `agent:` settings that differ between tests.
#[derive(Clone, Debug)]
pub struct AgentOpts {
    pub socket_mode: &'static str,
    pub reconcile_interval: &'static str,
    pub shutdown_timeout: &'static str,
    /// Extra top-level YAML (e.g. a `control:` block), inserted before `syncs:`.
    pub extra: &'static str,
    /// `agent.metrics_listen`, when set.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for AgentOpts {
    fn default() -> Self {
        AgentOpts {
            socket_mode: "0660",
            reconcile_interval: "0",
            shutdown_timeout: "5s",
            extra: "",
            metrics_listen: None,
        }
    }
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// One test's private AWS emulator, proxy and directory.
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub moto: Moto,
    pub proxy: FaultProxy,
    /// SDK client straight to moto (not counted by the proxy).
    pub client: aws_sdk_secretsmanager::Client,
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint);
        let client = rt.block_on(moto.client());
        World {
            rt,
            moto,
            proxy,
            client,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `text` to `rel` (creating parent directories), returns the path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// The agent's own files (config, state, socket, logs) live under
    /// `agent/`, away from every watched source directory: a log written into
    /// a watched directory would wake the agent up on its own output.
    pub fn agent_path(&self, rel: &str) -> PathBuf {
        self.path("agent").join(rel)
    }

    pub fn socket(&self) -> PathBuf {
        self.agent_path("run/control.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.agent_path("agent.yaml")
    }

    /// Writes agent.yaml with `opts` and the given `syncs:` entries (see
    /// [`sync_entry`]).
    pub fn config(&self, opts: &AgentOpts, syncs: &[String]) -> PathBuf {
        self.config_for(&self.agent_path(""), "e2e-agent", opts, syncs)
    }

    /// Like [`World::config`] for another agent on the same moto: its own
    /// `agent.id`, with config, socket (`run/control.sock`) and state
    /// under `dir`. Start it with [`Agent::spawn_at`].
    pub fn config_for(&self, dir: &Path, id: &str, opts: &AgentOpts, syncs: &[String]) -> PathBuf {
        let text = format!(
            "agent:\n  id: {id}\n  socket: {socket}\n  socket_mode: \"{mode}\"\n  state_dir: {state}\n  debounce: {debounce}ms\n  reconcile_interval: {interval}\n  shutdown_timeout: {shutdown}\n  log_format: text\n  log_level: debug\n{metrics}aws:\n  region: us-east-1\n  endpoint_url: {ep}\n  max_write_tps: 1000\n  max_read_tps: 1000\n  call_timeout: 2s\n{extra}syncs:\n{syncs}",
            socket = dir.join("run/control.sock").display(),
            mode = opts.socket_mode,
            state = dir.join("state").display(),
            debounce = DEBOUNCE.as_millis(),
            interval = opts.reconcile_interval,
            shutdown = opts.shutdown_timeout,
            ep = self.proxy.endpoint,
            extra = opts.extra,
            metrics = opts
                .metrics_listen
                .map(|a| format!("  metrics_listen: \"{a}\"\n"))
                .unwrap_or_default(),
            syncs = syncs.concat(),
        );
        let p = dir.join("agent.yaml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Runs the CLI with `args` (20 s deadline), checks the canary.
    pub fn cli(&self, args: &[&str]) -> Out {
        self.cli_with(args, None)
    }

    /// Like [`World::cli`], as another user when `uid` is set.
    pub fn cli_with(&self, args: &[&str], uid: Option<u32>) -> Out {
        self.cli_full(args, uid, &[])
    }

    /// Like [`World::cli`], with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.cli_full(args, None, env)
    }

    fn cli_full(&self, args: &[&str], uid: Option<u32>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        agent_env(&mut cmd);
        cmd.envs(env.iter().copied());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid).current_dir("/");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        let mut so = child.stdout.take().unwrap();
        let mut se = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = so.read_to_string(&mut s);
            s
        });
        let t_err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = se.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`secretsync {args:?}` did not finish within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = Out {
            code: status.code().unwrap_or(-1),
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        };
        assert!(
            !out.stdout.contains(CANARY) && !out.stderr.contains(CANARY),
            "canary leaked in the output of `secretsync {args:?}`"
        );
        out
    }

    /// `secretsync status --json` through the CLI; `None` unless it exits 0.
    pub fn status_cli(&self) -> Option<Value> {
        let sock = self.socket();
        let out = self.cli(&["status", "--json", "--socket", sock.to_str().unwrap()]);
        (out.code == 0).then(|| out.json())
    }

    /// The status result over a raw connection (panics if the agent does not answer).
    pub fn status(&self) -> Value {
        let mut c = Conn::open(&self.socket());
        let reply = c.call(&json!({"id": "st", "cmd": "status"}));
        assert_eq!(reply["ok"], true, "status failed: {reply}");
        reply["result"].clone()
    }

    /// The status entry of sync `name`.
    pub fn sync_status(&self, name: &str) -> Value {
        self.sync_status_at(&self.socket(), name)
    }

    /// The status entry of sync `name` of the agent listening on `socket`.
    pub fn sync_status_at(&self, socket: &Path, name: &str) -> Value {
        let mut c = Conn::open(socket);
        let reply = c.call(&json!({"id": "st", "cmd": "status"}));
        assert_eq!(reply["ok"], true, "status failed: {reply}");
        let st = &reply["result"];
        st["syncs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Waits until sync `name` is SYNCED after a successful pass.
    pub fn wait_synced(&self, name: &str) -> Value {
        eventually(
            &format!("sync {name} SYNCED"),
            DEADLINE,
            || {
                let s = self.sync_status(name);
                (s["sync_status"] == "SYNCED" && !s["last_synced_at"].is_null()).then_some(s)
            },
            || self.sync_status(name).to_string(),
        )
    }

    /// Waits until sync `name` has finished a pass (SYNCED or FAILED, files
    /// read): its AWS calls are done.
    pub fn wait_pass_done(&self, name: &str) -> Value {
        eventually(
            &format!("a finished pass of sync {name}"),
            DEADLINE,
            || {
                let s = self.sync_status(name);
                let done = matches!(s["sync_status"].as_str(), Some("SYNCED" | "FAILED"));
                let read = s["files"].as_array().is_some_and(|f| !f.is_empty());
                (done && read).then_some(s)
            },
            || self.sync_status(name).to_string(),
        )
    }

    /// Current value of `name` in moto (`None` if missing or unreadable).
    pub fn value(&self, name: &str) -> Option<String> {
        self.rt.block_on(async {
            self.client
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .ok()
                .and_then(|o| o.secret_string)
        })
    }

    /// Waits until moto holds `want` for `name`.
    pub fn wait_value(&self, name: &str, want: &str) {
        eventually(
            &format!("{name} to hold the expected value in AWS"),
            DEADLINE,
            || (self.value(name).as_deref() == Some(want)).then_some(()),
            || {
                format!(
                    "value matches: {:?}; proxy calls: {:?}",
                    self.value(name).map(|v| v == want),
                    self.proxy.calls()
                )
            },
        );
    }

    /// Sets a value behind the agent's back (straight to moto).
    pub fn tamper(&self, name: &str, value: &str) {
        self.rt.block_on(async {
            self.client
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .send()
                .await
                .unwrap();
        });
    }

    /// Number of versions of `name`, deprecated ones included.
    pub fn versions(&self, name: &str) -> usize {
        self.rt.block_on(async {
            self.client
                .list_secret_version_ids()
                .secret_id(name)
                .include_deprecated(true)
                .send()
                .await
                .unwrap()
                .versions()
                .len()
        })
    }

    /// Whether `name` is scheduled for deletion.
    pub fn pending_deletion(&self, name: &str) -> bool {
        self.rt.block_on(async {
            self.client
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap()
                .deleted_date
                .is_some()
        })
    }

    /// Waits until the proxy has seen no request for `quiet` (so no further
    /// call is on its way), at most [`DEADLINE`].
    pub fn wait_quiet(&self, quiet: Duration) {
        let deadline = Instant::now() + DEADLINE;
        let mut last = self.proxy.total();
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(25));
            let now = self.proxy.total();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "AWS traffic did not settle: {:?}",
                self.proxy.calls()
            );
        }
    }

    /// Tags of `name` in moto.
    pub fn tags(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.rt.block_on(async {
            let d = self
                .client
                .describe_secret()
                .secret_id(name)
                .send()
                .await
                .unwrap();
            d.tags()
                .iter()
                .map(|t| {
                    (
                        t.key().unwrap_or_default().to_string(),
                        t.value().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
    }

    /// Version ids of `name` with their stages, deprecated ones included.
    pub fn version_ids(&self, name: &str) -> Vec<(String, Vec<String>)> {
        self.rt.block_on(async {
            let mut v: Vec<(String, Vec<String>)> = self
                .client
                .list_secret_version_ids()
                .secret_id(name)
                .include_deprecated(true)
                .send()
                .await
                .unwrap()
                .versions()
                .iter()
                .map(|v| {
                    let mut stages = v.version_stages().to_vec();
                    stages.sort();
                    (v.version_id().unwrap_or_default().to_string(), stages)
                })
                .collect();
            v.sort();
            v
        })
    }

    /// Creates `name` straight in moto with `tags`, as someone else would.
    pub fn create_foreign(&self, name: &str, value: &str, tags: &[(&str, &str)]) {
        self.rt.block_on(async {
            let mut req = self.client.create_secret().name(name).secret_string(value);
            for (k, v) in tags {
                req = req.tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(*k)
                        .value(*v)
                        .build(),
                );
            }
            req.send().await.unwrap();
        });
    }

    /// Secret ids of the `PutSecretValue` calls seen by the proxy.
    pub fn put_ids(&self) -> Vec<String> {
        self.proxy
            .bodies("PutSecretValue")
            .iter()
            .map(|b| b["SecretId"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr")
}

/// `GET /metrics` from `addr`: the status code and the body (10 s deadline).
pub fn scrape(addr: std::net::SocketAddr) -> (u16, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to metrics at {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read metrics reply");
    let text = String::from_utf8(raw).expect("utf-8 reply");
    assert!(!text.contains(CANARY), "metrics leaked a value");
    let (head, body) = text.split_once("\r\n\r\n").expect("http reply");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (status, body.to_string())
}

/// The value of one sample (`name{labels}` exactly as rendered), if present.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// One `syncs:` entry: one-to-one, names `<name>/<KEY>`.
pub fn sync_entry<P: AsRef<Path>>(name: &str, files: &[P], extra: &str) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|f| format!("\"{}\"", f.as_ref().display()))
        .collect();
    format!(
        "  - name: {name}\n    source:\n      files: [{}]\n    destination:\n      key_schema: \"{name}/{{{{secretKey}}}}\"\n{extra}",
        files.join(", ")
    )
}

/// The environment every spawned binary gets: nothing from the developer's
/// shell or AWS files; static credentials; debug logs.
fn agent_env(cmd: &mut Command) {
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", "AKIDAGENTE2E")
        .env("AWS_SECRET_ACCESS_KEY", "agent-e2e-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("RUST_LOG", "debug");
}

/// Linux: the agent dies with the thread that spawned it, even if the test
/// binary is killed before any destructor runs.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the hook runs between fork and exec and only makes the prctl
    // syscall, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A running `secretsync run`; killed (SIGKILL) and reaped on drop.
pub struct Agent {
    child: Option<Child>,
    socket: PathBuf,
    stderr_path: PathBuf,
    pub config: PathBuf,
}

static NEXT_LOG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Agent {
    /// Spawns the agent on `world`'s agent.yaml without waiting for it.
    pub fn spawn(world: &World) -> Agent {
        Agent::spawn_env(world, &[])
    }

    /// [`Agent::spawn`] with extra environment variables.
    pub fn spawn_env(world: &World, env: &[(&str, &str)]) -> Agent {
        let n = NEXT_LOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path = world.agent_path(&format!("agent-{n}.stderr"));
        let stdout_path = world.agent_path(&format!("agent-{n}.stdout"));
        let config = world.config_path();
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap());
        agent_env(&mut cmd);
        cmd.envs(env.iter().copied());
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("spawn secretsync run");
        Agent {
            child: Some(child),
            socket: world.socket(),
            stderr_path,
            config,
        }
    }

    /// Spawns an agent on the config `config` (see [`World::config_for`])
    /// and waits until its socket answers `status`.
    pub fn spawn_at(world: &World, config: &Path) -> Agent {
        let dir = config.parent().expect("config in a directory");
        let n = NEXT_LOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr_path = world.agent_path(&format!("agent-{n}.stderr"));
        let stdout_path = world.agent_path(&format!("agent-{n}.stdout"));
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap());
        agent_env(&mut cmd);
        die_with_parent(&mut cmd);
        let mut agent = Agent {
            child: Some(cmd.spawn().expect("spawn secretsync run")),
            socket: dir.join("run/control.sock"),
            stderr_path,
            config: config.to_path_buf(),
        };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = agent.try_wait() {
                panic!("agent exited ({st}); stderr:\n{}", agent.stderr_tail());
            }
            if let Ok(stream) = UnixStream::connect(&agent.socket) {
                let r = Conn::from_stream(stream).call(&json!({"id": "ready", "cmd": "status"}));
                if r["ok"] == true {
                    return agent;
                }
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready within {DEADLINE:?}; stderr:\n{}",
                agent.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Spawns the agent and waits until `status --json` answers.
    pub fn start(world: &World) -> Agent {
        let mut agent = Agent::spawn(world);
        agent.wait_ready(world);
        agent
    }

    /// Polls `secretsync status --json` until it exits 0.
    pub fn wait_ready(&mut self, world: &World) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(st) = self.try_wait() {
                panic!(
                    "agent exited ({st}) before it was ready; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            if world.status_cli().is_some() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "agent not ready within {DEADLINE:?}; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("agent running").id() as i32
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// Exit status if the agent has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    /// Whether the agent is still running.
    pub fn alive(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    /// Waits up to `limit` for the agent to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait() {
                self.check_canary();
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "agent did not exit within {limit:?}; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// File that receives the agent's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// Everything the agent wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr_path).unwrap_or_default()).into_owned()
    }

    /// The last 60 lines of stderr, for failure messages (checked for the
    /// canary first so a failure message never prints it).
    pub fn stderr_tail(&self) -> String {
        let all = self.stderr();
        if all.contains(CANARY) {
            return "(stderr contains the canary value; not shown)".into();
        }
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    pub fn check_canary(&self) {
        assert!(
            !self.stderr().contains(CANARY),
            "canary value leaked into the agent's stderr"
        );
    }

    /// SIGTERM, then asserts exit 0 within `limit`, the socket removed and
    /// no leak. Returns how long the exit took.
    pub fn stop_within(mut self, limit: Duration) -> Duration {
        let t = Instant::now();
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(limit);
        let took = t.elapsed();
        assert_eq!(
            st.code(),
            Some(0),
            "agent exit after SIGTERM: {st}; stderr:\n{}",
            self.stderr_tail()
        );
        assert!(
            std::fs::symlink_metadata(&self.socket).is_err(),
            "control socket {} left behind after exit",
            self.socket.display()
        );
        self.child = None;
        took
    }

    /// [`Agent::stop_within`] with a 10 s limit.
    pub fn stop(self) {
        self.stop_within(Duration::from_secs(10));
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.check_canary();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            self.check_canary();
        }
    }
}

/// A raw control-socket client.
pub struct Conn {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn open(socket: &Path) -> Conn {
        let stream = UnixStream::connect(socket)
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        Conn::from_stream(stream)
    }

    pub fn from_stream(stream: UnixStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one reply line; `None` on EOF.
    pub fn read_reply(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => {
                let text = String::from_utf8(line).expect("reply is UTF-8");
                assert!(!text.contains(CANARY), "canary leaked in a socket reply");
                assert!(text.ends_with('\n'), "reply not newline-terminated: {text}");
                Some(
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("reply is not JSON ({e}): {text}")),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("reading a reply: {e}"),
        }
    }

    /// Sends `request` as one line and returns the reply.
    pub fn call(&mut self, request: &Value) -> Value {
        let mut line = serde_json::to_vec(request).unwrap();
        line.push(b'\n');
        self.send_raw(&line).unwrap();
        self.read_reply()
            .unwrap_or_else(|| panic!("connection closed without a reply to {request}"))
    }
}

/// Asserts `reply` is an error with `code`, echoing `id`; returns the message.
pub fn assert_error(reply: &Value, code: &str, id: &Value) -> String {
    assert_eq!(reply["ok"], false, "expected an error reply: {reply}");
    assert_eq!(reply["error"]["code"], code, "wrong error code: {reply}");
    assert_eq!(&reply["id"], id, "request id not echoed: {reply}");
    let msg = reply["error"]["message"].as_str().unwrap_or("").to_string();
    assert!(!msg.is_empty(), "error without a message: {reply}");
    msg
}
