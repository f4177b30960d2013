#!/usr/bin/env bash
# Demo: run the agent's one-shot sync against a local AWS emulator (moto)
# with an example config and .env/YAML files in a temporary directory.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
moto_server="$(bash "$repo/scripts/setup-moto.sh")"
venv_python="$(dirname "$moto_server")/python"
work="$(mktemp -d)"
trap 'kill "${moto_pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

port="$("$venv_python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$moto_server" -H 127.0.0.1 -p "$port" >"$work/moto.log" 2>&1 &
moto_pid=$!
for _ in $(seq 100); do
  if "$venv_python" -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then break; fi
  sleep 0.1
done

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
  state_dir: $work/state
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
cargo build -q
bin="${CARGO_TARGET_DIR:-$repo/target}/debug/secretsync"
echo "== secretsync check"; "$bin" check
echo "== secretsync plan";  "$bin" plan
echo "== secretsync sync";  "$bin" sync
echo "== secretsync plan (after sync: nothing to do)"; "$bin" plan
echo "== secrets now in the emulator (names and tags only)"
"$venv_python" - "$port" <<'PY'
import sys, boto3
c = boto3.client("secretsmanager", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
for s in c.list_secrets()["SecretList"]:
    tags = {t["Key"]: t["Value"] for t in s.get("Tags", [])}
    print(f"  {s['Name']:<24} {tags}")
PY
