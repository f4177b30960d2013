#!/usr/bin/env python3
"""End-to-end agent benchmark against a local moto server.

Measures, for a running `secretsync run`:
  * propagation latency: atomic rename of a source file -> new value readable
    in the emulator, over N edits (p50/p99, also minus the debounce);
  * API calls per edit, through the counting proxy of benchlib.py (the same
    one benches/compare.py uses for every tool);
  * RSS after the initial sync and idle with 4 syncs and 1,000 keys, and
    context switches (wake-ups) per minute while idle.
Cold start (run -> READY, -> SYNCED) is measured by benches/compare.py.

Usage: benches/agent_bench.py [--bin target/release/secretsync] [--edits 50]
Needs the moto venv made by scripts/setup-moto.sh (boto3 comes with moto);
scripts/bench.sh runs it. Everything binds 127.0.0.1. Prints a Markdown
table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import boto3

import benchlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/secretsync"))
    ap.add_argument("--moto", default=os.path.join(REPO, ".venv-moto/bin/moto_server"))
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--debounce-ms", type=int, default=200)
    ap.add_argument("--idle-seconds", type=int, default=60)
    args = ap.parse_args()
    benchlib.exit_on_sigterm()

    work = tempfile.mkdtemp(prefix="ss-bench-")
    emu = benchlib.Emulator(args.moto)
    procs = []
    try:
        counter = emu.counter
        endpoint = emu.endpoint
        sm = boto3.client("secretsmanager", endpoint_url=emu.direct,
                          region_name="us-east-1", aws_access_key_id="b", aws_secret_access_key="b")

        per = args.keys // 3
        files = []
        for i in range(3):
            p = os.path.join(work, f"s{i}.env")
            with open(p, "w") as f:
                f.write("".join(f"K{i}_{k:05d}=value-{k}\n" for k in range(per)))
            files.append(p)
        edit_file = os.path.join(work, "edit.env")
        with open(edit_file, "w") as f:
            f.write("EDITED=0\n")
        syncs = "".join(
            f"  - name: s{i}\n    source:\n      files: [{files[i]}]\n    destination:\n      key_schema: \"s{i}/{{{{secretKey}}}}\"\n"
            for i in range(3))
        syncs += f"  - name: edit\n    source:\n      files: [{edit_file}]\n    destination:\n      key_schema: \"edit/{{{{secretKey}}}}\"\n"
        cfg = os.path.join(work, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(f"""agent:
  id: bench
  socket: {work}/ctl.sock
  state_dir: {work}/state
  debounce: {args.debounce_ms}ms
  reconcile_interval: 10m
  log_level: warn
aws:
  region: us-east-1
  endpoint_url: {endpoint}
  max_write_tps: 1000
  max_read_tps: 1000
syncs:
{syncs}""")
        env = benchlib.aws_env({"RUST_LOG": "warn"})
        t0 = time.monotonic()
        agent = subprocess.Popen([args.bin, "run", "--config", cfg], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(agent)

        def status():
            r = subprocess.run([args.bin, "status", "--json", "--socket", f"{work}/ctl.sock"],
                               capture_output=True, text=True)
            return json.loads(r.stdout) if r.returncode == 0 else None

        synced = None
        while time.monotonic() - t0 < 600:
            s = status()
            if s and all(x["sync_status"] == "SYNCED" for x in s["syncs"]):
                synced = time.monotonic() - t0
                break
            time.sleep(0.05)
        rss_after_sync = int(proc_status(agent.pid)["VmRSS"].split()[0])

        # Idle: context switches summed over threads that exist at both
        # samples (threads that exit in between would make the sum shrink).
        time.sleep(2)

        def switches():
            out = {}
            for tid in os.listdir(f"/proc/{agent.pid}/task"):
                try:
                    with open(f"/proc/{agent.pid}/task/{tid}/status") as f:
                        out[tid] = sum(int(line.split(":")[1]) for line in f if "ctxt_switches" in line)
                except OSError:
                    pass
            return out
        sw0 = switches()
        time.sleep(args.idle_seconds)
        sw1 = switches()
        idle_rss = int(proc_status(agent.pid)["VmRSS"].split()[0])
        delta = sum(v - sw0.get(t, 0) for t, v in sw1.items())
        wakeups_per_min = delta * 60 / args.idle_seconds
        threads = len(sw1)

        # Propagation latency.
        lat = []
        before = counter.snapshot()
        for i in range(1, args.edits + 1):
            value = f"edit-{i}"
            t = time.monotonic()
            write_atomic(edit_file, f"EDITED={value}\n")
            while True:
                try:
                    v = sm.get_secret_value(SecretId="edit/EDITED")["SecretString"]
                except Exception:
                    v = None
                if v == value:
                    break
                if time.monotonic() - t > 30:
                    sys.exit("edit never arrived")
                time.sleep(0.002)
            lat.append((time.monotonic() - t) * 1000)
            time.sleep(args.debounce_ms / 1000 + 0.1)
        after = counter.snapshot()
        calls = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
        writes = sum(v for k, v in calls.items() if k in ("PutSecretValue", "CreateSecret", "TagResource", "UpdateSecret", "UntagResource"))
        reads = sum(v for k, v in calls.items() if k in ("ListSecrets", "BatchGetSecretValue", "GetSecretValue", "DescribeSecret"))

        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        rows = [
            ("propagation p50 (rename → readable)", f"{p50:.0f} ms (debounce + {p50 - args.debounce_ms:.0f} ms)"),
            ("propagation p99", f"{p99:.0f} ms (debounce + {p99 - args.debounce_ms:.0f} ms)"),
            (f"API calls per edit (over {args.edits} edits)", f"{writes / args.edits:.2f} writes + {reads / args.edits:.2f} reads ({calls})"),
            (f"run → all SYNCED ({args.keys} keys over 4 syncs, moto)", f"{synced:.1f} s" if synced else "n/a"),
            (f"RSS after initial sync ({args.keys} keys, 4 syncs)", f"{rss_after_sync / 1024:.1f} MiB"),
            ("idle RSS", f"{idle_rss / 1024:.1f} MiB"),
            (f"context switches per minute while idle ({args.idle_seconds} s, {threads} threads)", f"{wakeups_per_min:.1f}"),
        ]
        print("| measure | result |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        emu.close()


if __name__ == "__main__":
    main()
