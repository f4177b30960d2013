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

Writes Markdown to --out and prints it.
"""
import argparse
import json
import os
import shutil
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
    else:
        plan = [("ours", [100, 1000, 5000], ["one-to-one"]), ("ours", [100, 1000], ["many-to-one"]),
                ("A", [100], ["one-to-one"]), ("B", [100, 1000], ["one-to-one"]),
                ("C", [100, 1000], ["one-to-one"])]
    b = Bench(args)
    started = time.monotonic()
    try:
        for tool, sizes, mappings in plan:
            for mapping in mappings:
                for n in sizes:
                    b.series(tool, n, mapping, A_SCENARIOS if tool == "A" else SCENARIOS)
    finally:
        b.close()
    elapsed = time.monotonic() - started
    doc = "\n\n".join([
        f"<!-- generated by benches/compare.py{' --quick' if args.quick else ''} in {elapsed:.0f} s -->",
        "### Side by side on moto (same data, same counting proxy)",
        results_table(b.rows),
        "### Ratios: ours ÷ baseline (one-to-one; below 1 means we are cheaper/faster)",
        ratio_table(b.rows),
        "† A's calls do not depend on what changed (it never compares values), so it runs only the "
        "initial and no-op scenarios; its no-op run is the comparison for the change scenarios.",
    ]) + "\n"
    with open(args.out, "w") as f:
        f.write(doc)
    print(doc)


if __name__ == "__main__":
    main()
