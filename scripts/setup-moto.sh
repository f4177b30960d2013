#!/usr/bin/env bash
# Installs the `moto` AWS emulator that the integration tests run against, into a
# private virtualenv, and prints the path of its `moto_server` executable.
#
# Why a venv of our own: the tests need one exact moto version (its behaviour is
# documented in EMULATOR.md and the tests depend on it), and we must not touch the
# system Python. Idempotent: when the venv already holds that version it only
# prints the path, so CI and `scripts/test.sh` can call it on every run.
#
# The tests never run that moto_server bare: tests/support/mod.rs starts
# scripts/conformance/moto_conformant.py with the venv's `python` (next to
# moto_server), which runs the same server behind a check of every request
# against the AWS service model that botocore (a moto dependency) ships. Before
# printing the path we run that checker's self-test (`--check`, no server), so
# a botocore whose model no longer fits the checker fails here, not in a test.
#
# Env: MOTO_VENV  where the venv lives (default: <repo>/.venv-moto)
# Output: stdout gets exactly one line, the moto_server path; install logs are
# shown on stderr only if something fails.
set -euo pipefail

MOTO_VERSION="5.2.5"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MOTO_VENV:-$repo_root/.venv-moto}"
moto_server="$venv/bin/moto_server"

die() {
    echo "setup-moto: $*" >&2
    exit 1
}

# True when the venv has a working interpreter, moto at MOTO_VERSION and the
# server-side dependencies moto_server imports at start-up.
is_ready() {
    [[ -x "$moto_server" && -x "$venv/bin/python" ]] || return 1
    "$venv/bin/python" - "$MOTO_VERSION" >/dev/null 2>&1 <<'PY'
import sys
from importlib.metadata import version
assert version("moto") == sys.argv[1], version("moto")
import flask, flask_cors  # noqa: F401  (moto_server fails without them)
import botocore.session  # noqa: F401  (the conformance check reads its service models)
PY
}

# The conformance checker's self-test against this venv's botocore models.
conformance_ok() {
    local out
    if ! out="$("$venv/bin/python" "$repo_root/scripts/conformance/moto_conformant.py" --check 2>&1)"; then
        echo "$out" >&2
        die "the conformance check (scripts/conformance/moto_conformant.py --check) fails with this venv"
    fi
}

if is_ready; then
    conformance_ok
    echo "$moto_server"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || die "python3 is required (Debian: apt-get install -y python3 python3-venv)"

mkdir -p "$(dirname "$venv")"

# Serialize concurrent runs (two test runs started at once) on the same venv.
if command -v flock >/dev/null 2>&1; then
    # The lock lives outside the repo so it never shows up in `git status`.
    lock="${TMPDIR:-/tmp}/secretsync-setup-moto.$(printf '%s' "$venv" | cksum | cut -d' ' -f1).lock"
    exec 9>"$lock"
    flock 9
    # Another run may have finished the install while we waited.
    if is_ready; then
        conformance_ok
        echo "$moto_server"
        exit 0
    fi
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Creates the venv; on Debian `python3 -m venv` fails when python3-venv (ensurepip)
# is not installed, which we fix ourselves when we are root.
make_venv() {
    rm -rf "$venv"
    python3 -m venv "$venv" >>"$log" 2>&1
}

# Reuse an existing venv whose interpreter still runs (only the packages are off);
# rebuild it otherwise (missing, half-created, or moved so its shebangs broke).
if ! { [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }; then
    if ! make_venv; then
        if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
            echo "setup-moto: python3 -m venv failed; installing python3-venv with apt-get" >&2
            if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >>"$log" 2>&1; then
                DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
                DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >>"$log" 2>&1 ||
                    { cat "$log" >&2; die "could not install python3-venv"; }
            fi
            make_venv || { cat "$log" >&2; die "python3 -m venv $venv failed even with python3-venv installed"; }
        else
            cat "$log" >&2
            rm -rf "$venv"
            die "python3 -m venv failed; install the venv module (Debian: sudo apt-get install -y python3-venv) and rerun"
        fi
    fi
fi

if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
    "moto==$MOTO_VERSION" flask flask-cors >>"$log" 2>&1; then
    cat "$log" >&2
    die "pip install of moto==$MOTO_VERSION failed (see the log above)"
fi

is_ready || { cat "$log" >&2; die "moto installed but $moto_server is not usable"; }
conformance_ok
echo "$moto_server"
