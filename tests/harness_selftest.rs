//! Proves the test harness itself: moto starts and is isolated per test, the
//! proxy forwards and counts faithfully, and each kind of injected fault really
//! makes SDK calls fail (so tests built on it can fail too).

mod support;

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use support::{Fault, FaultProxy, Moto, client_for, op, sdk_config};

/// A client through `endpoint` that reports the first failure as is, so a test
/// sees exactly the fault it injected.
fn no_retry_client(endpoint: &str) -> Client {
    Client::from_conf(
        sdk_config(endpoint)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

async fn create(client: &Client, name: &str, value: &str) {
    client
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("CreateSecret");
}

async fn get(client: &Client, name: &str) -> String {
    client
        .get_secret_value()
        .secret_id(name)
        .send()
        .await
        .expect("GetSecretValue")
        .secret_string()
        .expect("string secret")
        .to_string()
}

#[tokio::test]
async fn moto_starts_answers_and_is_private_to_the_test() {
    let started = Instant::now();
    let moto = Moto::start();
    eprintln!(
        "moto started in {:?} at {}",
        started.elapsed(),
        moto.endpoint
    );
    assert!(
        moto.endpoint.starts_with("http://127.0.0.1:"),
        "{}",
        moto.endpoint
    );

    let client = moto.client().await;
    let listed = client.list_secrets().send().await.expect("ListSecrets");
    assert!(
        listed.secret_list().is_empty(),
        "a fresh moto has no secrets"
    );

    create(&client, "selftest/a", "one").await;
    assert_eq!(get(&client, "selftest/a").await, "one");
    moto.reset();
    let listed = client.list_secrets().send().await.expect("ListSecrets");
    assert!(listed.secret_list().is_empty(), "reset wipes state");
}

#[test]
fn moto_process_is_killed_on_drop() {
    let moto = Moto::start();
    let proc_dir = format!("/proc/{}", moto.pid());
    assert!(std::path::Path::new(&proc_dir).exists());
    drop(moto);
    // Killed and reaped by the time drop returns: no zombie, no orphan.
    assert!(
        !std::path::Path::new(&proc_dir).exists(),
        "moto still running after drop"
    );
}

#[test]
fn moto_start_failures_are_reported_not_hung() {
    let err = Moto::try_start_at(std::path::Path::new("/nonexistent/moto_server"))
        .err()
        .expect("must fail");
    assert!(err.contains("/nonexistent/moto_server"), "{err}");

    // An emulator that exits at once must be reported promptly, not after the
    // 20 s start deadline: a fake venv whose `python` (which runs the
    // conformance wrapper) fails straight away.
    let venv = tempfile::tempdir().expect("tempdir");
    let bin = venv.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("moto_server"), "").unwrap();
    // A symlink, not a script written here: exec'ing a file this process just
    // wrote can fail with ETXTBSY while parallel tests fork.
    std::os::unix::fs::symlink("/bin/false", bin.join("python")).unwrap();
    let started = Instant::now();
    let err = Moto::try_start_at(&bin.join("moto_server"))
        .err()
        .expect("must fail");
    assert!(err.contains("exited before listening"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // No interpreter next to moto_server: said so, nothing spawned.
    std::fs::remove_file(bin.join("python")).unwrap();
    let err = Moto::try_start_at(&bin.join("moto_server"))
        .err()
        .expect("must fail");
    assert!(err.contains("no ") && err.contains("bin/python"), "{err}");
}

#[tokio::test]
async fn proxy_forwards_and_counts_by_operation() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = client_for(&proxy.endpoint);

    create(&client, "selftest/counted", "v1").await;
    assert_eq!(get(&client, "selftest/counted").await, "v1");

    let calls = proxy.calls();
    assert_eq!(calls.get("CreateSecret"), Some(&1), "{calls:?}");
    assert_eq!(calls.get("GetSecretValue"), Some(&1), "{calls:?}");
    assert_eq!(calls.len(), 2, "nothing else was called: {calls:?}");
    assert_eq!(proxy.count("CreateSecret"), 1);
    assert_eq!(proxy.count("PutSecretValue"), 0);
    assert_eq!(proxy.writes(), 1);
    assert_eq!(proxy.total(), 2);
    assert_eq!(proxy.ops(), ["CreateSecret", "GetSecretValue"]);
    assert_eq!(proxy.bodies("CreateSecret")[0]["Name"], "selftest/counted");

    // Really went through to moto: visible with a direct client.
    let direct = moto.client().await;
    assert_eq!(get(&direct, "selftest/counted").await, "v1");
    assert_eq!(proxy.total(), 2, "direct calls bypass the proxy");

    proxy.reset_counts();
    assert!(proxy.calls().is_empty());
    assert_eq!(proxy.writes(), 0);
}

#[tokio::test]
async fn throttle_makes_the_call_fail_when_retries_are_disabled() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);
    create(&client, "selftest/throttled", "v").await;

    proxy.inject(Fault::Throttle {
        op: op("GetSecretValue"),
        every_nth: 1,
    });
    let err = client
        .get_secret_value()
        .secret_id("selftest/throttled")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Some("ThrottlingException"), "{err:?}");
    assert_eq!(err.message(), Some("Rate exceeded"));
    assert!(matches!(err, SdkError::ServiceError(_)), "{err:?}");
    assert_eq!(
        proxy.count("GetSecretValue"),
        1,
        "faulted requests are counted"
    );

    // Other operations are untouched by an op-specific rule.
    client
        .describe_secret()
        .secret_id("selftest/throttled")
        .send()
        .await
        .expect("DescribeSecret");

    proxy.clear_faults();
    assert_eq!(get(&client, "selftest/throttled").await, "v");
}

#[tokio::test]
async fn every_nth_throttles_a_fraction() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);
    create(&client, "selftest/nth", "v").await;

    proxy.inject(Fault::Throttle {
        op: None,
        every_nth: 3,
    });
    let mut outcomes = Vec::new();
    for _ in 0..6 {
        outcomes.push(
            client
                .get_secret_value()
                .secret_id("selftest/nth")
                .send()
                .await
                .is_ok(),
        );
    }
    assert_eq!(outcomes, [true, true, false, true, true, false]);
    assert_eq!(proxy.count("GetSecretValue"), 6);
    assert_eq!(proxy.faults_fired(), 2);
}

#[test]
fn quota_meter_allows_the_aws_rate_per_class_and_throttles_the_excess() {
    let mut meter = support::QuotaMeter::default();
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // 50 writes in the first second pass, the 51st is over...
    for i in 0..50 {
        assert!(!meter.over("PutSecretValue", ms(i)), "write {i}");
    }
    assert!(
        meter.over("UpdateSecret", ms(500)),
        "same class as PutSecretValue"
    );
    // ...while other classes have their own limits...
    assert!(!meter.over("TagResource", ms(500)));
    assert!(!meter.over("ListSecrets", ms(500)));
    assert!(!meter.over("UnknownOperation", ms(500)));
    // ...and the window slides: a second after the first writes, room again.
    assert!(!meter.over("PutSecretValue", ms(1000)));
    assert!(
        meter.over("PutSecretValue", ms(1000)),
        "only one slot freed at 1000 ms"
    );
    assert!(!meter.over("PutSecretValue", ms(1005)));
}

#[tokio::test]
async fn sdk_retries_recover_from_first_throttles_and_server_errors() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = client_for(&proxy.endpoint); // standard retries, 3 attempts
    create(&client, "selftest/retry", "v").await;

    proxy.inject(Fault::ThrottleFirst {
        op: op("GetSecretValue"),
        count: 1,
    });
    proxy.inject(Fault::ServerError {
        op: op("GetSecretValue"),
        status: 503,
        count: 1,
    });
    assert_eq!(get(&client, "selftest/retry").await, "v");
    assert_eq!(
        proxy.count("GetSecretValue"),
        3,
        "throttle, 503, then success"
    );
}

#[tokio::test]
async fn server_errors_hit_only_the_first_n() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);

    proxy.inject(Fault::ServerError {
        op: None,
        status: 500,
        count: 2,
    });
    for _ in 0..2 {
        let err = client.list_secrets().send().await.expect_err("500");
        assert_eq!(err.code(), Some("InternalServiceError"), "{err:?}");
        assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(500));
    }
    client
        .list_secrets()
        .send()
        .await
        .expect("third call passes");

    proxy.inject(Fault::AwsError {
        op: op("CreateSecret"),
        status: 400,
        code: "LimitExceededException".into(),
        message: "too many".into(),
        count: 1,
    });
    let err = client
        .create_secret()
        .name("x")
        .secret_string("y")
        .send()
        .await
        .expect_err("limit");
    assert_eq!(err.code(), Some("LimitExceededException"));
}

#[tokio::test]
async fn outage_fails_calls_and_clear_faults_restores_service() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);
    create(&client, "selftest/outage", "v").await;

    proxy.inject(Fault::Outage);
    for _ in 0..2 {
        let err = client
            .get_secret_value()
            .secret_id("selftest/outage")
            .send()
            .await
            .expect_err("outage");
        assert!(matches!(err, SdkError::DispatchFailure(_)), "{err:?}");
    }
    assert_eq!(
        proxy.count("GetSecretValue"),
        2,
        "requests during an outage are counted"
    );

    // With retries on, the SDK gives up after its attempts; each one is counted.
    proxy.reset_counts();
    let retrying = client_for(&proxy.endpoint);
    retrying.list_secrets().send().await.expect_err("outage");
    assert_eq!(proxy.count("ListSecrets"), 3);

    proxy.clear_faults();
    assert_eq!(get(&client, "selftest/outage").await, "v");

    proxy.inject(Fault::Reset {
        op: op("GetSecretValue"),
        count: 1,
    });
    client
        .get_secret_value()
        .secret_id("selftest/outage")
        .send()
        .await
        .expect_err("reset");
    assert_eq!(
        get(&client, "selftest/outage").await,
        "v",
        "only the first is reset"
    );
}

#[tokio::test]
async fn delay_adds_latency_and_hang_trips_the_client_timeout() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);
    create(&client, "selftest/slow", "v").await;

    proxy.inject(Fault::Delay {
        op: op("GetSecretValue"),
        delay: Duration::from_millis(300),
    });
    let started = Instant::now();
    assert_eq!(get(&client, "selftest/slow").await, "v");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    proxy.clear_faults();

    proxy.inject(Fault::Hang {
        op: op("GetSecretValue"),
    });
    let impatient = Client::from_conf(
        sdk_config(&proxy.endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_millis(500))
                    .build(),
            )
            .build(),
    );
    let started = Instant::now();
    let err = impatient
        .get_secret_value()
        .secret_id("selftest/slow")
        .send()
        .await
        .expect_err("hang");
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Other operations still flow while one hangs.
    impatient.list_secrets().send().await.expect("ListSecrets");
}

#[tokio::test]
async fn concurrent_requests_are_all_forwarded_and_counted() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = client_for(&proxy.endpoint);
    create(&client, "selftest/many", "v").await;

    let mut tasks = Vec::new();
    for _ in 0..24 {
        let client = client.clone();
        tasks.push(tokio::spawn(
            async move { get(&client, "selftest/many").await },
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), "v");
    }
    assert_eq!(proxy.count("GetSecretValue"), 24);
}

/// The harness works without any tokio runtime in the test, as needed by tests
/// that spawn the real binary: raw HTTP through the proxy to moto.
#[test]
fn proxy_works_from_a_plain_test() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    // moto picks the service from the SigV4 credential scope (no signature check);
    // without an Authorization header it answers as S3.
    let target = [
        ("X-Amz-Target", "secretsmanager.ListSecrets"),
        ("Content-Type", "application/x-amz-json-1.1"),
        (
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/secretsmanager/aws4_request, \
             SignedHeaders=host, Signature=0",
        ),
    ];
    let (status, body) =
        support::raw_http(proxy.port, "POST", "/", &target, b"{}").expect("request");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert!(
        json["SecretList"]
            .as_array()
            .expect("SecretList")
            .is_empty()
    );

    proxy.inject(Fault::Throttle {
        op: op("ListSecrets"),
        every_nth: 1,
    });
    let (status, body) =
        support::raw_http(proxy.port, "POST", "/", &target, b"{}").expect("request");
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(json["__type"], "ThrottlingException");

    // A request without X-Amz-Target is forwarded and counted under NO_TARGET.
    let (status, _) =
        support::raw_http(proxy.port, "GET", "/moto-api/", &[], b"").expect("request");
    assert_eq!(status, 200);
    assert_eq!(proxy.count("ListSecrets"), 2);
    assert_eq!(proxy.count(support::NO_TARGET), 1);
    assert!(proxy.wait_for_count_blocking("ListSecrets", 2, Duration::from_millis(10)));
    assert!(!proxy.wait_for_count_blocking("ListSecrets", 3, Duration::from_millis(50)));
}

#[tokio::test]
async fn throttle_random_is_seeded_and_near_its_rate() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = no_retry_client(&proxy.endpoint);
    create(&client, "selftest/random", "v").await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        proxy.clear_faults();
        proxy.inject(Fault::ThrottleRandom {
            op: op("GetSecretValue"),
            percent: 30,
            seed: 42,
        });
        let mut outcomes = Vec::new();
        for _ in 0..200 {
            outcomes.push(
                client
                    .get_secret_value()
                    .secret_id("selftest/random")
                    .send()
                    .await
                    .is_ok(),
            );
        }
        runs.push(outcomes);
    }
    assert_eq!(runs[0], runs[1], "same seed, same decisions");
    let throttled = runs[0].iter().filter(|ok| !**ok).count();
    assert!(
        (40..=80).contains(&throttled),
        "{throttled} of 200 throttled"
    );
    // Some call is throttled twice in a row (unlike every_nth).
    assert!(runs[0].windows(2).any(|w| !w[0] && !w[1]));
    // Other operations are untouched.
    client
        .describe_secret()
        .secret_id("selftest/random")
        .send()
        .await
        .expect("DescribeSecret");
}

#[tokio::test]
async fn hang_writes_after_lets_exactly_n_writes_through() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint);
    let client = Client::from_conf(
        sdk_config(&proxy.endpoint)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(2))
                    .build(),
            )
            .build(),
    );
    proxy.inject(Fault::HangWritesAfter { after: 2 });
    create(&client, "selftest/w1", "v").await;
    create(&client, "selftest/w2", "v").await;
    let started = Instant::now();
    let err = client
        .put_secret_value()
        .secret_id("selftest/w1")
        .secret_string("v2")
        .send()
        .await
        .expect_err("the third write hangs");
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Reads still pass, and the hung write never reached moto.
    assert_eq!(get(&client, "selftest/w1").await, "v");
    assert_eq!(proxy.writes(), 3);
}
