"""Shared pieces of the end-to-end benchmarks (benches/agent_bench.py,
benches/compare.py): a moto server on loopback, a counting proxy in front of
it, and generated `.env` data.

Every tool under test (our binary, the AWS CLI loop, the boto3 scripts) talks
to moto *through the same proxy*, so API calls are counted the same way for
all of them: one count per HTTP request, by the operation named in the
`X-Amz-Target` header (`secretsmanager.PutSecretValue` -> `PutSecretValue`).
Everything binds 127.0.0.1.
"""
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WRITE_OPS = ("CreateSecret", "PutSecretValue", "TagResource", "UntagResource",
             "UpdateSecret", "DeleteSecret", "RestoreSecret")
READ_OPS = ("ListSecrets", "BatchGetSecretValue", "GetSecretValue", "DescribeSecret")


def exit_on_sigterm():
    """Turns SIGTERM into SystemExit, so `finally:` blocks stop moto and the
    tools under test when the benchmark itself is stopped."""
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, deadline=20):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"port {port} never opened")


class Counter:
    """Calls per operation, thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.calls = {}
        self.failures = {}  # 5xx answers and proxy errors, by kind

    def add(self, op):
        with self.lock:
            self.calls[op] = self.calls.get(op, 0) + 1

    def fail(self, kind):
        with self.lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1

    def snapshot(self):
        with self.lock:
            return dict(self.calls)

    def failure_snapshot(self):
        with self.lock:
            return dict(self.failures)

    def reset(self):
        with self.lock:
            self.calls.clear()
            self.failures.clear()


def start_proxy(upstream_port, counter):
    """Counting HTTP/1.1 proxy in front of moto. Each client connection gets
    its own handler thread and keeps one upstream connection, so the proxy
    adds a hop but no connection set-up per call."""
    local = threading.local()

    def upstream():
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            local.conn = conn
        return conn

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "")
            counter.add(target.split(".")[-1] or "(none)")
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "connection", "expect")}
            for attempt in range(2):
                conn = upstream()
                try:
                    conn.request("POST", self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    break
                except (http.client.HTTPException, OSError) as e:
                    # A stale keep-alive connection: reconnect once.
                    conn.close()
                    local.conn = None
                    if attempt == 1:
                        counter.fail(f"proxy: {type(e).__name__}")
                        raise
            if resp.status >= 500:
                counter.fail(f"HTTP {resp.status} {resp.getheader('x-amzn-ErrorType', '')}".strip())
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in ("content-length", "connection", "transfer-encoding", "server", "date"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


class Emulator:
    """moto_server on a free loopback port plus the counting proxy.
    `endpoint` is the proxy (what tools use); `direct` is moto itself (for
    set-up and checks that must not be counted)."""

    def __init__(self, moto_server):
        self.moto_port = free_port()
        self.proc = subprocess.Popen([moto_server, "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.moto_port)
        self.counter = Counter()
        self.server, self.proxy_port = start_proxy(self.moto_port, self.counter)
        self.endpoint = f"http://127.0.0.1:{self.proxy_port}"
        self.direct = f"http://127.0.0.1:{self.moto_port}"

    def reset(self):
        """Wipes moto's state and the call counts."""
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=60)
        conn.request("POST", "/moto-api/reset", body=b"")
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if resp.status != 200:
            sys.exit(f"moto reset failed: HTTP {resp.status}")
        self.counter.reset()

    def close(self):
        self.server.shutdown()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def aws_env(extra=None):
    """Environment for any AWS client in the benchmarks: dummy credentials,
    no instance metadata lookups, no endpoint inherited from the caller."""
    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1", AWS_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_PAGER="")
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def key_name(i):
    return f"KEY_{i:05d}"


def value(i, generation=0):
    """A 24-character value; `generation` changes it (an edit)."""
    return f"v{generation:03d}-{i:05d}-{(i * 2654435761) % 10**12:012d}"[:24].ljust(24, "x")


def write_env(path, n, changed=(), generation=1):
    """Writes n keys; keys whose index is in `changed` get `generation`'s value."""
    changed = set(changed)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for i in range(n):
            f.write(f"{key_name(i)}={value(i, generation if i in changed else 0)}\n")
    os.rename(tmp, path)


def ten_percent(n):
    """The keys a 10% change edits: every tenth, so spread over the file."""
    return range(0, n, 10)
