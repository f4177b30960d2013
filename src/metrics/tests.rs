use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The value of the sample `line_prefix` (metric name with labels).
fn sample(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn renders_every_family_with_help_type_and_values() {
    let m = Metrics::new();
    m.pass_finished("app", "SYNCED", Duration::from_millis(30));
    m.pass_finished("app", "SYNCED", Duration::from_millis(40));
    m.pass_finished("app", "FAILED", Duration::from_secs(2));
    m.propagated("app", Duration::from_millis(250));
    m.aws_call("PutSecretValue", "ok");
    m.aws_call("PutSecretValue", "ok");
    m.aws_call("ListSecrets", "throttled");
    m.aws_throttled("ListSecrets");
    m.aws_retried("ListSecrets");
    m.sync_succeeded("app", 1_700_000_000.5);
    m.config_reload(true);
    m.config_reload(false);
    m.observe_secrets([(
        "app",
        SecretCounts {
            synced: 2,
            error: 1,
            retained: 1,
            skipped: 1,
            ..Default::default()
        },
    )]);
    let text = m.render();
    for family in [
        "secretsync_passes_total",
        "secretsync_pass_duration_seconds",
        "secretsync_propagation_seconds",
        "secretsync_aws_calls_total",
        "secretsync_aws_throttles_total",
        "secretsync_aws_retries_total",
        "secretsync_secrets",
        "secretsync_last_success_timestamp_seconds",
        "secretsync_config_reloads_total",
        "secretsync_config_last_reload_successful",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} help:\n{text}"
        );
    }
    let v = |p: &str| sample(&text, p).unwrap_or_else(|| panic!("no sample {p}:\n{text}"));
    assert_eq!(
        v("secretsync_passes_total{sync=\"app\",status=\"SYNCED\"}"),
        2.0
    );
    assert_eq!(
        v("secretsync_passes_total{sync=\"app\",status=\"FAILED\"}"),
        1.0
    );
    assert_eq!(
        v("secretsync_pass_duration_seconds_count{sync=\"app\"}"),
        3.0
    );
    assert_eq!(
        v("secretsync_pass_duration_seconds_bucket{sync=\"app\",le=\"0.04\"}"),
        2.0
    );
    assert_eq!(v("secretsync_propagation_seconds_count{sync=\"app\"}"), 1.0);
    assert_eq!(
        v("secretsync_aws_calls_total{operation=\"PutSecretValue\",outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        v("secretsync_aws_calls_total{operation=\"ListSecrets\",outcome=\"throttled\"}"),
        1.0
    );
    assert_eq!(
        v("secretsync_aws_throttles_total{operation=\"ListSecrets\"}"),
        1.0
    );
    assert_eq!(
        v("secretsync_aws_retries_total{operation=\"ListSecrets\"}"),
        1.0
    );
    assert_eq!(v("secretsync_secrets{sync=\"app\",state=\"SYNCED\"}"), 2.0);
    assert_eq!(v("secretsync_secrets{sync=\"app\",state=\"ERROR\"}"), 1.0);
    assert_eq!(
        v("secretsync_secrets{sync=\"app\",state=\"RETAINED\"}"),
        1.0
    );
    assert_eq!(v("secretsync_secrets{sync=\"app\",state=\"PENDING\"}"), 0.0);
    assert_eq!(
        v("secretsync_last_success_timestamp_seconds{sync=\"app\"}"),
        1_700_000_000.5
    );
    assert_eq!(
        v("secretsync_config_reloads_total{outcome=\"failure\"}"),
        1.0
    );
    assert_eq!(v("secretsync_config_last_reload_successful"), 0.0);
    assert_eq!(v("secretsync_secrets{sync=\"app\",state=\"SKIPPED\"}"), 1.0);
    assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
}

#[test]
fn syncs_that_leave_the_config_lose_their_series() {
    let m = Metrics::new();
    let one_synced = SecretCounts {
        synced: 1,
        ..Default::default()
    };
    m.observe_secrets([("a", one_synced), ("b", one_synced)]);
    m.sync_succeeded("b", 1.0);
    assert!(m.render().contains("sync=\"b\""));
    m.observe_secrets([("a", one_synced)]);
    let text = m.render();
    assert!(!text.contains("sync=\"b\""), "{text}");
    assert_eq!(
        sample(&text, "secretsync_secrets{sync=\"a\",state=\"SYNCED\"}"),
        Some(1.0)
    );
}

#[test]
fn rotation_conflicts_are_counted_per_sync_and_leave_with_it() {
    let m = Metrics::new();
    m.observe_secrets([("app", SecretCounts::default())]);
    m.rotation_conflicts("app", 0);
    assert!(
        !m.render().contains("secretsync_rotation_conflicts_total{"),
        "no series before the first conflict"
    );
    m.rotation_conflicts("app", 2);
    m.rotation_conflicts("app", 1);
    let text = m.render();
    assert!(
        text.contains("# TYPE secretsync_rotation_conflicts_total counter"),
        "{text}"
    );
    assert_eq!(
        sample(&text, "secretsync_rotation_conflicts_total{sync=\"app\"}"),
        Some(3.0)
    );
    m.observe_secrets([]);
    assert!(!m.render().contains("sync=\"app\""));
}

/// One raw HTTP exchange with the endpoint; returns the whole response.
fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).expect("send");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_serves_get_and_refuses_the_rest() {
    let metrics = Arc::new(Metrics::new());
    metrics.aws_call("ListSecrets", "ok");
    let listener = server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, Arc::clone(&metrics), async {
        let _ = stop_rx.await;
    }));
    let got = tokio::task::spawn_blocking(move || {
        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = exchange(addr, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let missing = exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let post = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        );
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let oversize = exchange(addr, huge.as_bytes());
        let garbage = exchange(addr, b"\x00\x01 not http\r\n\r\n");
        (ok, head, missing, post, oversize, garbage)
    })
    .await
    .unwrap();
    let (ok, head, missing, post, oversize, garbage) = got;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("text/plain; version=0.0.4"), "{ok}");
    assert!(
        ok.contains("secretsync_aws_calls_total{operation=\"ListSecrets\",outcome=\"ok\"} 1"),
        "{ok}"
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.contains("secretsync_"), "HEAD has no body: {head}");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    assert!(
        post.to_ascii_lowercase().contains("allow: get, head"),
        "{post}"
    );
    assert!(
        oversize.is_empty() || oversize.starts_with("HTTP/1.1 431"),
        "{oversize}"
    );
    assert!(!garbage.contains("secretsync_"), "{garbage}");
    // Still serving after the abuse.
    let again = tokio::task::spawn_blocking(move || {
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    })
    .await
    .unwrap();
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("server stops")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn silent_clients_are_cut_off() {
    let listener = server::bind("127.0.0.1:0".parse().unwrap())
        .await
        .expect("bind");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(
        listener,
        Arc::new(Metrics::new()),
        std::future::pending(),
    ));
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::io::AsyncReadExt::read(&mut idle, &mut buf),
    )
    .await
    .expect("closed before 60 s")
    .unwrap_or(0);
    let reply = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    assert!(tokio::time::Instant::now() - start <= server::CONNECTION_TIMEOUT);
}

#[tokio::test]
async fn only_loopback_is_served() {
    for addr in ["0.0.0.0:9469", "192.0.2.1:9469", "[::]:9469"] {
        let err = server::bind(addr.parse().unwrap()).await.expect_err(addr);
        assert!(err.to_string().contains("not a loopback"), "{err}");
    }
}

#[test]
fn identity_collisions_are_counted_per_sync() {
    let m = Metrics::new();
    m.identity_collisions("app", 0);
    assert!(!m.render().contains("secretsync_identity_collisions_total{"));
    m.identity_collisions("app", 2);
    m.identity_collisions("app", 1);
    assert_eq!(
        sample(
            &m.render(),
            "secretsync_identity_collisions_total{sync=\"app\"}"
        ),
        Some(3.0)
    );
}
