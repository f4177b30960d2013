#!/usr/bin/env python3
"""Side-by-side benchmark: secretsync against the tools people use today,
on the same moto emulator, the same generated data and the same counting
proxy (benches/benchlib.py).

Tools (each a fresh process per run, the way cron would run it):
  ours  `secretsync sync` (one reconcile pass, one-shot), one-to-one and
        many-to-one;
  A     benches/baselines/a_awscli_loop.sh (AWS CLI, describe then
        create/put per key);
  B     benches/baselines/b_boto3_naive.py (GetSecretValue per key, write
        if different);
  C     benches/baselines/c_boto3_careful.py (ListSecrets + batched
        BatchGetSecretValue, diff writes with tokens).

Scenarios per tool and size N, in order on one emulator state: initial sync
into an empty emulator, a no-op pass (nothing changed), a 1-key change, a
10% change. Each run is checked afterwards against moto directly (not
counted): the values must be the ones in the file.

Also measured here: agent cold start (`secretsync run` -> READY=1 via a
NOTIFY_SOCKET we listen on, -> all SYNCED with 1,000 keys), peak RSS of a
5,000-key initial `sync`, binary size, and the API-call cost model (calls
per drift check and per edit on a typical host, from measured passes).

Writes Markdown to --out and prints it.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import boto3

import benchlib
from benchlib import READ_OPS, WRITE_OPS, aws_env, key_name, ten_percent, value, write_env

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCENARIOS = ("initial", "no-op", "1-key change", "10% change")
# Baseline A never compares values: every run after the first makes one
# DescribeSecret and one PutSecretValue per key whatever changed, and it
# starts two AWS CLI processes per key (seconds each on a loaded 2-core
# machine). So it runs the initial and the no-op scenario only; its no-op
# run stands for the change scenarios (marked † in the ratio table).
A_SCENARIOS = ("initial", "no-op")
PRICE_PER_CALL = 0.05 / 10_000  # USD, Secrets Manager API calls
DAYS_PER_MONTH = 30


def run_timed(cmd, env, cwd=None):
    """Runs cmd to completion; returns (seconds, exit code, stderr tail,
    peak RSS in KiB of the process itself, from wait4)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # Read stderr fully before wait4 so a chatty child cannot block.
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return time.monotonic() - t, p.returncode, err.decode(errors="replace")[-2000:], usage.ru_maxrss


class Bench:
    def __init__(self, args):
        self.args = args
        self.emu = benchlib.Emulator(args.moto)
        self.direct = boto3.client("secretsmanager", endpoint_url=self.emu.direct, region_name="us-east-1",
                                   aws_access_key_id="b", aws_secret_access_key="b")
        self.work = tempfile.mkdtemp(prefix="ss-compare-")
        self.rows = []  # dicts: tool, mapping, n, scenario, wall, calls, changed, rss
        self.env = aws_env({"AWS_ENDPOINT_URL": self.emu.endpoint})

    # ---- tools -------------------------------------------------------
    def ours_config(self, name, files, mapping, syncs=None):
        """agent.yaml for our binary. Pacing is lifted to 1000 calls/s: moto
        has no quota and the baselines are not paced either (the quota
        benchmark, benches/quota.rs, measures the default pacing)."""
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        syncs = syncs or [("bench", files)]
        body = ""
        for sync, fs in syncs:
            body += f"  - name: {sync}\n    source:\n      files: [{', '.join(fs)}]\n    destination:\n"
            if mapping == "many-to-one":
                body += f"      mapping: many-to-one\n      secret_name: {sync}/all\n"
            else:
                body += f"      key_schema: \"{sync}/{{{{secretKey}}}}\"\n"
        cfg = os.path.join(d, "agent.yaml")
        with open(cfg, "w") as f:
            f.write(f"""agent:
  id: bench
  socket: {d}/ctl.sock
  state_dir: {d}/state
  debounce: 100ms
  reconcile_interval: 10m
  log_level: warn
aws:
  region: us-east-1
  endpoint_url: {self.emu.endpoint}
  max_write_tps: 1000
  max_read_tps: 1000
syncs:
{body}""")
        return cfg

    def tool_cmd(self, tool, env_file, cfg):
        if tool == "ours":
            return [self.args.bin, "sync", "--config", cfg]
        if tool == "A":
            return ["bash", os.path.join(HERE, "baselines", "a_awscli_loop.sh"), env_file, "bench/"]
        script = {"B": "b_boto3_naive.py", "C": "c_boto3_careful.py"}[tool]
        return [self.args.python, os.path.join(HERE, "baselines", script), env_file, "bench/"]

    def tool_env(self, tool):
        env = dict(self.env)
        if tool == "A":
            env["PATH"] = os.path.dirname(self.args.aws) + os.pathsep + env["PATH"]
        return env

    # ---- verification (direct to moto, not counted) -------------------
    def verify(self, mapping, n, generations):
        """Checks the keys in `generations` (index -> generation) plus the
        first and last key hold the file's values."""
        sample = dict(generations)
        for i in (0, n - 1):
            sample.setdefault(i, 0)
        if mapping == "many-to-one":
            got = json.loads(self.direct.get_secret_value(SecretId="bench/all")["SecretString"])
            if len(got) != n:
                sys.exit(f"verify: many-to-one secret has {len(got)} keys, expected {n}")
            for i, g in sample.items():
                if got.get(key_name(i)) != value(i, g):
                    sys.exit(f"verify: bench/all[{key_name(i)}] is not the file's value")
            return
        ids = [f"bench/{key_name(i)}" for i in sorted(sample)]
        for k in range(0, len(ids), 20):
            resp = self.direct.batch_get_secret_value(SecretIdList=ids[k:k + 20])
            if resp.get("Errors"):
                sys.exit(f"verify: {resp['Errors'][:3]}")
            for v in resp["SecretValues"]:
                i = int(v["Name"].split("_")[-1])
                if v["SecretString"] != value(i, sample[i]):
                    sys.exit(f"verify: {v['Name']} is not the file's value")

    # ---- one tool, one size, four scenarios --------------------------
    def series(self, tool, n, mapping="one-to-one", scenarios=SCENARIOS):
        self.emu.reset()
        name = f"{tool}-{mapping}-{n}"
        d = os.path.join(self.work, name)
        os.makedirs(d, exist_ok=True)
        env_file = os.path.join(d, "app.env")
        cfg = self.ours_config(name, [env_file], mapping) if tool == "ours" else None
        gens = {}
        for scenario in scenarios:
            if scenario == "initial":
                write_env(env_file, n)
                changed = n
            elif scenario == "no-op":
                os.utime(env_file)  # touched, same content
                changed = 0
            elif scenario == "1-key change":
                gens = {0: 1}
                write_env(env_file, n, changed=[0], generation=1)
                changed = 1
            else:
                keys = list(ten_percent(n))
                gens = {i: 2 for i in keys}
                write_env(env_file, n, changed=keys, generation=2)
                changed = len(keys)
            if mapping == "many-to-one":
                changed = min(changed, 1)  # one secret
            self.emu.counter.reset()
            wall, code, err, rss = run_timed(self.tool_cmd(tool, env_file, cfg), self.tool_env(tool))
            calls = self.emu.counter.snapshot()
            fails = sum(self.emu.counter.failure_snapshot().values())
            if code != 0:
                sys.exit(f"{name} {scenario}: exit {code}\n{err}")
            self.verify(mapping, n, gens)
            row = dict(tool=tool, mapping=mapping, n=n, scenario=scenario, wall=wall, calls=calls,
                       changed=changed, rss=rss, fails=fails)
            self.rows.append(row)
            print(f"  {name:28} {scenario:13} {wall:8.2f} s  {sum(calls.values()):6} calls  {fmt_ops(calls)}",
                  file=sys.stderr, flush=True)

    # ---- cold start ---------------------------------------------------
    def cold_start(self, n):
        """`secretsync run` with n keys: time to READY=1 (sd_notify), to the
        socket answering, to all SYNCED; peak RSS (VmHWM) at SYNCED."""
        self.emu.reset()
        d = os.path.join(self.work, f"cold-{n}")
        os.makedirs(d, exist_ok=True)
        env_file = os.path.join(d, "app.env")
        write_env(env_file, n)
        cfg = self.ours_config(f"cold-{n}", [env_file], "one-to-one")
        sock_path = os.path.join(d, "notify.sock")
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        ns.bind(sock_path)
        ns.settimeout(0.01)
        env = dict(self.env, NOTIFY_SOCKET=sock_path, RUST_LOG="warn")
        t0 = time.monotonic()
        agent = subprocess.Popen([self.args.bin, "run", "--config", cfg], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = answered = synced = None
        hwm = None
        try:
            while time.monotonic() - t0 < 10 and ready is None:
                try:
                    if b"READY=1" in ns.recv(4096):
                        ready = time.monotonic() - t0
                except socket.timeout:
                    pass
            ctl = os.path.join(d, "ctl.sock")
            while time.monotonic() - t0 < 300:
                r = subprocess.run([self.args.bin, "status", "--json", "--socket", ctl],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    answered = answered or time.monotonic() - t0
                    s = json.loads(r.stdout)
                    if all(x["sync_status"] == "SYNCED" for x in s["syncs"]):
                        synced = time.monotonic() - t0
                        break
                time.sleep(0.02)
            with open(f"/proc/{agent.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1])
        finally:
            agent.terminate()
            agent.wait(15)
            ns.close()
        if synced is None:
            sys.exit("cold start: the agent never reported SYNCED")
        self.verify("one-to-one", n, {})
        return dict(n=n, ready=ready, answered=answered, synced=synced, hwm=hwm)

    # ---- cost model inputs --------------------------------------------
    def typical_host(self, keys=200, syncs=3):
        """Calls of one drift check (all syncs, nothing changed) and of one
        edit (one key in one sync), measured with `sync` on a host with
        `keys` keys over `syncs` syncs."""
        self.emu.reset()
        d = os.path.join(self.work, "typical")
        os.makedirs(d, exist_ok=True)
        per = [keys // syncs + (1 if i < keys % syncs else 0) for i in range(syncs)]
        files, layout = [], []
        for s, count in enumerate(per):
            p = os.path.join(d, f"s{s}.env")
            with open(p, "w") as f:
                f.write("".join(f"S{s}_{key_name(i)}={value(i)}\n" for i in range(count)))
            files.append(p)
            layout.append((f"s{s}", [p]))
        cfg = self.ours_config("typical", files, "one-to-one", syncs=layout)
        run = lambda *extra: run_timed([self.args.bin, "sync", "--config", cfg, *extra], self.env)  # noqa: E731
        if run()[1] != 0:
            sys.exit("typical host: initial sync failed")
        self.emu.counter.reset()
        if run()[1] != 0:
            sys.exit("typical host: drift check failed")
        drift = self.emu.counter.snapshot()
        with open(files[0]) as f:
            text = f.read()
        with open(files[0], "w") as f:
            f.write(text.replace(f"S0_{key_name(0)}={value(0)}\n", f"S0_{key_name(0)}={value(0, 1)}\n", 1))
        self.emu.counter.reset()
        if run("--sync", "s0")[1] != 0:
            sys.exit("typical host: edit pass failed")
        edit = self.emu.counter.snapshot()
        # Baseline C's cron run over the same number of keys (one prefix),
        # measured: its calls grow in steps (pages, batches), not per key.
        self.emu.reset()
        c_file = os.path.join(d, "c.env")
        write_env(c_file, keys)
        for _ in range(2):
            self.emu.counter.reset()
            if run_timed(self.tool_cmd("C", c_file, None), self.env)[1] != 0:
                sys.exit("typical host: baseline C failed")
        c_run = self.emu.counter.snapshot()
        return dict(keys=keys, syncs=syncs, drift=drift, edit=edit, c_run=c_run)

    def close(self):
        self.emu.close()
        shutil.rmtree(self.work, ignore_errors=True)


def fmt_ops(calls):
    short = {"ListSecrets": "List", "BatchGetSecretValue": "BatchGet", "GetSecretValue": "Get",
             "DescribeSecret": "Describe", "CreateSecret": "Create", "PutSecretValue": "Put",
             "TagResource": "Tag", "UntagResource": "Untag", "UpdateSecret": "Update",
             "DeleteSecret": "Delete", "RestoreSecret": "Restore"}
    return ", ".join(f"{v} {short.get(k, k)}" for k, v in sorted(calls.items(), key=lambda kv: -kv[1])) or "none"


def total(calls):
    return sum(calls.values())


def writes(calls):
    return sum(v for k, v in calls.items() if k in WRITE_OPS)


def per_changed(row):
    if row["changed"] == 0:
        return "—"
    return f"{total(row['calls']) / row['changed']:.2f}"


TOOL_NAMES = {
    "ours": "secretsync `sync`",
    "A": "A: AWS CLI loop",
    "B": "B: boto3 naive",
    "C": "C: boto3 careful",
}


def results_table(rows):
    out = ["| tool | mapping | N | scenario | wall | API calls | writes | calls by operation | calls per changed key "
           "| emulator errors¹ |",
           "|---|---|--:|---|--:|--:|--:|---|--:|--:|"]
    for r in rows:
        out.append(f"| {TOOL_NAMES[r['tool']]} | {r['mapping']} | {r['n']:,} | {r['scenario']} | "
                   f"{r['wall']:.2f} s | {total(r['calls']):,} | {writes(r['calls']):,} | {fmt_ops(r['calls'])} | "
                   f"{per_changed(r)} | {r['fails']} |")
    out.append("")
    out.append("¹ HTTP 5xx answers from moto (it answers 500 now and then under concurrent writes); the "
               "client's retry of such a call is counted as another call.")
    return "\n".join(out)


def ratio_table(rows):
    """ours ÷ baseline for wall time and API calls, same N and scenario. A
    runs only the initial and no-op scenarios (see A_SCENARIOS); for the
    change scenarios its no-op run stands in, marked †."""
    ours = {(r["n"], r["scenario"]): r for r in rows if r["tool"] == "ours" and r["mapping"] == "one-to-one"}
    base = {(r["tool"], r["n"], r["scenario"]): r for r in rows if r["tool"] != "ours"}
    out = ["| ours ÷ | N | scenario | wall time | API calls | writes |", "|---|--:|---|--:|--:|--:|"]

    def ratio(a, b):
        if b == 0:
            return "— (0 ÷ 0)" if a == 0 else f"{a} ÷ 0"
        return f"{a / b:.3f}"

    for tool in ("A", "B", "C"):
        for n in sorted({r["n"] for r in rows if r["tool"] == tool}):
            for scenario in SCENARIOS:
                o = ours.get((n, scenario))
                r = base.get((tool, n, scenario))
                mark = ""
                if r is None and tool == "A":
                    r, mark = base.get((tool, n, "no-op")), "†"
                if not o or not r:
                    continue
                out.append(f"| {TOOL_NAMES[tool]} | {n:,} | {scenario}{mark} | {o['wall'] / r['wall']:.3f} | "
                           f"{ratio(total(o['calls']), total(r['calls']))} | "
                           f"{ratio(writes(o['calls']), writes(r['calls']))} |")
    return "\n".join(out)


def cost_model(typical, rows, edits_per_day=10):
    """Monthly API calls and cost, from measured passes."""
    drift, edit = total(typical["drift"]), total(typical["edit"])
    keys = typical["keys"]
    lines = [f"Inputs (measured with `secretsync sync` on moto, {keys} keys over {typical['syncs']} syncs): "
             f"one drift check (all syncs, nothing changed) = {drift} calls ({fmt_ops(typical['drift'])}); "
             f"one edit (1 key in 1 sync) = {edit} calls ({fmt_ops(typical['edit'])}). "
             f"{edits_per_day} edits/day, {DAYS_PER_MONTH}-day month, $0.05 per 10,000 calls.", ""]
    lines += ["| setup | detects drift within | calls/day | calls/month | cost/month |", "|---|---|--:|--:|--:|"]

    def row(label, detect, per_day):
        month = per_day * DAYS_PER_MONTH
        lines.append(f"| {label} | {detect} | {per_day:,.0f} | {month:,.0f} | ${month * PRICE_PER_CALL:,.2f} |")

    for label, minutes in (("1m", 1), ("10m (default)", 10), ("1h", 60), ("0 (off)", None)):
        checks = 0 if minutes is None else 24 * 60 / minutes
        detect = "never (next edit only)" if minutes is None else f"{minutes} min"
        row(f"secretsync, `reconcile_interval: {label}`", detect, checks * drift + edits_per_day * edit)
    # Baselines run from cron, over the same number of keys: A and B scaled
    # linearly from their measured no-op run (their calls are per key), C
    # measured at exactly that size (its calls grow in pages and batches).
    for tool in ("A", "B"):
        noop = [r for r in rows if r["tool"] == tool and r["scenario"] == "no-op"]
        if not noop:
            continue
        r = max(noop, key=lambda r: r["n"])
        per_key = total(r["calls"]) / r["n"]
        note = f"{per_key:.2f} calls per key per run, measured at N={r['n']:,}"
        row(f"{TOOL_NAMES[tool]} from cron every minute ({note})", "1 min", per_key * keys * 24 * 60)
    per_run = total(typical["c_run"])
    note = f"{per_run} calls per run, measured at N={keys}: {fmt_ops(typical['c_run'])}"
    row(f"{TOOL_NAMES['C']} from cron every minute ({note})", "1 min", per_run * 24 * 60)
    row(f"{TOOL_NAMES['C']} from cron every 10 minutes", "10 min", per_run * 24 * 6)
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="release secretsync binary")
    ap.add_argument("--moto", required=True, help="moto_server executable")
    ap.add_argument("--python", required=True, help="python with boto3, for baselines B and C")
    ap.add_argument("--aws", required=True, help="AWS CLI executable, for baseline A")
    ap.add_argument("--quick", action="store_true", help="small sizes only (a few minutes)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    benchlib.exit_on_sigterm()

    if args.quick:
        plan = [("ours", [10, 100, 1000], ["one-to-one"]), ("ours", [100, 1000], ["many-to-one"]),
                ("A", [10], ["one-to-one"]),
                ("B", [100], ["one-to-one"]), ("C", [100, 1000], ["one-to-one"])]
        cold_n, rss_n = 1000, 1000
    else:
        plan = [("ours", [100, 1000, 5000], ["one-to-one"]), ("ours", [100, 1000], ["many-to-one"]),
                ("A", [100], ["one-to-one"]), ("B", [100, 1000], ["one-to-one"]),
                ("C", [100, 1000], ["one-to-one"])]
        cold_n, rss_n = 1000, 5000
    b = Bench(args)
    started = time.monotonic()
    found = {}

    def render():
        """The Markdown document from what has run so far (rewritten after
        every step, so a stopped run still leaves its results)."""
        elapsed = time.monotonic() - started
        size = os.path.getsize(args.bin)
        stripped = None
        if shutil.which("strip"):
            with tempfile.NamedTemporaryFile() as t:
                subprocess.run(["strip", "-o", t.name, args.bin], check=True)
                stripped = os.path.getsize(t.name)
        mib = 1024 * 1024
        footprint = ["| measure | result |", "|---|--:|"]
        cold = found.get("cold")
        if cold:
            footprint += [
                f"| cold start: `secretsync run` → READY=1 (sd_notify) | {cold['ready'] * 1000:.0f} ms |",
                f"| cold start: `secretsync run` → control socket answers | {cold['answered'] * 1000:.0f} ms |",
                f"| cold start: `secretsync run` → all SYNCED, {cold['n']:,} keys (first sync, moto) | "
                f"{cold['synced']:.2f} s |",
                f"| agent peak RSS (VmHWM) at SYNCED, {cold['n']:,} keys | {cold['hwm'] / 1024:.1f} MiB |",
            ]
        rss_rows = [r for r in b.rows if r["tool"] == "ours" and r["n"] == rss_n and r["scenario"] == "initial"
                    and r["mapping"] == "one-to-one"]
        if rss_rows:
            footprint.append(f"| peak RSS of a {rss_n:,}-key initial `sync` (wait4 maxrss) | "
                             f"{rss_rows[0]['rss'] / 1024:.1f} MiB |")
        footprint.append(f"| binary size (release) | {size / mib:.1f} MiB"
                         + (f" ({stripped / mib:.1f} MiB stripped)" if stripped else "") + " |")
        parts = [
            f"<!-- generated by benches/compare.py{' --quick' if args.quick else ''} in {elapsed:.0f} s"
            + ("" if found.get("done") else " (incomplete: stopped before the end)") + " -->",
            "### Side by side on moto (same data, same counting proxy)",
            results_table(b.rows),
            "### Ratios: ours ÷ baseline (one-to-one; below 1 means we are cheaper/faster)",
            ratio_table(b.rows),
            "† A's calls do not depend on what changed (it never compares values), so it runs only the "
            "initial and no-op scenarios; its no-op run is the comparison for the change scenarios.",
        ]
        if "typical" in found:
            parts += ["### Cost model (API calls per month, typical host)", cost_model(found["typical"], b.rows)]
        parts += ["### Cold start and footprint", "\n".join(footprint)]
        doc = "\n\n".join(parts) + "\n"
        with open(args.out, "w") as f:
            f.write(doc)
        return doc

    try:
        for tool, sizes, mappings in plan:
            if tool == "A":
                continue  # slowest: last
            for mapping in mappings:
                for n in sizes:
                    b.series(tool, n, mapping)
                    render()
        found["cold"] = b.cold_start(cold_n)
        found["typical"] = b.typical_host()
        render()
        for tool, sizes, mappings in plan:
            if tool == "A":
                for n in sizes:
                    b.series(tool, n, "one-to-one", A_SCENARIOS)
                    render()
        found["done"] = True
    finally:
        b.close()
    print(render())


if __name__ == "__main__":
    main()
