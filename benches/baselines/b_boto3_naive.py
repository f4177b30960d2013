#!/usr/bin/env python3
"""Baseline B: a straightforward boto3 sync script, one secret at a time.

For every KEY=value line of a .env file it reads the secret
(`GetSecretValue`): missing -> `CreateSecret`; different value ->
`PutSecretValue`; equal -> nothing. So it skips no-op writes, but pays one
read per key on every run, however little changed.

Usage: b_boto3_naive.py FILE.env PREFIX
Endpoint, region and credentials come from the usual AWS_* environment
(AWS_ENDPOINT_URL for an emulator).
"""
import argparse
import sys

import boto3


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("prefix")
    args = ap.parse_args()
    sm = boto3.client("secretsmanager")
    created = updated = unchanged = 0
    for key, value in read_env(args.file).items():
        name = args.prefix + key
        try:
            current = sm.get_secret_value(SecretId=name).get("SecretString")
        except sm.exceptions.ResourceNotFoundException:
            sm.create_secret(Name=name, SecretString=value)
            created += 1
            continue
        if current != value:
            sm.put_secret_value(SecretId=name, SecretString=value)
            updated += 1
        else:
            unchanged += 1
    print(f"created {created}, updated {updated}, unchanged {unchanged}", file=sys.stderr)


if __name__ == "__main__":
    main()
