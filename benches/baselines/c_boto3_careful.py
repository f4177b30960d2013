#!/usr/bin/env python3
"""Baseline C: a careful boto3 sync script, the best a one-off script does.

1. `ListSecrets` filtered by the name prefix, paginated (100 per page,
   pending deletion included), to learn which secrets exist;
2. `BatchGetSecretValue` by id list, 20 ids per call, for those that exist;
3. writes only the difference: `CreateSecret` for missing keys,
   `PutSecretValue` for changed ones (`RestoreSecret` first if the secret is
   scheduled for deletion), each with a `ClientRequestToken` derived from
   name, replaced version and value, so a retried run cannot create a
   second version;
4. the SDK's standard retry mode (backoff with jitter on throttling).

It has no ownership tags, deletion, pacing, or file watching: it is run from
cron and does the whole comparison every time.

Usage: c_boto3_careful.py FILE.env PREFIX
Endpoint, region and credentials come from the usual AWS_* environment
(AWS_ENDPOINT_URL for an emulator).
"""
import argparse
import hashlib
import sys

import boto3
from botocore.config import Config

BATCH = 20  # BatchGetSecretValue accepts at most 20 ids per call


def read_env(path):
    """KEY=value lines; comments, blank lines and `export ` handled; no
    quoting rules (the benchmark data has none)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            line = line.removeprefix("export ")
            key, sep, value = line.partition("=")
            if sep:
                out[key] = value
    return out


def token(name, replaces, value):
    """Idempotency token: same write -> same token (64 hex chars)."""
    h = hashlib.sha256()
    for part in (name, replaces or "", value):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def list_existing(sm, prefix, wanted):
    """Name -> ListSecrets entry for the wanted names (the name filter is a
    case-insensitive prefix match, so keep exact matches only)."""
    found = {}
    pages = sm.get_paginator("list_secrets").paginate(
        Filters=[{"Key": "name", "Values": [prefix]}] if prefix else [],
        IncludePlannedDeletion=True,
        PaginationConfig={"PageSize": 100},
    )
    for page in pages:
        for entry in page.get("SecretList", []):
            if entry["Name"] in wanted:
                found[entry["Name"]] = entry
    return found


def current_values(sm, entries):
    """Name -> (SecretString, VersionId) in batches of 20 ARNs."""
    by_arn = {e["ARN"]: name for name, e in entries.items()}
    arns = list(by_arn)
    out = {}
    for i in range(0, len(arns), BATCH):
        resp = sm.batch_get_secret_value(SecretIdList=arns[i:i + BATCH])
        for v in resp.get("SecretValues", []):
            out[by_arn.get(v["ARN"], v["Name"])] = (v.get("SecretString"), v.get("VersionId"))
        for err in resp.get("Errors", []):
            print(f"cannot read {err.get('SecretId')}: {err.get('ErrorCode')}", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("prefix")
    args = ap.parse_args()
    sm = boto3.client("secretsmanager", config=Config(retries={"mode": "standard", "max_attempts": 5}))
    desired = {args.prefix + k: v for k, v in read_env(args.file).items()}
    existing = list_existing(sm, args.prefix, desired)
    values = current_values(sm, {n: e for n, e in existing.items() if "DeletedDate" not in e})
    created = updated = unchanged = failed = 0
    for name, value in desired.items():
        entry = existing.get(name)
        if entry is None:
            sm.create_secret(Name=name, SecretString=value, ClientRequestToken=token(name, None, value))
            created += 1
            continue
        if "DeletedDate" in entry:
            sm.restore_secret(SecretId=name)
            current, version = None, None
        elif name in values:
            current, version = values[name]
        else:
            failed += 1  # could not read it: leave it alone this run
            continue
        if current == value:
            unchanged += 1
            continue
        sm.put_secret_value(SecretId=name, SecretString=value, ClientRequestToken=token(name, version, value))
        updated += 1
    print(f"created {created}, updated {updated}, unchanged {unchanged}, unreadable {failed}", file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
