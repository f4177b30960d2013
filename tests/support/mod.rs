//! Shared test harness for the integration tests (`mod support;` in each file).
//!
//! * [`Moto`] runs a private `moto_server` (AWS Secrets Manager emulator) per test,
//!   so tests never see each other's secrets and can run in parallel. It runs
//!   behind the conformance check of `scripts/conformance/moto_conformant.py`:
//!   a request that AWS would reject but moto accepts (empty `SecretString`, a
//!   name with a space, 51 tags...) gets AWS's `ValidationException` and fails
//!   the test when the `Moto` is dropped (see [`Moto::take_violations`]).
//! * [`FaultProxy`] sits between a client (the SDK or the spawned `secretsync`
//!   binary) and moto. It counts every request by operation and injects the
//!   failures moto cannot produce: throttling, 5xx, latency, hangs and outages.
//! * [`sdk_config`] / [`client_for`] build SDK clients that never touch the real
//!   AWS credential chain, and [`aws_env`] gives the same settings as environment
//!   variables for a spawned binary.
//!
//! Everything listens on 127.0.0.1 only, and every child process is killed when
//! its owner is dropped (also while a failing test unwinds); see [`Moto`] for the
//! cases `Drop` cannot cover.

// Each test file compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Region every test client and spawned binary uses; moto accepts any region, but
/// ARNs and moto's per-region state must agree between setup and the code under test.
pub const REGION: &str = "us-east-1";

/// Static credentials: moto checks no signatures, and static ones keep the SDK from
/// probing the default chain (profile files, IMDS), which is slow and host-dependent.
pub const ACCESS_KEY_ID: &str = "AKIDSECRETSYNCTEST";
pub const SECRET_ACCESS_KEY: &str = "secretsync-test-secret";

/// How long [`Moto::start`] waits for the emulator to answer (it usually needs
/// about half a second, more on a loaded 2-core CI machine).
pub const MOTO_START_DEADLINE: Duration = Duration::from_secs(20);

/// The operations that change state in Secrets Manager; [`FaultProxy::writes`] sums
/// them so tests can assert "no writes" (idempotence, dry runs) in one line.
pub const WRITE_OPS: &[&str] = &[
    "CreateSecret",
    "PutSecretValue",
    "UpdateSecret",
    "TagResource",
    "UntagResource",
    "DeleteSecret",
    "RestoreSecret",
    "ReplicateSecretToRegions",
    "RemoveRegionsFromReplication",
];

/// Key under which [`FaultProxy::calls`] counts requests without an
/// `X-Amz-Target` header (e.g. moto's own `/moto-api/` endpoints).
pub const NO_TARGET: &str = "(none)";

// ---------------------------------------------------------------------------
// moto
// ---------------------------------------------------------------------------

/// A running `moto_server` bound to 127.0.0.1 on a free port, owned by one test.
///
/// moto runs inside `scripts/conformance/moto_conformant.py` (started with the
/// `python` of moto's venv): every Secrets Manager or KMS request is checked
/// against the AWS service model (lengths, patterns, enums, required members)
/// and the rules AWS documents beyond it (see `docs/aws-vs-moto.md`). A request
/// that breaks one gets `400 ValidationException`, as from AWS, and is recorded
/// in this emulator's own violations file. When the `Moto` is dropped, any
/// recorded violation not taken with [`Moto::take_violations`] fails the test
/// (a panic listing them; only printed if the test is already failing).
///
/// The process is killed and reaped when the `Moto` is dropped, including while a
/// failed test unwinds. It is spawned by a supervisor thread that lives exactly as
/// long as the `Moto`, and on Linux the child gets `PR_SET_PDEATHSIG = SIGKILL`, so
/// even a test binary killed with SIGKILL or aborting leaves no emulator behind
/// (the death signal follows the spawning *thread*, hence the dedicated thread).
/// Do not keep a `Moto` in a `static`: statics are never dropped.
pub struct Moto {
    /// Base URL of the emulator, `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub port: u16,
    pid: u32,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Dropping this sender tells the supervisor thread to kill the child.
    stop: Option<mpsc::Sender<()>>,
    supervisor: Option<JoinHandle<()>>,
    /// JSON lines the conformance check appends, one per rejected request;
    /// deleted on drop.
    violations: Option<tempfile::TempPath>,
    /// Bytes of `violations` already handed out by [`Moto::take_violations`].
    violations_taken: Mutex<u64>,
}

/// A request the conformance check rejected (it never reached moto): the
/// operation and each rule it broke, as member path and rule only, e.g.
/// `SecretString: length 0 below min 1` (values are never recorded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// `secretsmanager` or `kms`.
    pub service: String,
    pub operation: String,
    pub problems: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.operation, self.problems.join("; "))
    }
}

impl Moto {
    /// Starts a fresh emulator, or panics with the reason (test code: a missing
    /// emulator must fail loudly, never skip, in CI and locally alike).
    ///
    /// `moto_server` is taken from `SECRETSYNC_MOTO_SERVER` (set by
    /// `scripts/test.sh`), else `<crate>/.venv-moto/bin/moto_server`; the
    /// conformance wrapper runs with the `python` next to it.
    pub fn start() -> Moto {
        let path = moto_server_path();
        if !path.exists() {
            panic!(
                "moto_server not found at {} : run `bash scripts/setup-moto.sh` (or run the \
                 tests with `bash scripts/test.sh`), or set SECRETSYNC_MOTO_SERVER to its path",
                path.display()
            );
        }
        match Moto::try_start_at(&path) {
            Ok(moto) => moto,
            Err(e) => panic!("could not start moto: {e}"),
        }
    }

    /// Starts the moto of the venv whose `moto_server` is at `path`, inside the
    /// conformance wrapper (run by the venv's `python`, next to `moto_server`);
    /// `Err` says why not (no such venv, spawn failure, early exit with its last
    /// output, or no answer within [`MOTO_START_DEADLINE`]). Any process already
    /// spawned is killed on `Err`.
    pub fn try_start_at(path: &Path) -> Result<Moto, String> {
        let started = Instant::now();
        let python = path.with_file_name("python");
        if !python.exists() {
            return Err(format!(
                "cannot run the emulator of {}: no {} next to it (the conformance \
                 wrapper runs with the python of moto's venv; see scripts/setup-moto.sh)",
                path.display(),
                python.display()
            ));
        }
        let wrapper = conformance_wrapper_path();
        let violations = tempfile::Builder::new()
            .prefix("secretsync-moto-violations-")
            .suffix(".jsonl")
            .tempfile()
            .map_err(|e| format!("cannot create the violations file: {e}"))?
            .into_temp_path();
        let mut command = Command::new(&python);
        command
            .arg(&wrapper)
            .args(["-H", "127.0.0.1", "-p", "0", "--violations"])
            .arg(&*violations);
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let supervisor = std::thread::Builder::new()
            .name("moto-supervisor".into())
            .spawn(move || supervise(command, spawned_tx, stop_rx))
            .map_err(|e| format!("cannot spawn supervisor thread: {e}"))?;

        let (pid, stderr) = match spawned_rx.recv() {
            Ok(Ok(spawned)) => spawned,
            Ok(Err(e)) => {
                let _ = supervisor.join();
                return Err(e);
            }
            Err(_) => {
                let _ = supervisor.join();
                return Err("moto supervisor thread died".into());
            }
        };

        // From here on `moto` owns the child: every early return or panic kills it.
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let mut moto = Moto {
            endpoint: String::new(),
            port: 0,
            pid,
            log: Arc::clone(&log),
            stop: Some(stop_tx),
            supervisor: Some(supervisor),
            violations: Some(violations),
            violations_taken: Mutex::new(0),
        };

        // moto logs every request to stderr; the pipe must be drained for the whole
        // life of the server or it blocks once the pipe buffer fills.
        let (port_tx, port_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("moto-stderr".into())
            .spawn(move || drain_stderr(stderr, log, port_tx))
            .map_err(|e| format!("cannot spawn stderr reader: {e}"))?;

        let deadline = started + MOTO_START_DEADLINE;
        let port = match port_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Some(port)) => port,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!(
                    "{} exited before listening; its output:\n{}",
                    path.display(),
                    moto.log_tail()
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!(
                    "{} printed no listening address within {:?}; its output:\n{}",
                    path.display(),
                    MOTO_START_DEADLINE,
                    moto.log_tail()
                ));
            }
        };
        moto.port = port;
        moto.endpoint = format!("http://127.0.0.1:{port}");

        // "Running on" is printed once the socket listens; one real request proves
        // that the thing on the port is moto and that it serves.
        loop {
            match raw_http(port, "GET", "/moto-api/", &[], b"") {
                Ok((200, _)) => break,
                other if Instant::now() >= deadline => {
                    return Err(format!(
                        "moto on port {port} did not answer GET /moto-api/ within {:?} \
                         (last: {other:?}); its output:\n{}",
                        MOTO_START_DEADLINE,
                        moto.log_tail()
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        Ok(moto)
    }

    /// An SDK client pointed straight at this emulator (no proxy), for test setup
    /// and inspection. `async` so callers need not change if it ever loads config.
    pub async fn client(&self) -> aws_sdk_secretsmanager::Client {
        client_for(&self.endpoint)
    }

    /// Wipes all emulator state (`POST /moto-api/reset`); cheaper than a restart
    /// when one test needs several clean phases.
    pub fn reset(&self) {
        match raw_http(self.port, "POST", "/moto-api/reset", &[], b"") {
            Ok((200, _)) => {}
            other => panic!("moto reset failed: {other:?}"),
        }
    }

    /// Process id of the emulator (tests use it to prove it is gone after drop).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last lines moto wrote to stderr (its request log), for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The requests the conformance check has rejected since the last call, in
    /// arrival order; taken ones no longer fail the test at drop. For tests that
    /// send a non-conforming request on purpose: assert on what this returns.
    /// A request is recorded before its `400` is sent, so every rejected request
    /// the caller has seen answered is in the list.
    pub fn take_violations(&self) -> Vec<Violation> {
        let mut taken = self.violations_taken.lock().unwrap();
        let (violations, end) = self.read_violations(*taken);
        *taken = end;
        violations
    }

    /// Panics (listing them) if requests were rejected since the last
    /// [`Moto::take_violations`]; the same check `Drop` makes, for use mid-test.
    pub fn assert_conformant(&self) {
        let violations = self.take_violations();
        if !violations.is_empty() {
            panic!("{}", violations_report(&violations));
        }
    }

    /// Violations recorded after byte `from` of the file, and the offset of the
    /// end of the last complete line.
    fn read_violations(&self, from: u64) -> (Vec<Violation>, u64) {
        let Some(path) = self.violations.as_deref() else {
            return (Vec::new(), from);
        };
        let mut text = Vec::new();
        if let Ok(mut file) = std::fs::File::open(path) {
            use std::io::Seek;
            if file.seek(std::io::SeekFrom::Start(from)).is_ok() {
                let _ = file.read_to_end(&mut text);
            }
        }
        // Only complete lines: a line being written now is taken next time.
        let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let violations = text[..complete]
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(parse_violation)
            .collect();
        (violations, from + complete as u64)
    }
}

fn parse_violation(line: &[u8]) -> Violation {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("?").to_string();
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(v) => Violation {
            service: text(&v["service"]),
            operation: text(&v["operation"]),
            problems: v["violations"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default(),
        },
        Err(e) => Violation {
            service: "?".into(),
            operation: "?".into(),
            problems: vec![format!("unreadable violations line ({e})")],
        },
    }
}

fn violations_report(violations: &[Violation]) -> String {
    let mut report = format!(
        "{} request(s) to the emulator would have been rejected by AWS (answered with \
         ValidationException; see docs/aws-vs-moto.md, or take them with \
         Moto::take_violations() if the test sends them on purpose):",
        violations.len()
    );
    for violation in violations {
        report.push_str(&format!("\n  {violation}"));
    }
    report
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the channel wakes the supervisor, which kills and reaps the child.
        drop(self.stop.take());
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
        // The emulator is gone, so the file is complete.
        let violations = self.take_violations();
        drop(self.violations.take()); // deletes the file
        if violations.is_empty() {
            return;
        }
        let report = violations_report(&violations);
        if std::thread::panicking() {
            // Panicking again would abort the test binary; the first panic fails the test.
            eprintln!("{report}");
        } else {
            panic!("{report}");
        }
    }
}

/// `SECRETSYNC_MOTO_SERVER`, else the venv that `scripts/setup-moto.sh` creates by
/// default in the crate root.
pub fn moto_server_path() -> PathBuf {
    match std::env::var_os("SECRETSYNC_MOTO_SERVER") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server"),
    }
}

/// The conformance wrapper every [`Moto`] runs moto in.
pub fn conformance_wrapper_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/conformance/moto_conformant.py")
}

type Spawned = Result<(u32, std::process::ChildStderr), String>;

/// Body of the supervisor thread: spawns moto, reports back, and kills it when the
/// owning [`Moto`] drops its end of `stop`.
fn supervise(mut cmd: Command, spawned: mpsc::Sender<Spawned>, stop: mpsc::Receiver<()>) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("PYTHONUNBUFFERED", "1");
    set_parent_death_signal(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let program = Path::new(cmd.get_program()).display().to_string();
            let _ = spawned.send(Err(format!("cannot run {program}: {e}")));
            return;
        }
    };
    let stderr = child.stderr.take().expect("stderr is piped");
    if spawned.send(Ok((child.id(), stderr))).is_ok() {
        // Returns when the Moto is dropped (sender gone) or sends explicitly.
        let _ = stop.recv();
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Linux: have the kernel SIGKILL moto when the supervisor thread dies, which
/// covers a test binary that is killed or aborts without running destructors.
#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the hook runs between fork and exec and only makes the prctl
    // syscall, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

/// Keeps the last lines of moto's stderr for diagnostics, and sends the port from
/// werkzeug's ` * Running on http://127.0.0.1:PORT` line (`None` on EOF first).
fn drain_stderr(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    port_tx: mpsc::Sender<Option<u16>>,
) {
    const KEEP: usize = 200;
    let mut port_sent = false;
    for line in BufReader::new(stderr).split(b'\n') {
        let Ok(line) = line else { break };
        let line = String::from_utf8_lossy(&line).into_owned();
        if let (false, Some(port)) = (port_sent, parse_listen_port(&line)) {
            port_sent = true;
            let _ = port_tx.send(Some(port));
        }
        let mut log = log.lock().unwrap();
        if log.len() >= KEEP {
            log.pop_front();
        }
        log.push_back(line);
    }
    if !port_sent {
        let _ = port_tx.send(None);
    }
}

fn parse_listen_port(line: &str) -> Option<u16> {
    let rest =
        &line[line.find("Running on http://127.0.0.1:")? + "Running on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&p| p != 0)
}

/// A minimal blocking HTTP/1.1 request on 127.0.0.1 (`Connection: close`), used
/// before any tokio runtime exists: readiness probe, reset, plain `#[test]`s.
/// Returns the status code and the body.
pub fn raw_http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response");
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(bad)?;
    let status_line = String::from_utf8_lossy(&response[..head_end]);
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, response[head_end + 4..].to_vec()))
}

// ---------------------------------------------------------------------------
// SDK clients and environment for spawned binaries
// ---------------------------------------------------------------------------

/// Each client gets its own retry partition: the SDK keeps one retry token bucket
/// per partition *per process*, so tests that provoke throttling would otherwise
/// drain the retry budget of unrelated tests running in parallel.
static NEXT_PARTITION: AtomicU64 = AtomicU64::new(0);

/// SDK config for `endpoint` with static credentials, [`REGION`], explicit
/// timeouts (the SDK has no operation timeout by default, so a hung emulator would
/// hang the test) and standard retries (3 attempts). Customize and build, e.g.
/// `Client::from_conf(sdk_config(&proxy.endpoint).retry_config(RetryConfig::disabled()).build())`.
pub fn sdk_config(endpoint: &str) -> aws_sdk_secretsmanager::config::Builder {
    let partition = NEXT_PARTITION.fetch_add(1, Ordering::Relaxed);
    aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        // The SDK crates are built without their default HTTPS client (the
        // binary builds its own); the emulator speaks plain HTTP.
        .http_client(plain_http_client())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "secretsync-tests",
        ))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .retry_partition(RetryPartition::new(format!("secretsync-test-{partition}")))
}

/// An HTTP (no TLS) client for SDK clients that talk to the local emulator.
pub fn plain_http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new().build_http()
}

/// A client for `endpoint` (moto or a [`FaultProxy`]) with the [`sdk_config`] defaults.
pub fn client_for(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(sdk_config(endpoint).build())
}

/// Environment for a spawned `secretsync` (or any AWS SDK program) that must talk
/// to `endpoint` and nothing else: endpoint, region, static credentials, no IMDS,
/// and no shared config/credentials files from the developer's home.
/// Use with `Command::envs(aws_env(..))`; consider `env_clear()` first.
pub fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_CONFIG_FILE", "/dev/null".to_string()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_string()),
    ]
}

// ---------------------------------------------------------------------------
// Fault-injecting proxy
// ---------------------------------------------------------------------------

/// A failure to inject into requests passing through a [`FaultProxy`].
///
/// `op: None` matches every operation; `Some("PutSecretValue")` matches the
/// `X-Amz-Target` operation name exactly. Rules are consulted in the order they
/// were injected: every matching [`Fault::Delay`] / [`Fault::DelayDetached`] adds
/// its delay, then the first
/// other rule that fires decides the outcome, and the rules after it do not see
/// the request (their counters do not advance). With no rule firing the request is
/// forwarded upstream. Every request is counted before any rule applies.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Every `every_nth`-th matching request (1 = all, 2 = half, 3 = a third...)
    /// gets `400 {"__type":"ThrottlingException","message":"Rate exceeded"}`.
    Throttle { op: Option<String>, every_nth: u64 },
    /// The first `count` matching requests are throttled, later ones pass: for
    /// "retries with backoff recover" tests.
    ThrottleFirst { op: Option<String>, count: u64 },
    /// Each matching request is throttled with probability `percent`/100,
    /// decided by a xorshift generator seeded with `seed` (same seed, same
    /// arrival order ⇒ same decisions). Unlike [`Fault::Throttle`], one call
    /// can be throttled on several attempts in a row, as with real quotas.
    ThrottleRandom {
        op: Option<String>,
        percent: u64,
        seed: u64,
    },
    /// The first `count` matching requests get `status` (500, 503...) with an
    /// `InternalServiceError` body, as Secrets Manager does.
    ServerError {
        op: Option<String>,
        status: u16,
        count: u64,
    },
    /// The first `count` matching requests get an arbitrary AWS JSON error, e.g.
    /// `AccessDeniedException` or `LimitExceededException`, which moto never sends.
    AwsError {
        op: Option<String>,
        status: u16,
        code: String,
        message: String,
        count: u64,
    },
    /// Matching requests are held for `delay` before the rest of the rules apply.
    Delay { op: Option<String>, delay: Duration },
    /// Like [`Fault::Delay`], but a held request that the rules then forward
    /// reaches upstream even if its client has gone away meanwhile (killed,
    /// or its attempt timed out), as AWS still processes a request it has
    /// received. With plain `Delay` such a request is dropped unprocessed.
    DelayDetached { op: Option<String>, delay: Duration },
    /// Matching requests never get an answer (until the proxy is dropped): the
    /// client's attempt timeout must fire.
    Hang { op: Option<String> },
    /// The first `count` matching requests have their connection closed without a
    /// reply after the request was read (the client cannot know if it applied).
    Reset { op: Option<String>, count: u64 },
    /// Every request has its connection closed without a reply, like AWS being
    /// unreachable, until [`FaultProxy::clear_faults`].
    Outage,
    /// The first `after` write requests ([`WRITE_OPS`]) pass; every later
    /// write hangs (reads pass). For crash tests: once [`FaultProxy::writes`]
    /// exceeds `after`, killing the client leaves exactly `after` writes
    /// delivered, whatever the client's concurrency.
    HangWritesAfter { after: u64 },
}

impl Fault {
    fn op(&self) -> Option<&str> {
        match self {
            Fault::Throttle { op, .. }
            | Fault::ThrottleFirst { op, .. }
            | Fault::ThrottleRandom { op, .. }
            | Fault::ServerError { op, .. }
            | Fault::AwsError { op, .. }
            | Fault::Delay { op, .. }
            | Fault::DelayDetached { op, .. }
            | Fault::Hang { op }
            | Fault::Reset { op, .. } => op.as_deref(),
            Fault::Outage | Fault::HangWritesAfter { .. } => None,
        }
    }
}

/// Shorthand for the `op` field of a [`Fault`]: `op("GetSecretValue")`.
pub fn op(name: &str) -> Option<String> {
    Some(name.to_string())
}

/// What the proxy does with one request.
enum Action {
    Forward,
    Respond {
        status: u16,
        code: String,
        message: String,
    },
    Close,
    Hang,
}

struct Rule {
    fault: Fault,
    /// Matching requests this rule has been consulted for.
    seen: u64,
    /// Consultations since a `Throttle` rule last fired.
    since_fired: u64,
    /// Generator state of a `ThrottleRandom` rule.
    rng: u64,
}

impl Rule {
    /// Advances the rule's counter for one matching request and returns the
    /// action if the rule fires (never called for the delays).
    fn consult(&mut self, op: &str) -> Option<Action> {
        if let Fault::HangWritesAfter { after } = self.fault {
            if !WRITE_OPS.contains(&op) {
                return None;
            }
            self.seen += 1;
            return (self.seen > after).then_some(Action::Hang);
        }
        self.seen += 1;
        let n = self.seen;
        let throttle = || Action::Respond {
            status: 400,
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        };
        match &self.fault {
            Fault::Throttle { every_nth, .. } => {
                self.since_fired += 1;
                let fire = self.since_fired == *every_nth;
                if fire {
                    self.since_fired = 0;
                }
                fire.then(throttle)
            }
            Fault::ThrottleFirst { count, .. } => (n <= *count).then(throttle),
            Fault::ThrottleRandom { percent, .. } => {
                // xorshift64: tiny, seeded, good enough to spread faults.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                (self.rng % 100 < *percent).then(throttle)
            }
            Fault::ServerError { status, count, .. } => (n <= *count).then(|| Action::Respond {
                status: *status,
                code: "InternalServiceError".into(),
                message: "An error occurred on the server side (injected by FaultProxy)".into(),
            }),
            Fault::AwsError {
                status,
                code,
                message,
                count,
                ..
            } => (n <= *count).then(|| Action::Respond {
                status: *status,
                code: code.clone(),
                message: message.clone(),
            }),
            Fault::Hang { .. } => Some(Action::Hang),
            Fault::Reset { count, .. } => (n <= *count).then_some(Action::Close),
            Fault::Outage => Some(Action::Close),
            Fault::HangWritesAfter { .. } => None,
            Fault::Delay { .. } | Fault::DelayDetached { .. } => None,
        }
    }
}

/// The Secrets Manager request quotas (per second, per region; from the AWS
/// quota table) that [`FaultProxy::enforce_aws_quotas`] applies: each class
/// of operations shares one limit.
pub const AWS_QUOTAS: &[(&[&str], usize)] = &[
    (
        &[
            "PutSecretValue",
            "UpdateSecret",
            "ReplicateSecretToRegions",
            "RemoveRegionsFromReplication",
        ],
        50,
    ),
    (&["CreateSecret"], 50),
    (&["DeleteSecret"], 50),
    (&["RestoreSecret"], 50),
    (&["TagResource", "UntagResource"], 50),
    (&["ListSecrets"], 100),
    (&["BatchGetSecretValue"], 100),
    (&["GetSecretValue", "DescribeSecret"], 10_000),
];

/// Sliding one-second windows per quota class.
#[derive(Default)]
pub struct QuotaMeter {
    windows: BTreeMap<usize, VecDeque<Instant>>,
    throttled: u64,
}

impl QuotaMeter {
    /// Whether a request for `op` now goes over its class's quota; counts
    /// it against the window when it does not.
    pub fn over(&mut self, op: &str, now: Instant) -> bool {
        let Some(class) = AWS_QUOTAS.iter().position(|(ops, _)| ops.contains(&op)) else {
            return false;
        };
        let limit = AWS_QUOTAS[class].1;
        let window = self.windows.entry(class).or_default();
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            window.pop_front();
        }
        if window.len() >= limit {
            self.throttled += 1;
            return true;
        }
        window.push_back(now);
        false
    }
}

#[derive(Default)]
struct ProxyState {
    calls: BTreeMap<String, u64>,
    /// Request bodies in arrival order, with their operation.
    requests: Vec<(String, Bytes)>,
    /// When each of `requests` arrived.
    arrived: Vec<Instant>,
    rules: Vec<Rule>,
    faults_fired: u64,
    quotas: Option<QuotaMeter>,
}

impl ProxyState {
    /// Records one arrived request and decides its fate: how long to hold
    /// it, whether it survives its client going away, and what to do then.
    fn arrive(&mut self, op: &str, body: Bytes) -> (Duration, bool, Action) {
        *self.calls.entry(op.to_string()).or_default() += 1;
        self.requests.push((op.to_string(), body));
        let now = Instant::now();
        self.arrived.push(now);
        if let Some(meter) = self.quotas.as_mut() {
            if meter.over(op, now) {
                return (
                    Duration::ZERO,
                    false,
                    Action::Respond {
                        status: 400,
                        code: "ThrottlingException".into(),
                        message: "Rate exceeded (AWS quota enforced by FaultProxy)".into(),
                    },
                );
            }
        }
        let mut delay = Duration::ZERO;
        let mut detached = false;
        let mut action = None;
        for rule in &mut self.rules {
            if rule.fault.op().is_some_and(|o| o != op) {
                continue;
            }
            match rule.fault {
                Fault::Delay { delay: d, .. } => delay += d,
                Fault::DelayDetached { delay: d, .. } => {
                    delay += d;
                    detached = true;
                }
                _ if action.is_none() => action = rule.consult(op),
                _ => {}
            }
        }
        if action.is_some() || !delay.is_zero() {
            self.faults_fired += 1;
        }
        (delay, detached, action.unwrap_or(Action::Forward))
    }
}

/// An HTTP/1.1 reverse proxy on 127.0.0.1 in front of `upstream`, with request
/// counting and fault injection (see [`Fault`]).
///
/// It runs on its own thread with its own tokio runtime, so it works the same
/// from `#[tokio::test]` (any flavor) and from a plain `#[test]` that spawns the
/// real binary, and a test runtime that is blocked or shutting down cannot stall
/// it. Client connections are kept alive; requests go upstream over a pooled
/// client. Dropping the proxy stops it and drops hung requests.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`; point clients here instead of at moto.
    pub endpoint: String,
    pub port: u16,
    state: Arc<Mutex<ProxyState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// How long the proxy waits for upstream before answering 504 itself, so that a
/// stuck emulator shows up as an error rather than as a hang.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

type ProxyBody = Full<Bytes>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl FaultProxy {
    /// Starts a proxy forwarding to `upstream` (`http://127.0.0.1:PORT`, e.g.
    /// [`Moto::endpoint`]). Ready when this returns: the socket is already bound.
    pub fn start(upstream: &str) -> FaultProxy {
        let upstream = upstream.trim_end_matches('/').to_string();
        assert!(
            upstream.starts_with("http://"),
            "FaultProxy upstream must be a plain http:// URL, got {upstream:?}"
        );
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind FaultProxy on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel();
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("FaultProxy runtime");
                runtime.block_on(serve(listener, upstream, thread_state, shutdown_rx));
                // Dropping the runtime cancels the connection tasks, hung ones included.
            })
            .expect("spawn FaultProxy thread");
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Requests that arrived, per operation (faulted ones included), e.g.
    /// `{"CreateSecret": 1, "GetSecretValue": 2}`. See [`NO_TARGET`].
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Requests that arrived for one operation.
    pub fn count(&self, op: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Requests that arrived for all the mutating operations ([`WRITE_OPS`]).
    pub fn writes(&self) -> u64 {
        let state = self.state.lock().unwrap();
        WRITE_OPS
            .iter()
            .map(|op| state.calls.get(*op).copied().unwrap_or(0))
            .sum()
    }

    /// Requests that arrived, across all operations.
    pub fn total(&self) -> u64 {
        self.state.lock().unwrap().calls.values().sum()
    }

    /// JSON bodies of the requests for `op`, in arrival order, to assert what was
    /// sent (tags, `ClientRequestToken`, ...). A body that is not JSON comes back
    /// as a JSON string.
    pub fn bodies(&self, op: &str) -> Vec<serde_json::Value> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, body)| {
                serde_json::from_slice(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                })
            })
            .collect()
    }

    /// Like [`FaultProxy::bodies`], with each request's arrival time, e.g. to
    /// time when the write of an edited value reached "AWS".
    pub fn timed_bodies(&self, op: &str) -> Vec<(Instant, serde_json::Value)> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .zip(&state.arrived)
            .filter(|((o, _), _)| o == op)
            .map(|((_, body), at)| {
                let body = serde_json::from_slice(body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
                });
                (*at, body)
            })
            .collect()
    }

    /// From now on, requests over the AWS request quotas ([`AWS_QUOTAS`])
    /// get `ThrottlingException`, as AWS would answer them: a client that
    /// paces itself correctly never sees one.
    pub fn enforce_aws_quotas(&self) {
        self.state.lock().unwrap().quotas = Some(QuotaMeter::default());
    }

    /// Requests throttled by [`FaultProxy::enforce_aws_quotas`].
    pub fn quota_throttles(&self) -> u64 {
        self.state
            .lock()
            .unwrap()
            .quotas
            .as_ref()
            .map_or(0, |q| q.throttled)
    }

    /// Operations in arrival order, e.g. to check that a create came before a tag.
    pub fn ops(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state.requests.iter().map(|(op, _)| op.clone()).collect()
    }

    /// How many requests a fault rule acted on (delayed, answered or dropped).
    pub fn faults_fired(&self) -> u64 {
        self.state.lock().unwrap().faults_fired
    }

    /// Forgets all counts and recorded bodies (rules and their counters stay).
    pub fn reset_counts(&self) {
        let mut state = self.state.lock().unwrap();
        state.calls.clear();
        state.requests.clear();
        state.arrived.clear();
        state.faults_fired = 0;
    }

    /// Adds a rule after the existing ones. Panics on a rule that cannot work
    /// (`every_nth: 0`, a status that is not an error).
    pub fn inject(&self, fault: Fault) {
        match &fault {
            Fault::Throttle { every_nth: 0, .. } => {
                panic!("Fault::Throttle every_nth must be >= 1")
            }
            Fault::ServerError { status, .. } | Fault::AwsError { status, .. }
                if !(400..=599).contains(status) =>
            {
                panic!("injected error status must be 4xx/5xx, got {status}")
            }
            Fault::ThrottleRandom { percent, .. } if *percent > 100 => {
                panic!("Fault::ThrottleRandom percent must be <= 100")
            }
            _ => {}
        }
        let rng = match &fault {
            // xorshift must not start at 0; mix the seed so small seeds differ.
            Fault::ThrottleRandom { seed, .. } => seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            _ => 0,
        };
        self.state.lock().unwrap().rules.push(Rule {
            fault,
            seen: 0,
            since_fired: 0,
            rng,
        });
    }

    /// Removes every rule: service is back to normal for the next request
    /// (requests already hanging stay hung).
    pub fn clear_faults(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Polls until `count(op) >= n` or `timeout` passes; returns whether it got
    /// there. Blocking, for plain `#[test]`s driving a spawned binary.
    pub fn wait_for_count_blocking(&self, op: &str, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count(op) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Async form of [`FaultProxy::wait_for_count_blocking`], which does not block
    /// the test's runtime (code under test may run on it).
    pub async fn wait_for_count(&self, op: &str, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count(op) >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        drop(self.shutdown.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accept loop of the proxy; returns when the [`FaultProxy`] is dropped.
async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    state: Arc<Mutex<ProxyState>>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let client: HttpClient<HttpConnector, ProxyBody> =
        HttpClient::builder(TokioExecutor::new()).build_http();
    let upstream: Arc<str> = upstream.into();
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // e.g. EMFILE under load: back off instead of spinning.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let client = client.clone();
        let upstream = Arc::clone(&upstream);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                handle(
                    req,
                    Arc::clone(&state),
                    client.clone(),
                    Arc::clone(&upstream),
                )
            });
            // An error here is a client gone away or an injected close: both end
            // just this connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The operation name from `X-Amz-Target: secretsmanager.PutSecretValue`.
fn operation(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(|t| t.rsplit('.').next().unwrap_or(t).to_string())
        .unwrap_or_else(|| NO_TARGET.to_string())
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<ProxyState>>,
    client: HttpClient<HttpConnector, ProxyBody>,
    upstream: Arc<str>,
) -> Result<Response<ProxyBody>, BoxError> {
    let op = operation(&req);
    let (parts, body) = req.into_parts();
    // Read the whole body first: it is recorded, and a fault that closes the
    // connection must not do so mid-upload.
    let body = body.collect().await?.to_bytes();
    let (delay, detached, action) = state.lock().unwrap().arrive(&op, body.clone());
    if detached && matches!(action, Action::Forward) {
        // A task of its own: hyper drops this handler when the client
        // disconnects, the spawned task still delivers the request.
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            forward(parts, body, &client, &upstream).await
        });
        return Ok(task.await.unwrap_or_else(|e| {
            plain(
                StatusCode::BAD_GATEWAY,
                &format!("FaultProxy: detached forward failed: {e}"),
            )
        }));
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match action {
        Action::Forward => Ok(forward(parts, body, &client, &upstream).await),
        Action::Respond {
            status,
            code,
            message,
        } => Ok(aws_error(status, &code, &message)),
        // hyper closes the connection without writing a response when the
        // service fails; that is exactly "reset/no reply" for the client.
        Action::Close => Err("connection closed by injected fault".into()),
        Action::Hang => std::future::pending().await,
    }
}

/// Headers that describe one hop's connection, not the message; they must not be
/// copied to the next hop (moto answers `Connection: close` to every request,
/// which would otherwise defeat keep-alive between the client and the proxy).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    client: &HttpClient<HttpConnector, ProxyBody>,
    upstream: &str,
) -> Response<ProxyBody> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder()
        .method(parts.method)
        .uri(format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            builder = builder.header(name, value);
        }
    }
    let request = match builder.body(Full::new(body)) {
        Ok(request) => request,
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("FaultProxy: bad request: {e}"),
            );
        }
    };
    let response = match tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("FaultProxy: upstream: {e}"),
            );
        }
        Err(_) => {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                "FaultProxy: upstream timed out",
            );
        }
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::BAD_GATEWAY,
                &format!("FaultProxy: upstream body: {e}"),
            );
        }
    };
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// An error in the awsJson1.1 shape the SDK parses: `__type` in the body and the
/// `x-amzn-ErrorType` header carry the code.
fn aws_error(status: u16, code: &str, message: &str) -> Response<ProxyBody> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        headers.insert("x-amzn-errortype", v);
    }
    let id = format!("faultproxy-{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
    headers.insert(
        "x-amzn-requestid",
        HeaderValue::from_str(&id).expect("ascii"),
    );
    response
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    response
}
