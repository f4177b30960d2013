//! End-to-end test of `agent.metrics_listen`: the real agent against moto
//! (behind the fault proxy), scraped over HTTP while it syncs, retries a
//! throttled write and rejects a reload.

mod agent_support;
mod support;

use agent_support::{
    Agent, AgentOpts, CANARY, DEADLINE, World, eventually, free_loopback_addr, metric, scrape,
    sync_entry,
};
use support::{Fault, op};

/// Scrapes until `series` has a value satisfying `want`.
fn wait_metric(
    addr: std::net::SocketAddr,
    series: &str,
    want: impl Fn(f64) -> bool,
) -> (f64, String) {
    eventually(
        series,
        DEADLINE,
        || {
            let (code, body) = scrape(addr);
            assert_eq!(code, 200, "{body}");
            metric(&body, series)
                .filter(|v| want(*v))
                .map(|v| (v, body))
        },
        || scrape(addr).1,
    )
}

#[test]
fn metrics_follow_passes_calls_throttles_and_reloads() {
    let w = World::new();
    let file = w.write("app/app.env", &format!("A=1\nTOKEN={CANARY}\n"));
    let addr = free_loopback_addr();
    let opts = AgentOpts {
        metrics_listen: Some(addr),
        ..AgentOpts::default()
    };
    let config = w.config(&opts, &[sync_entry("app", &[&file], "")]);
    let agent = Agent::start(&w);
    w.wait_synced("app");

    // First pass: two creates, both secrets SYNCED, a success timestamp.
    let (_, body) = wait_metric(
        addr,
        "secretsync_secrets{sync=\"app\",state=\"SYNCED\"}",
        |v| v == 2.0,
    );
    assert_eq!(
        metric(
            &body,
            "secretsync_aws_calls_total{operation=\"CreateSecret\",outcome=\"ok\"}"
        ),
        Some(2.0),
        "{body}"
    );
    assert!(
        metric(
            &body,
            "secretsync_aws_calls_total{operation=\"ListSecrets\",outcome=\"ok\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(
        metric(
            &body,
            "secretsync_passes_total{sync=\"app\",status=\"SYNCED\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    assert!(
        metric(
            &body,
            "secretsync_pass_duration_seconds_count{sync=\"app\"}"
        )
        .is_some_and(|v| v >= 1.0),
        "{body}"
    );
    let first_success = metric(
        &body,
        "secretsync_last_success_timestamp_seconds{sync=\"app\"}",
    )
    .expect("last success timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        first_success > now - 120.0 && first_success <= now + 1.0,
        "{first_success} vs {now}"
    );
    assert_eq!(
        metric(&body, "secretsync_config_last_reload_successful"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &body,
            "secretsync_aws_throttles_total{operation=\"PutSecretValue\"}"
        ),
        None
    );

    // An edit whose write is throttled once: the SDK retries, the value
    // arrives, and the throttle, the retry and the propagation are counted.
    w.proxy.inject(Fault::ThrottleFirst {
        op: op("PutSecretValue"),
        count: 1,
    });
    let tmp = w.write("app/.app.env.tmp", &format!("A=2\nTOKEN={CANARY}\n"));
    std::fs::rename(&tmp, &file).unwrap();
    w.wait_value("app/A", "2");
    let (_, body) = wait_metric(
        addr,
        "secretsync_aws_calls_total{operation=\"PutSecretValue\",outcome=\"ok\"}",
        |v| v == 1.0,
    );
    assert_eq!(
        metric(
            &body,
            "secretsync_aws_throttles_total{operation=\"PutSecretValue\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "secretsync_aws_retries_total{operation=\"PutSecretValue\"}"
        ),
        Some(1.0),
        "{body}"
    );
    let (_, body) = wait_metric(
        addr,
        "secretsync_propagation_seconds_count{sync=\"app\"}",
        |v| v >= 1.0,
    );
    let latency = metric(&body, "secretsync_propagation_seconds_sum{sync=\"app\"}").unwrap();
    assert!(
        latency > 0.1 && latency < DEADLINE.as_secs_f64(),
        "propagation includes the debounce and the retry: {latency}"
    );
    let (later, _) = wait_metric(
        addr,
        "secretsync_last_success_timestamp_seconds{sync=\"app\"}",
        |v| v > first_success,
    );
    assert!(later > first_success);

    // A rejected reload is counted and flips the gauge.
    let valid = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{valid}bogus_key: 1\n")).unwrap();
    agent.signal(libc::SIGHUP);
    let (_, body) = wait_metric(
        addr,
        "secretsync_config_reloads_total{outcome=\"failure\"}",
        |v| v == 1.0,
    );
    assert_eq!(
        metric(&body, "secretsync_config_last_reload_successful"),
        Some(0.0),
        "{body}"
    );
    std::fs::write(&config, valid).unwrap();
    agent.signal(libc::SIGHUP);
    let (_, body) = wait_metric(
        addr,
        "secretsync_config_reloads_total{outcome=\"success\"}",
        |v| v == 1.0,
    );
    assert_eq!(
        metric(&body, "secretsync_config_last_reload_successful"),
        Some(1.0),
        "{body}"
    );
    agent.stop();

    // `check` names the endpoint.
    let out = w.cli(&["check", "--offline", "--config", config.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("http://{addr}/metrics")),
        "{}",
        out.stdout
    );
}

#[test]
fn a_taken_metrics_port_stops_the_agent_with_exit_2() {
    let w = World::new();
    let file = w.write("app/app.env", "A=1\n");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let opts = AgentOpts {
        metrics_listen: Some(taken.local_addr().unwrap()),
        ..AgentOpts::default()
    };
    w.config(&opts, &[sync_entry("app", &[&file], "")]);
    let mut agent = Agent::spawn(&w);
    let status = agent.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(2), "{}", agent.stderr());
    assert!(
        agent.stderr().contains("cannot listen on"),
        "{}",
        agent.stderr()
    );
    assert!(
        !w.socket().exists(),
        "the control socket is removed on that early exit"
    );
}
