"""moto_server with an AWS request-conformance check in front of it.

moto accepts requests that AWS rejects: an empty SecretString, a secret name
with a space, a 300-character tag key, 51 tags... A client tested only against
moto can therefore ship requests that fail on the first contact with AWS. This
wrapper runs moto's own server (same command line, same ` * Running on
http://127.0.0.1:PORT` line, `/moto-api/` untouched) but checks every JSON-RPC
request (`X-Amz-Target: secretsmanager.<Op>` or `TrentService.<Op>` for KMS)
against the AWS service model that botocore ships, plus a few rules that AWS
documents but the model does not encode (see EXTRA_RULES). A request that
breaks one is *not* passed to moto: it gets the `400 ValidationException` AWS
would send, and one JSON line is appended to the violations file
(`--violations PATH`, or env MOTO_CONFORMANCE_VIOLATIONS), which the test
harness (tests/support/mod.rs) turns into a test failure.

What is checked (botocore's own ParamValidator only checks required members,
types and `min`; it skips `max`, `enum`, `pattern` and blob sizes):
required members, unknown members, JSON types, string lengths (code points),
list/map sizes, blob sizes (after base64 decoding), numeric ranges, enums and
patterns. Patterns are Java regexes that must match the whole value
(`String.matches`); they are compiled once with Python's `re` in ASCII mode
(Java's `\\d`, `\\w`, `\\s` are ASCII-only) and applied with `fullmatch`. A
pattern using Java-only syntax is skipped and named on stderr at start-up,
never guessed at.

Secret values are never written anywhere: a violation names the member path
and the rule ("SecretString: length 0 below min 1"), never a value, a map key
or an offending character.

Usage (run with the interpreter of moto's venv):
    python moto_conformant.py -H 127.0.0.1 -p 0 --violations /tmp/v.jsonl
    python moto_conformant.py --check      # self-test of the checker, no server
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import re
import sys
import threading
import uuid

# X-Amz-Target prefix -> botocore service name. Only JSON-RPC services qualify.
SERVICES = {"secretsmanager": "secretsmanager", "TrentService": "kms"}

# Java regex constructs Python's `re` does not implement (or implements
# differently); a pattern containing one is skipped rather than mistranslated.
_JAVA_ONLY = re.compile(r"&&|\\[pP]\{|\\[QEGZzRXhHvV]|\(\?<[A-Za-z]|\[\[")

_SAFE_MEMBER = re.compile(r"[A-Za-z0-9_]{1,64}")


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Node:
    """One shape of the model, reduced to what the checks need."""

    __slots__ = (
        "kind", "min", "max", "enum", "pattern", "pattern_src",
        "required", "members", "member", "key", "value",
    )

    def __init__(self, kind):
        self.kind = kind
        self.min = self.max = self.enum = self.pattern = self.pattern_src = None
        self.required = ()
        self.members = self.member = self.key = self.value = None


def compile_java_pattern(src, skipped):
    """Python regex for a Java pattern, or None (recorded in `skipped`)."""
    if _JAVA_ONLY.search(src):
        skipped.append(src)
        return None
    try:
        return re.compile(src, re.ASCII)
    except re.error:
        skipped.append(src)
        return None


def compile_shape(shape, memo, skipped):
    node = memo.get(shape.name)
    if node is not None:
        return node
    node = Node(shape.type_name)
    memo[shape.name] = node  # before recursing: shapes may be recursive
    meta = shape.metadata
    node.min = meta.get("min")
    node.max = meta.get("max")
    if meta.get("enum"):
        node.enum = frozenset(meta["enum"])
    if meta.get("pattern"):
        node.pattern_src = meta["pattern"]
        node.pattern = compile_java_pattern(meta["pattern"], skipped)
    if shape.type_name == "structure":
        node.required = tuple(meta.get("required", ()))
        node.members = {
            name: compile_shape(member, memo, skipped)
            for name, member in shape.members.items()
        }
    elif shape.type_name == "list":
        node.member = compile_shape(shape.member, memo, skipped)
    elif shape.type_name == "map":
        node.key = compile_shape(shape.key, memo, skipped)
        node.value = compile_shape(shape.value, memo, skipped)
    return node


def _range(path, what, n, node, out):
    if node.min is not None and n < node.min:
        out.append(f"{path}: {what} {n} below min {node.min}")
    if node.max is not None and n > node.max:
        out.append(f"{path}: {what} {n} above max {node.max}")


def check_value(value, node, path, out):
    """Appends a description of every way `value` breaks `node` to `out`."""
    kind = node.kind
    if kind == "structure":
        if not isinstance(value, dict):
            out.append(f"{path or 'body'}: expected object, got {_json_type(value)}")
            return
        prefix = f"{path}." if path else ""
        for name in node.required:
            if value.get(name) is None:
                out.append(f"{prefix}{name}: required member missing")
        for name, item in value.items():
            member = node.members.get(name)
            if member is None:
                shown = name if _SAFE_MEMBER.fullmatch(name) else "(unprintable name)"
                out.append(f"{prefix}{shown}: unknown member (not in the service model)")
            elif item is not None:  # JSON null = member not set
                check_value(item, member, prefix + name, out)
    elif kind == "list":
        if not isinstance(value, list):
            out.append(f"{path}: expected array, got {_json_type(value)}")
            return
        _range(path, "size", len(value), node, out)
        for i, item in enumerate(value):
            if item is None:
                out.append(f"{path}[{i}]: null list element")
            else:
                check_value(item, node.member, f"{path}[{i}]", out)
    elif kind == "map":
        if not isinstance(value, dict):
            out.append(f"{path}: expected object, got {_json_type(value)}")
            return
        _range(path, "size", len(value), node, out)
        for i, (key, item) in enumerate(value.items()):
            check_value(key, node.key, f"{path}(key #{i})", out)
            check_value(item, node.value, f"{path}(value #{i})", out)
    elif kind == "string":
        if not isinstance(value, str):
            out.append(f"{path}: expected string, got {_json_type(value)}")
            return
        _range(path, "length", len(value), node, out)
        if node.enum is not None and value not in node.enum:
            out.append(f"{path}: not one of the enum values {sorted(node.enum)}")
        if node.pattern is not None and node.pattern.fullmatch(value) is None:
            out.append(f"{path}: does not match pattern {node.pattern_src}")
    elif kind == "blob":
        if not isinstance(value, str):
            out.append(f"{path}: expected base64 string, got {_json_type(value)}")
            return
        try:
            size = len(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            out.append(f"{path}: not valid base64")
            return
        _range(path, "size in bytes", size, node, out)
    elif kind == "boolean":
        if not isinstance(value, bool):
            out.append(f"{path}: expected boolean, got {_json_type(value)}")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            out.append(f"{path}: expected integer, got {_json_type(value)}")
            return
        _range(path, "value", value, node, out)
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(f"{path}: expected number, got {_json_type(value)}")
            return
        _range(path, "value", value, node, out)
    elif kind == "timestamp":
        # awsJson sends epoch seconds.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            out.append(f"{path}: expected epoch-seconds number, got {_json_type(value)}")
    # "document" and anything newer: no constraint we know of.


# ---------------------------------------------------------------------------
# Rules AWS documents but the service model does not encode. Each takes the
# (already model-checked, so well-typed where present) input and appends
# violations. Sources: the AWS Secrets Manager API reference, docs/aws-vs-moto.md.
# ---------------------------------------------------------------------------

SECRET_NAME_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+=.@-"
)
MAX_TAGS = 50
MAX_SECRET_BYTES = 65536


def _secret_name(params, out):
    name = params.get("Name")
    if isinstance(name, str):
        for i, ch in enumerate(name):
            if ch not in SECRET_NAME_CHARS:
                out.append(
                    f"Name: character at index {i} is not allowed (AWS docs, CreateSecret: "
                    "ASCII letters, digits and /_+=.@- only)"
                )
                break


def _secret_value_size(params, out):
    value = params.get("SecretString")
    if isinstance(value, str):
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > MAX_SECRET_BYTES:
            out.append(
                f"SecretString: {size} bytes in UTF-8 above the {MAX_SECRET_BYTES}-byte "
                "secret value quota (AWS docs, quotas)"
            )


def _not_both_values(params, out):
    if params.get("SecretString") is not None and params.get("SecretBinary") is not None:
        out.append("SecretString, SecretBinary: both set, AWS accepts one or the other (AWS docs)")


def _exactly_one_value(params, out):
    if params.get("SecretString") is None and params.get("SecretBinary") is None:
        out.append("SecretString, SecretBinary: neither set, AWS needs one (AWS docs, PutSecretValue)")
    _not_both_values(params, out)


def _tags(member):
    def rule(params, out):
        tags = params.get(member)
        if not isinstance(tags, list):
            return
        if len(tags) > MAX_TAGS:
            out.append(f"{member}: {len(tags)} tags above the {MAX_TAGS} tags per secret (AWS docs, TagResource)")
        for i, tag in enumerate(tags):
            key = tag.get("Key") if isinstance(tag, dict) else None
            if isinstance(key, str) and key[:4].lower() == "aws:":
                out.append(f"{member}[{i}].Key: reserved prefix aws: (AWS docs, TagResource)")
    return rule


def _untag_keys(params, out):
    keys = params.get("TagKeys")
    if isinstance(keys, list):
        for i, key in enumerate(keys):
            if isinstance(key, str) and key[:4].lower() == "aws:":
                out.append(f"TagKeys[{i}]: reserved prefix aws: cannot be removed (AWS docs, TagResource)")


def _delete_secret(params, out):
    days = params.get("RecoveryWindowInDays")
    if isinstance(days, int) and not isinstance(days, bool):
        if not 7 <= days <= 30:
            out.append(f"RecoveryWindowInDays: value {days} outside 7..30 (AWS docs, DeleteSecret)")
        if params.get("ForceDeleteWithoutRecovery") is True:
            out.append(
                "RecoveryWindowInDays, ForceDeleteWithoutRecovery: both set, AWS accepts one "
                "or the other (AWS docs, DeleteSecret)"
            )


def _batch_get(params, out):
    has_ids = params.get("SecretIdList") is not None
    has_filters = params.get("Filters") is not None
    if has_ids == has_filters:
        out.append(
            "SecretIdList, Filters: "
            + ("both set" if has_ids else "neither set")
            + ", AWS needs exactly one (AWS docs, BatchGetSecretValue)"
        )
    if params.get("MaxResults") is not None and not has_filters:
        out.append("MaxResults: only allowed with Filters (AWS docs, BatchGetSecretValue)")


EXTRA_RULES = {
    ("secretsmanager", "CreateSecret"): (
        _secret_name, _secret_value_size, _not_both_values, _tags("Tags"),
    ),
    ("secretsmanager", "PutSecretValue"): (_secret_value_size, _exactly_one_value),
    ("secretsmanager", "UpdateSecret"): (_secret_value_size, _not_both_values),
    ("secretsmanager", "TagResource"): (_tags("Tags"),),
    ("secretsmanager", "UntagResource"): (_untag_keys,),
    ("secretsmanager", "DeleteSecret"): (_delete_secret,),
    ("secretsmanager", "BatchGetSecretValue"): (_batch_get,),
}


class ServiceChecker:
    """The compiled input shapes of one service (all operations, eagerly)."""

    def __init__(self, service_name, model):
        self.service_name = service_name
        self.botocore_version = None
        self.skipped_patterns = []
        memo = {}
        self.ops = {}
        for op in model.operation_names:
            shape = model.operation_model(op).input_shape
            self.ops[op] = compile_shape(shape, memo, self.skipped_patterns) if shape else None

    def check(self, op, body):
        """Violations of one request: `op` from X-Amz-Target, raw `body` bytes."""
        if op not in self.ops:
            return [f"{op if _SAFE_MEMBER.fullmatch(op) else '(unprintable)'}: "
                    f"no such operation in the {self.service_name} service model"]
        try:
            params = json.loads(body) if body.strip() else {}
        except ValueError:
            return ["body: not valid JSON"]
        out = []
        node = self.ops[op]
        if node is not None:
            check_value(params, node, "", out)
        elif params:
            out.append("body: operation takes no input")
        if isinstance(params, dict):
            for rule in EXTRA_RULES.get((self.service_name, op), ()):
                rule(params, out)
        return out


class Checker:
    """Lazily loads one ServiceChecker per X-Amz-Target prefix."""

    def __init__(self):
        import botocore
        import botocore.session

        self.botocore_version = botocore.__version__
        self._session = botocore.session.get_session()
        self._services = {}
        self._lock = threading.Lock()

    def service(self, prefix):
        checker = self._services.get(prefix)
        if checker is not None or prefix not in SERVICES:
            return checker
        with self._lock:
            checker = self._services.get(prefix)
            if checker is None:
                name = SERVICES[prefix]
                checker = ServiceChecker(name, self._session.get_service_model(name))
                for src in checker.skipped_patterns:
                    print(f"conformance: {name}: pattern not checked (Java-only syntax): {src}",
                          file=sys.stderr, flush=True)
                self._services[prefix] = checker
        return checker


class ViolationSink:
    """Appends one JSON line per rejected request; one write() per line."""

    def __init__(self, path):
        self._fd = None
        if path:
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def record(self, service, op, violations):
        line = json.dumps(
            {"service": service, "operation": op, "violations": violations},
            ensure_ascii=True,
        ) + "\n"
        print(f"conformance: rejected {service}.{op}: {'; '.join(violations)}",
              file=sys.stderr, flush=True)
        if self._fd is not None:
            with self._lock:
                os.write(self._fd, line.encode("ascii"))


def _read_body(environ):
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            return stream.read(int(length))
        except ValueError:
            return b""
    if environ.get("wsgi.input_terminated"):
        return stream.read()
    return b""


class ConformanceApp:
    """WSGI middleware: checks JSON-RPC requests, passes everything else on."""

    def __init__(self, app, checker, sink):
        self.app = app
        self.checker = checker
        self.sink = sink

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET")
        if not target or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        prefix, _, op = target.partition(".")
        service = self.checker.service(prefix)
        if service is None:
            return self.app(environ, start_response)
        body = _read_body(environ)
        # moto reads the body again: hand it an equivalent stream.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        try:
            violations = service.check(op, body)
        except Exception as e:  # a checker bug must show, but never leak a value
            violations = [f"conformance checker failed ({type(e).__name__}); fix scripts/conformance"]
        if not violations:
            return self.app(environ, start_response)
        self.sink.record(service.service_name, op, violations)
        message = "conformance: " + "; ".join(violations)
        payload = json.dumps({"__type": "ValidationException", "message": message}).encode()
        start_response("400 Bad Request", [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(payload))),
            ("x-amzn-ErrorType", "ValidationException"),
            ("x-amzn-RequestId", str(uuid.uuid4())),
        ])
        return [payload]


# ---------------------------------------------------------------------------
# --check: the checker's own test, no server (scripts/setup-moto.sh runs it).
# ---------------------------------------------------------------------------

def self_check():
    checker = Checker()
    sm = checker.service("secretsmanager")
    canary = "CANARY-must-never-be-echoed"

    def v(op, params):
        return sm.check(op, json.dumps(params).encode())

    cases = [
        # (operation, input, substrings expected in the violations; [] = valid)
        ("CreateSecret", {"Name": "app/db_password", "SecretString": "x"}, []),
        ("CreateSecret", {"Name": "a", "SecretString": ""}, ["SecretString: length 0 below min 1"]),
        ("CreateSecret", {"Name": "bad name", "SecretString": canary},
         ["Name: character at index 3 is not allowed"]),
        ("CreateSecret", {"Name": "x" * 513}, ["Name: length 513 above max 512"]),
        ("CreateSecret", {"Name": "a", "SecretString": canary + "\u00e9" * 32760},
         ["above the 65536-byte secret value quota"]),
        ("CreateSecret", {"Name": "a", "ClientRequestToken": "short"},
         ["ClientRequestToken: length 5 below min 32"]),
        ("CreateSecret", {"Name": "a", "Description": "d" * 2049},
         ["Description: length 2049 above max 2048"]),
        ("CreateSecret", {"Name": "a", "Tags": [{"Key": "k" * 129, "Value": canary}]},
         ["Tags[0].Key: length 129 above max 128"]),
        ("CreateSecret", {"Name": "a", "Tags": [{"Key": "AWS:x", "Value": "v"}]},
         ["Tags[0].Key: reserved prefix aws:"]),
        ("TagResource", {"SecretId": "a", "Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]},
         ["51 tags above the 50"]),
        ("TagResource", {"SecretId": "a", "Tags": [{"Key": "k", "Value": "v" * 257}]},
         ["Tags[0].Value: length 257 above max 256"]),
        ("TagResource", {"SecretId": "a"}, ["Tags: required member missing"]),
        ("PutSecretValue", {"SecretId": "a", "SecretBinary": "!!"}, ["SecretBinary: not valid base64"]),
        ("PutSecretValue", {"SecretId": "a", "SecretBinary": ""},
         ["SecretBinary: size in bytes 0 below min 1"]),
        ("PutSecretValue", {"SecretId": "a"}, ["neither set"]),
        ("PutSecretValue", {"SecretId": "a", "SecretString": 5}, ["SecretString: expected string, got number"]),
        ("ListSecrets", {"MaxResults": 101}, ["MaxResults: value 101 above max 100"]),
        ("ListSecrets", {"Filters": [{"Key": "bogus", "Values": ["ok"]}]}, ["Filters[0].Key: not one of"]),
        ("ListSecrets", {"Filters": [{"Key": "name", "Values": ["a#b"]}]},
         ["Filters[0].Values[0]: does not match pattern"]),
        ("ListSecrets", {"Filters": [{"Key": "name", "Values": ["a\n"]}]},
         ["Filters[0].Values[0]: does not match pattern"]),
        ("ListSecrets", {"Filters": [{"Key": "tag-key", "Values": ["!team/x y"]}]}, []),
        ("ListSecrets", {"NextToken": ""}, ["NextToken: length 0 below min 1"]),
        ("ListSecrets", {"Bogus": 1}, ["Bogus: unknown member"]),
        ("DeleteSecret", {"SecretId": "a", "RecoveryWindowInDays": 3}, ["outside 7..30"]),
        ("DeleteSecret", {"SecretId": "a", "RecoveryWindowInDays": 7, "ForceDeleteWithoutRecovery": True},
         ["both set"]),
        ("DeleteSecret", {"SecretId": "a", "ForceDeleteWithoutRecovery": True}, []),
        ("BatchGetSecretValue", {"SecretIdList": ["a"], "Filters": [{"Key": "name", "Values": ["a"]}]},
         ["both set"]),
        ("BatchGetSecretValue", {"SecretIdList": ["a"], "MaxResults": 5}, ["only allowed with Filters"]),
        ("BatchGetSecretValue", {"SecretIdList": [f"s{i}" for i in range(21)]},
         ["SecretIdList: size 21 above max 20"]),
        ("GetSecretValue", {"SecretId": "a", "VersionStage": "AWSCURRENT"}, []),
        ("NoSuchOperation", {}, ["no such operation"]),
    ]
    failures = []
    for op, params, expected in cases:
        got = v(op, params)
        text = "\n".join(got)
        if canary in text:
            failures.append(f"{op}: a value was echoed in {got}")
        if not expected and got:
            failures.append(f"{op} {sorted(params)}: expected valid, got {got}")
        for want in expected:
            if want not in text:
                failures.append(f"{op} {sorted(params)}: expected {want!r}, got {got}")
    if sm.check("CreateSecret", b"{not json") != ["body: not valid JSON"]:
        failures.append("invalid JSON body not reported")
    kms = checker.service("TrentService")
    if kms.check("DescribeKey", b'{"KeyId": "alias/x"}'):
        failures.append("valid KMS DescribeKey rejected")
    if not kms.check("DescribeKey", b"{}"):
        failures.append("KMS DescribeKey without KeyId accepted")
    for failure in failures:
        print(f"conformance self-check: {failure}", file=sys.stderr)
    skipped = sm.skipped_patterns + kms.skipped_patterns
    print(f"conformance self-check: {len(cases) + 3} cases, {len(failures)} failures, "
          f"botocore {checker.botocore_version}, {len(skipped)} patterns skipped",
          file=sys.stderr)
    return 1 if failures else 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="moto_server behind an AWS service-model conformance check; "
        "other arguments go to moto_server (-H 127.0.0.1 -p PORT)."
    )
    parser.add_argument("--violations", default=os.environ.get("MOTO_CONFORMANCE_VIOLATIONS"),
                        help="append one JSON line per rejected request here")
    parser.add_argument("--check", action="store_true",
                        help="run the checker's self-test and exit (no server)")
    args, moto_args = parser.parse_known_args(argv)
    if args.check:
        return self_check()

    checker = Checker()
    checker.service("secretsmanager")  # compile before the first request, not during it
    sink = ViolationSink(args.violations)

    import moto.server

    run_simple = moto.server.run_simple

    def conformant_run_simple(hostname, port, application, **kwargs):
        if hostname != "127.0.0.1":
            sys.exit(f"moto_conformant: refusing to bind {hostname!r}; only 127.0.0.1 (-H 127.0.0.1)")
        return run_simple(hostname, port, ConformanceApp(application, checker, sink), **kwargs)

    # moto.server.main parses the moto_server command line, sets MOTO_PORT and the
    # signal handlers, builds the WSGI app and calls the module-level run_simple.
    moto.server.run_simple = conformant_run_simple
    moto.server.main(moto_args or ["-H", "127.0.0.1"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
