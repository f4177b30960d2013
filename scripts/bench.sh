#!/usr/bin/env bash
# The one benchmark command (README "Measurements"): builds the release
# binary, then runs, in one go and on this machine,
#   1. the pure-code microbenchmarks (criterion, benches/pure.rs);
#   2. the quota benchmark (examples/quota_bench.rs: the real reconcile pass against
#      the in-memory store with AWS-like latency and a 50 write-TPS quota);
#   3. the side-by-side comparison on moto (benches/compare.py): secretsync
#      against baselines A (AWS CLI loop), B (naive boto3), C (careful
#      boto3), plus cold start, peak RSS, binary size and the cost model;
#   4. the agent benchmark (benches/agent_bench.py): propagation latency,
#      calls per edit, idle wake-ups and RSS.
# The combined Markdown goes to $CARGO_TARGET_DIR/bench/results.md (default
# target/bench/results.md) and to stdout.
#
# Usage: scripts/bench.sh [--quick]
#   --quick   smaller sizes and shorter criterion runs (about 4 minutes
#             after the builds). The full run took 15.5 minutes (builds
#             included, incremental) at a load average of 2-4 on a 2-core
#             machine and 20 minutes at 7-10: baseline A dominates (two AWS
#             CLI processes per key, 0.5-6 s each depending on the load), so
#             compare.py runs A last and rewrites its output after every step.
# Env: MOTO_VENV (as scripts/setup-moto.sh), BENCH_VENV (default
#      <repo>/.venv-bench: the AWS CLI for baseline A, installed from PyPI
#      on first use).
# Benchmarks use release builds; the tests (scripts/test.sh) never do.
set -euo pipefail

AWSCLI_VERSION="1.46.3"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

quick=()
case "${1:-}" in
    "") ;;
    --quick) quick=(--quick) ;;
    -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "usage: scripts/bench.sh [--quick]" >&2; exit 2 ;;
esac

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
out_dir="$target_dir/bench"
mkdir -p "$out_dir"
export AWS_EC2_METADATA_DISABLED=true

echo "==> moto emulator" >&2
moto_server="$(bash scripts/setup-moto.sh)"
moto_python="$(dirname "$moto_server")/python"

echo "==> AWS CLI $AWSCLI_VERSION (baseline A) in ${BENCH_VENV:-.venv-bench}" >&2
bench_venv="${BENCH_VENV:-$repo_root/.venv-bench}"
if ! "$bench_venv/bin/aws" --version 2>&1 | grep -q "aws-cli/$AWSCLI_VERSION "; then
    python3 -m venv "$bench_venv"
    "$bench_venv/bin/pip" install --quiet --disable-pip-version-check --no-input "awscli==$AWSCLI_VERSION"
fi

echo "==> release build" >&2
cargo build --release --bin secretsync
bin="$target_dir/release/secretsync"

echo "==> pure microbenchmarks (criterion)" >&2
criterion_args=()
[[ ${#quick[@]} -gt 0 ]] && criterion_args=(--warm-up-time 1 --measurement-time 2)
cargo bench --bench pure -- "${criterion_args[@]}" >&2
"$moto_python" benches/report_pure.py "$target_dir/criterion" >"$out_dir/pure.md" ||
    echo "bench: a pure benchmark missed its target (see the table)" >&2

echo "==> quota benchmark (examples/quota_bench.rs)" >&2
cargo run --release --example quota_bench -- "${quick[@]}" >"$out_dir/quota.md"

echo "==> fleet simulation (examples/fleet_bench.rs)" >&2
cargo run --release --example fleet_bench -- "${quick[@]}" >"$out_dir/fleet.md"

echo "==> footprint: size, RSS/RssAnon at 3 and 1,000 keys, CPU (benches/footprint.py)" >&2
"$moto_python" benches/footprint.py --moto "$moto_server" --bin "release=$bin" >"$out_dir/footprint.md"

echo "==> agent: propagation, calls per edit, idle (benches/agent_bench.py)" >&2
agent_args=()
[[ ${#quick[@]} -gt 0 ]] && agent_args=(--edits 10 --idle-seconds 10)
"$moto_python" benches/agent_bench.py --bin "$bin" --moto "$moto_server" "${agent_args[@]}" >"$out_dir/agent.md"

echo "==> side by side on moto (benches/compare.py)" >&2
"$moto_python" benches/compare.py --bin "$bin" --moto "$moto_server" --python "$moto_python" \
    --aws "$bench_venv/bin/aws" "${quick[@]}" --out "$out_dir/compare.md" >/dev/null

{
    echo "## Benchmark results ($(date -u +%Y-%m-%d), $(nproc) cores, scripts/bench.sh ${quick[*]})"
    echo
    echo "### Pure code (criterion)"
    echo
    cat "$out_dir/pure.md"
    echo
    echo "### Against an AWS-like store: quota, pacing, engine overhead"
    echo
    cat "$out_dir/quota.md"
    echo
    cat "$out_dir/fleet.md"
    echo
    echo "### Footprint of the release binary"
    echo
    cat "$out_dir/footprint.md"
    echo
    cat "$out_dir/compare.md"
    echo
    echo "### The agent: propagation, calls per edit, idle"
    echo
    cat "$out_dir/agent.md"
} >"$out_dir/results.md"
cat "$out_dir/results.md"
echo "wrote $out_dir/results.md" >&2
