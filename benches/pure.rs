//! Microbenchmarks of the pure stages, with the targets they must meet.
//! The engine's budget is 50 µs per secret for everything except network
//! (plan + bookkeeping); the pure stages must take a small share of it:
//! - parse a 5,000-line `.env`: < 5 ms (1 µs/line; a file this size is far
//!   beyond real ones, and parsing must never be the slow part of a pass);
//! - desired state for 5,000 keys (mapping, AWS limits, tags): < 10 ms
//!   (< 2 µs per key);
//! - plan 5,000 secrets (desired vs actual, all unchanged): < 10 ms, i.e.
//!   < 2 µs per secret;
//! - semantic compare of a 1,000-key many-to-one JSON secret: < 2 ms, so
//!   the no-op check of a large JSON secret costs less than one API call
//!   (~20 ms on AWS).
//!
//! Measured in thread CPU time (`support/cpu_time.rs`), not wall time: the
//! stages do no IO, and on a shared machine wall time mostly measures the
//! other processes. `benches/report_pure.py` prints the results against
//! these targets (keep
//! the two in step). Run: `cargo bench --bench pure` (or
//! `scripts/bench.sh`). Under `cargo test` each runs once.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

#[path = "support/cpu_time.rs"]
mod cpu_time;
use secretsync::reconcile::desired::{self, MappingKind, MappingSpec};
use secretsync::reconcile::plan::{self, Actual, PlanOptions};
use secretsync::secret::SecretValue;
use secretsync::source;
use secretsync::store::RemoteSecret;

fn spec(mapping: MappingKind) -> MappingSpec {
    MappingSpec {
        sync_name: "bench".into(),
        agent_id: "host".into(),
        environment: Some("prod".into()),
        mapping,
        key_schema: "{{environment}}/{{secretKey}}".into(),
        secret_name: Some("prod/bench".into()),
        include: vec![glob::Pattern::new("*").expect("static glob")],
        exclude: vec![],
        tags: BTreeMap::from([("team".into(), "bench".into())]),
        metadata_as_tags: false,
        kms_key_id: None,
        description: None,
        replica_regions: vec![],
    }
}

fn env_text(n: usize) -> String {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("KEY_{i}=plain-value-{i}\n"),
            1 => format!("export KEY_{i}=\"quoted \\n value {i}\"\n"),
            2 => format!("KEY_{i}='single {i}' # comment\n"),
            _ => format!("# comment line {i}\nKEY_{i}=v{i}\n"),
        })
        .collect()
}

/// Actual state equal to desired: every secret owned, same value and tags.
fn actual_for(spec: &MappingSpec, d: &desired::Desired) -> Actual {
    let mut actual = Actual::default();
    for s in &d.secrets {
        actual.secrets.insert(
            s.name.clone(),
            RemoteSecret {
                name: s.name.clone(),
                arn: format!("arn:aws:secretsmanager:us-east-1:1:secret:{}", s.name),
                tags: s.tags.clone(),
                description: Some(spec.effective_description()),
                current_version: Some("v1".into()),
                ..Default::default()
            },
        );
        actual
            .values
            .insert(s.name.clone(), Ok(Some(s.value.clone())));
    }
    actual
}

fn benches(c: &mut Criterion<cpu_time::ThreadCpuTime>) {
    let text = env_text(5_000);
    c.bench_function("parse .env 5000 lines", |b| {
        b.iter(|| source::parse_env(black_box(&text), false).expect("valid"))
    });

    let parsed = source::parse_env(&text, false).expect("valid");
    let one = spec(MappingKind::OneToOne);
    let d = desired::build_desired(&one, &[&parsed]);
    let actual = actual_for(&one, &d);
    let opts = PlanOptions::default();
    c.bench_function("plan 5000 unchanged secrets", |b| {
        b.iter(|| {
            let p = plan::plan(&one, black_box(&d), black_box(&actual), &opts);
            assert_eq!(p.unchanged, 5_000);
        })
    });
    c.bench_function("desired 5000 keys (mapping + limits)", |b| {
        b.iter(|| desired::build_desired(&one, black_box(&[&parsed])))
    });

    let keys = source::parse_env(&env_text(1_000), false).expect("valid");
    let many = spec(MappingKind::ManyToOne);
    let dm = desired::build_desired(&many, &[&keys]);
    let mut am = actual_for(&many, &dm);
    // AWS holds the same object pretty-printed in another key order.
    let obj: serde_json::Value = serde_json::from_str(dm.secrets[0].value.expose()).expect("json");
    let mut entries: Vec<_> = obj.as_object().expect("object").iter().collect();
    entries.reverse();
    let reordered: serde_json::Map<String, serde_json::Value> = entries
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pretty = serde_json::to_string_pretty(&reordered).expect("json");
    am.values
        .insert("prod/bench".into(), Ok(Some(SecretValue::new(pretty))));
    c.bench_function("many-to-one compare 1000 keys", |b| {
        b.iter(|| {
            let p = plan::plan(&many, black_box(&dm), black_box(&am), &opts);
            assert_eq!(p.unchanged, 1);
        })
    });
}

criterion_group! {
    name = pure;
    config = Criterion::default().with_measurement(cpu_time::ThreadCpuTime);
    targets = benches
}
criterion_main!(pure);
