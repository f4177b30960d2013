#!/usr/bin/env bash
# Demo: the secretsync agent against a local AWS emulator (moto), with an
# example config and .env/YAML files in a temporary directory: check, plan,
# run the agent, edit a file and watch the change arrive, then stop it.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

# The slow steps come first (installing the emulator, building); each says
# what it does and how long it usually takes, then how long it took.
step_started=0
step() {
  echo "== $*"
  step_started=$SECONDS
}
took() {
  echo "   (took $((SECONDS - step_started)) s)"
}

step "installing the AWS emulator (moto) into a private virtualenv; first run up to a minute (download), then instant"
moto_server="$(bash "$repo/scripts/setup-moto.sh")"
venv_python="$(dirname "$moto_server")/python"
took
work="$(mktemp -d)"
trap 'kill "${agent_pid:-}" "${moto_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

step "starting moto_server on a free local port; a few seconds"
port="$("$venv_python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do
  if "$venv_python" -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done
took

mkdir -p "$work/app" "$work/state"
cat >"$work/app/prod.env" <<'ENV'
# application secrets
DB_URL=postgres://app:pw@db.internal/app
API_KEY="k-123 with spaces"
export SMTP_PASSWORD='p@ss'
ENV
cat >"$work/app/payments.yaml" <<'YAML'
STRIPE_KEY:
  value: sk_test_123
  metadata: {owner: payments-team}
PORT: 0080
YAML
cat >"$work/agent.yaml" <<CFG
agent:
  id: demo-host
  socket: $work/control.sock
  state_dir: $work/state
  debounce: 300ms
aws:
  region: us-east-1
  endpoint_url: http://127.0.0.1:$port
syncs:
  - name: app
    source:
      files: [$work/app/prod.env]
      environment: prod
    destination:
      key_schema: "{{environment}}/app/{{secretKey}}"
      tags: {team: platform}
  - name: payments
    source:
      files: [$work/app/payments.yaml]
    destination:
      mapping: many-to-one
      secret_name: "prod/{{syncName}}"
      sync_metadata_as_tags: true
CFG

export RUST_LOG=warn AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true
export SECRETSYNC_CONFIG="$work/agent.yaml"
cd "$repo"
step "building secretsync (debug); a first build takes a minute or two, a rebuild seconds"
cargo build -q
took
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/secretsync"
echo "== secretsync check"; "$bin" check
echo "== secretsync plan";  "$bin" plan
echo "== secretsync run (the agent, in the background)"
env -u RUST_LOG "$bin" run >"$work/agent.log" 2>&1 &
agent_pid=$!
export SECRETSYNC_SOCKET="$work/control.sock"
for _ in $(seq 100); do "$bin" status >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 100); do "$bin" status --json | grep -q '"PENDING"\|"RUNNING"' || break; sleep 0.1; done
echo "== secretsync status"; "$bin" status
echo "== edit prod.env (atomic rename, like an editor) and wait for the agent"
sed 's|^DB_URL=.*|DB_URL=postgres://app:rotated@db.internal/app|' "$work/app/prod.env" >"$work/app/prod.env.tmp"
mv "$work/app/prod.env.tmp" "$work/app/prod.env"
sleep 1.5
echo "== secretsync status app"; "$bin" status app
echo "== agent log (one line per pass and per write; never values)"
sed 's/^/  /' "$work/agent.log"
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
echo "== secrets now in the emulator (names, tags and version counts; never values)"
"$venv_python" - "$port" <<'PY'
import sys, boto3
c = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
for s in c.list_secrets()["SecretList"]:
    tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
    versions = len(c.list_secret_version_ids(SecretId=s["Name"])["Versions"])
    print(f"  {s['Name']:<24} versions={versions} {tags}")
PY
