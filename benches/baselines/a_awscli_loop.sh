#!/usr/bin/env bash
# Baseline A: what many hosts run today from cron. For every KEY=value line
# of a .env file: `describe-secret`; if the secret does not exist,
# `create-secret`, else `put-secret-value`. It never compares values, so
# every run writes every key (a new version each time: the CLI sends a fresh
# ClientRequestToken per call).
#
# Usage: a_awscli_loop.sh FILE.env PREFIX
#   PREFIX is prepended to each key (e.g. "bench/" -> bench/DB_URL).
# Endpoint, region and credentials come from the usual AWS_* environment
# (AWS_ENDPOINT_URL for an emulator). Needs `aws` (AWS CLI) on PATH.
#
# Written the way a careful shell user would: quoting, `set -euo pipefail`,
# comments and blank lines skipped, values passed via a file so they never
# appear in `ps` output, stderr of the existence probe silenced.
set -euo pipefail

if [[ $# -ne 2 || "$1" == -h || "$1" == --help ]]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    [[ "${1:-}" == -h || "${1:-}" == --help ]] && exit 0
    exit 2
fi
file="$1"
prefix="$2"
tmp="$(mktemp)"
trap 'rm -f "$tmp"' EXIT
chmod 600 "$tmp"

while IFS= read -r line || [[ -n "$line" ]]; do
    [[ -z "$line" || "$line" == \#* ]] && continue
    line="${line#export }"
    key="${line%%=*}"
    value="${line#*=}"
    name="${prefix}${key}"
    printf '%s' "$value" >"$tmp"
    if aws secretsmanager describe-secret --secret-id "$name" >/dev/null 2>&1; then
        aws secretsmanager put-secret-value --secret-id "$name" \
            --secret-string "file://$tmp" >/dev/null
    else
        aws secretsmanager create-secret --name "$name" \
            --secret-string "file://$tmp" >/dev/null
    fi
done <"$file"
