#!/usr/bin/env bash
# The one test command (README and CI): installs the moto emulator if needed, points
# the integration tests at it, and runs every test target in the debug profile.
# Extra arguments go to `cargo test`, e.g. `scripts/test.sh --test harness_selftest`
# (only that target) or `scripts/test.sh -- --nocapture`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# setup-moto.sh prints only the moto_server path on success; its errors go to
# stderr and `set -e` stops us, so tests never run against a missing emulator.
moto_server="$(bash "$repo_root/scripts/setup-moto.sh")"
export SECRETSYNC_MOTO_SERVER="$moto_server"
# Keep the AWS SDK in any spawned process away from the instance metadata service,
# which does not exist here and would only add connect time-outs.
export AWS_EC2_METADATA_DISABLED=true

# Every target by default; if the caller picks targets (`--test NAME`, `--lib`...)
# run just those, since cargo would otherwise run the union with --all-targets.
targets=(--all-targets)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --benches | --bench | --bench=* | \
            --examples | --example | --example=* | --all-targets | --doc) targets=() ;;
    esac
done

exec cargo test "${targets[@]}" "$@"
