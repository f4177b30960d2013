//! Proves the AWS conformance check that every test emulator runs behind
//! (`scripts/conformance/moto_conformant.py`, started by `support::Moto`): a
//! request AWS would reject is answered with `ValidationException` and recorded
//! (so the test that sent it fails), a valid one reaches moto untouched, and no
//! secret value is ever written to the record.

mod support;

use std::time::Instant;

use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use support::{Moto, Violation, raw_http, sdk_config};

/// moto picks the service from the SigV4 credential scope; the check itself
/// only looks at `X-Amz-Target`.
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=AKIDSECRETSYNCTEST/20250101/us-east-1/\
                    secretsmanager/aws4_request, SignedHeaders=host, Signature=00";

/// One Secrets Manager call as a raw HTTP request, exactly as written here
/// (no SDK in between); returns the status and the body as JSON.
fn call(moto: &Moto, op: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let target = format!("secretsmanager.{op}");
    let headers = [
        ("X-Amz-Target", target.as_str()),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("Authorization", AUTH),
    ];
    let (status, body) = raw_http(
        moto.port,
        "POST",
        "/",
        &headers,
        body.to_string().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{op}: {e}"));
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into_owned()));
    (status, json)
}

fn problems(violations: &[Violation]) -> String {
    violations
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn empty_secret_string_and_bad_name_are_rejected_and_recorded() {
    let moto = Moto::start();
    let (status, body) = call(
        &moto,
        "CreateSecret",
        &serde_json::json!({"Name": "app/db password", "SecretString": ""}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["__type"], "ValidationException", "{body}");

    let violations = moto.take_violations();
    assert_eq!(
        violations.len(),
        1,
        "one request, one record: {violations:?}"
    );
    assert_eq!(violations[0].service, "secretsmanager");
    assert_eq!(violations[0].operation, "CreateSecret");
    let text = problems(&violations);
    assert!(
        text.contains("SecretString: length 0 below min 1"),
        "{text}"
    );
    assert!(
        text.contains("Name: character at index 6 is not allowed"),
        "{text}"
    );
    assert!(moto.take_violations().is_empty(), "taken means gone");

    // The rejected request never reached moto.
    let (status, body) = call(&moto, "ListSecrets", &serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["SecretList"], serde_json::json!([]), "{body}");
}

#[test]
fn a_valid_request_passes_through_unchanged() {
    let moto = Moto::start();
    let (status, body) = call(
        &moto,
        "CreateSecret",
        &serde_json::json!({
            "Name": "app/db_password",
            "SecretString": "s3cret",
            "ClientRequestToken": "00000000-0000-4000-8000-000000000001",
            "Tags": [{"Key": "owner", "Value": ""}],
        }),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &moto,
        "GetSecretValue",
        &serde_json::json!({"SecretId": "app/db_password"}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["SecretString"], "s3cret");
    assert_eq!(body["VersionId"], "00000000-0000-4000-8000-000000000001");
    // moto's own endpoints are not checked.
    moto.reset();
    assert!(moto.take_violations().is_empty());
}

#[test]
fn values_are_never_recorded() {
    let moto = Moto::start();
    let canary = "CANARY-7f3a-never-in-a-report";
    // Over the 65,536-byte quota in UTF-8 (but not in characters), a tag key
    // over 128 characters, and a filter value outside its pattern.
    let big = format!("{canary}{}", "\u{e9}".repeat(32_760));
    let (status, _) = call(
        &moto,
        "CreateSecret",
        &serde_json::json!({
            "Name": "app/big",
            "SecretString": big,
            "Tags": [{"Key": format!("{canary}{}", "k".repeat(120)), "Value": canary}],
        }),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &moto,
        "ListSecrets",
        &serde_json::json!({"Filters": [{"Key": "name", "Values": [format!("{canary}#")]}]}),
    );
    assert_eq!(status, 400);

    let text = problems(&moto.take_violations());
    assert!(text.contains("65536-byte"), "{text}");
    assert!(
        text.contains("Tags[0].Key: length 149 above max 128"),
        "{text}"
    );
    assert!(
        text.contains("Filters[0].Values[0]: does not match pattern"),
        "{text}"
    );
    assert!(!text.contains("CANARY"), "a value leaked: {text}");
    assert!(
        !moto.log_tail().contains("CANARY"),
        "a value leaked to the log"
    );
}

#[tokio::test]
async fn the_sdk_sees_the_error_aws_would_send() {
    // The Rust SDK checks no lengths itself: this is what the binary would get.
    let moto = Moto::start();
    let client = aws_sdk_secretsmanager::Client::from_conf(
        sdk_config(&moto.endpoint)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let err = client
        .create_secret()
        .name("app/empty")
        .secret_string("")
        .send()
        .await
        .expect_err("AWS rejects an empty SecretString");
    assert_eq!(err.code(), Some("ValidationException"), "{err:?}");
    let violations = moto.take_violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(
        violations[0].problems,
        ["SecretString: length 0 below min 1"]
    );

    // And well-formed SDK traffic records nothing.
    client
        .create_secret()
        .name("app/ok")
        .secret_string("v")
        .send()
        .await
        .expect("valid CreateSecret");
    client
        .list_secrets()
        .max_results(100)
        .send()
        .await
        .expect("valid ListSecrets");
    moto.assert_conformant();
}

#[test]
fn untaken_violations_fail_the_test_at_drop() {
    let started = Instant::now();
    let outcome = std::panic::catch_unwind(|| {
        let moto = Moto::start();
        let (status, _) = call(
            &moto,
            "PutSecretValue",
            &serde_json::json!({"SecretId": "x", "SecretString": ""}),
        );
        assert_eq!(status, 400);
        drop(moto);
    });
    let panic = outcome.expect_err("drop must panic with the violation");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("PutSecretValue: SecretString: length 0 below min 1"),
        "{message}"
    );
    eprintln!("drop check took {:?}", started.elapsed());
}

#[test]
fn the_checker_passes_its_own_table() {
    // `moto_conformant.py --check`: the rule table (lengths, patterns, enums,
    // documented AWS rules) without a server.
    let python = support::moto_server_path().with_file_name("python");
    let output = std::process::Command::new(&python)
        .arg(support::conformance_wrapper_path())
        .arg("--check")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains(" 0 failures"), "{stderr}");
}
