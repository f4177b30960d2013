#!/usr/bin/env python3
"""Footprint of secretsync binaries against a local moto server: file size,
resident memory of the agent and CPU time of one-shot syncs.

For each `--bin LABEL=PATH`:
  * file size;
  * memory of `secretsync run` with one one-to-one sync of 3 keys, then of
    1,000 keys (one .env file), each a fresh agent on an empty emulator: once
    every sync is SYNCED (`secretsync status --json`) and after
    `--idle-seconds` more, VmRSS, RssAnon, RssFile and VmHWM (peak RSS) from
    /proc/PID/status. RssFile is mostly the binary's own pages, shared and
    reclaimable, and grows with what the page cache holds (fault-around);
    RssAnon is the heap and stacks;
  * CPU time (user + sys, from the os.wait4 rusage) of `secretsync sync` of
    1,000 keys into an empty emulator (initial: 1,000 CreateSecret) and of the
    same command again with everything in step (no-op: no write call); the
    median of `--repeat` rounds, each on a reset emulator with a fresh
    state_dir.
The call counts of benchlib's counting proxy (which every tool goes
through) check that each scenario did what it says. Configs mirror
benches/agent_bench.py (write and read pacing at 1,000/s).

Usage: benches/footprint.py --moto PATH/moto_server --bin LABEL=PATH [--bin LABEL=PATH ...]
                            [--repeat 3] [--idle-seconds 5]
Python 3.11 stdlib only; run with the moto venv's python like the other
benches (scripts/setup-moto.sh prints the moto_server path). Everything
binds 127.0.0.1. Prints a Markdown table, one row per binary, on stdout and
progress on stderr; never a secret value (the agent's logs go to files in
the work directory, kept only when a scenario fails).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

MIB = 1024 * 1024
MANY_KEYS = 1000
FEW_KEYS = 3
PROC_FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def log(msg):
    print(f"footprint: {msg}", file=sys.stderr, flush=True)


def proc_kib(pid):
    """PROC_FIELDS of /proc/PID/status, in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in PROC_FIELDS:
                out[k] = int(v.split()[0])
    return out


def prepare(work, endpoint, keys):
    """Writes a .env file of `keys` keys and a config with one one-to-one
    sync of it into `work`; returns the config path."""
    env_file = os.path.join(work, "app.env")
    benchlib.write_env(env_file, keys)
    cfg = os.path.join(work, "agent.yaml")
    with open(cfg, "w") as f:
        f.write(f"""agent:
  id: footprint
  socket: {work}/ctl.sock
  state_dir: {work}/state
  debounce: 200ms
  reconcile_interval: 10m
  log_level: warn
aws:
  region: us-east-1
  endpoint_url: {endpoint}
  max_write_tps: 1000
  max_read_tps: 1000
syncs:
  - name: app
    source:
      files: [{env_file}]
    destination:
      key_schema: "app/{{{{secretKey}}}}"
""")
    return cfg


def check_calls(emu, what, keys):
    """Fails unless the proxy saw, since the last reset, at least `keys`
    CreateSecret (more are SDK retries, logged) or, for keys == 0 (a no-op
    pass), no write call at all."""
    calls = emu.counter.snapshot()
    created = calls.get("CreateSecret", 0)
    if keys:
        ok = created >= keys
    else:
        ok = not any(calls.get(op, 0) for op in benchlib.WRITE_OPS)
    if not ok:
        raise RuntimeError(f"{what}: unexpected API calls {calls}")
    failures = emu.counter.failure_snapshot()
    if created > keys or failures:
        log(f"{what}: {created - keys} extra CreateSecret, emulator failures {failures}")


def agent_memory(binary, emu, work, keys, idle_seconds):
    """Runs the agent on a reset emulator until its sync of `keys` keys is
    SYNCED, idles, and returns proc_kib of the agent."""
    emu.reset()
    cfg = prepare(work, emu.endpoint, keys)
    sock = os.path.join(work, "ctl.sock")
    with open(os.path.join(work, "agent.log"), "w") as agent_log:
        agent = subprocess.Popen([binary, "run", "--config", cfg], env=benchlib.aws_env({"RUST_LOG": "warn"}),
                                 stdout=subprocess.DEVNULL, stderr=agent_log)
    try:
        deadline = time.monotonic() + 600
        while True:
            if agent.poll() is not None:
                raise RuntimeError(f"agent ({keys} keys) exited with {agent.returncode}")
            r = subprocess.run([binary, "status", "--json", "--socket", sock],
                               capture_output=True, text=True)
            if r.returncode == 0:
                syncs = json.loads(r.stdout)["syncs"]
                if syncs and all(s["sync_status"] == "SYNCED" for s in syncs):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"agent ({keys} keys) not SYNCED after 600 s")
            time.sleep(0.1)
        check_calls(emu, f"agent, {keys} keys", keys)
        time.sleep(idle_seconds)
        return proc_kib(agent.pid)
    finally:
        agent.terminate()
        try:
            agent.wait(10)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()


def sync_cpu(binary, cfg, work):
    """CPU seconds (user + sys) of one `secretsync sync --config cfg`."""
    with open(os.path.join(work, "sync.log"), "a") as sync_log:
        p = subprocess.Popen([binary, "sync", "--config", cfg], env=benchlib.aws_env({"RUST_LOG": "warn"}),
                             stdout=subprocess.DEVNULL, stderr=sync_log)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"secretsync sync exited with {p.returncode}")
    return ru.ru_utime + ru.ru_stime


def sync_cpus(binary, emu, work, repeat):
    """Median CPU seconds of the initial and of the no-op one-shot sync of
    MANY_KEYS keys, over `repeat` rounds."""
    initial, noop = [], []
    for i in range(repeat):
        emu.reset()
        round_dir = os.path.join(work, f"round{i}")
        os.mkdir(round_dir)
        cfg = prepare(round_dir, emu.endpoint, MANY_KEYS)
        initial.append(sync_cpu(binary, cfg, round_dir))
        check_calls(emu, "initial sync", MANY_KEYS)
        emu.counter.reset()
        noop.append(sync_cpu(binary, cfg, round_dir))
        check_calls(emu, "no-op sync", 0)
    return statistics.median(initial), statistics.median(noop)


def measure(label, binary, emu, work, args):
    log(f"{label}: agent with {FEW_KEYS} keys")
    few_dir = os.path.join(work, "few")
    os.mkdir(few_dir)
    few = agent_memory(binary, emu, few_dir, FEW_KEYS, args.idle_seconds)
    log(f"{label}: agent with {MANY_KEYS} keys")
    many_dir = os.path.join(work, "many")
    os.mkdir(many_dir)
    many = agent_memory(binary, emu, many_dir, MANY_KEYS, args.idle_seconds)
    log(f"{label}: one-shot sync CPU, {args.repeat} rounds")
    cpu_dir = os.path.join(work, "cpu")
    os.mkdir(cpu_dir)
    cpu_initial, cpu_noop = sync_cpus(binary, emu, cpu_dir, args.repeat)
    return {"size": os.path.getsize(binary), "few": few, "many": many,
            "cpu_initial": cpu_initial, "cpu_noop": cpu_noop}


def rss_cell(kib):
    return " / ".join(f"{kib[k] / 1024:.1f}" for k in ("VmRSS", "RssAnon", "RssFile"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--moto", required=True, help="moto_server from scripts/setup-moto.sh")
    ap.add_argument("--bin", action="append", required=True, metavar="LABEL=PATH",
                    help="a secretsync binary to measure; repeatable")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the one-shot sync CPU measurement")
    ap.add_argument("--idle-seconds", type=float, default=5, help="idle time after SYNCED before reading memory")
    args = ap.parse_args()
    bins = []
    for spec in args.bin:
        label, sep, path = spec.partition("=")
        if not sep or not label or not os.access(path, os.X_OK):
            ap.error(f"--bin {spec}: want LABEL=PATH of an executable")
        bins.append((label, os.path.abspath(path)))
    benchlib.exit_on_sigterm()

    emu = benchlib.Emulator(args.moto)
    results = []
    try:
        for label, binary in bins:
            work = tempfile.mkdtemp(prefix=f"ss-footprint-{label}-")
            try:
                results.append((label, measure(label, binary, emu, work, args)))
            except RuntimeError as e:
                sys.exit(f"footprint: {label}: {e} (logs kept in {work})")
            shutil.rmtree(work)
    finally:
        emu.close()

    print(f"| binary | size (MiB) | {FEW_KEYS} keys: RSS / anon / file (MiB) | {FEW_KEYS} keys: peak | "
          f"{MANY_KEYS:,} keys: RSS / anon / file (MiB) | {MANY_KEYS:,} keys: peak | "
          f"CPU initial sync {MANY_KEYS:,} (s) | CPU no-op sync {MANY_KEYS:,} (s) |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for label, r in results:
        print(f"| {label} | {r['size'] / MIB:.2f} | {rss_cell(r['few'])} | {r['few']['VmHWM'] / 1024:.1f} | "
              f"{rss_cell(r['many'])} | {r['many']['VmHWM'] / 1024:.1f} | "
              f"{r['cpu_initial']:.3f} | {r['cpu_noop']:.3f} |")


if __name__ == "__main__":
    main()
