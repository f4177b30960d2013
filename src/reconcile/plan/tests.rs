//! Table tests for the planner: each case is desired (key → value), actual
//! (remote secrets with owner and value) and options, and the expected list
//! of `(action, name)` plus per-secret states.

use super::*;
use crate::reconcile::desired::{DesiredError, MappingKind};

const AGENT: &str = "web-01";
const SYNC: &str = "app";

fn spec() -> MappingSpec {
    MappingSpec {
        sync_name: SYNC.into(),
        agent_id: AGENT.into(),
        environment: None,
        mapping: MappingKind::OneToOne,
        key_schema: "{{secretKey}}".into(),
        secret_name: None,
        include: vec![],
        exclude: vec![],
        tags: BTreeMap::new(),
        metadata_as_tags: false,
        kms_key_id: None,
        description: Some("d".into()),
        replica_regions: vec![],
    }
}

#[derive(Clone, Copy)]
enum Owner {
    Us,
    Nobody,
    OtherAgent,
    OtherSync,
}

fn remote(name: &str, owner: Owner, pending: bool) -> RemoteSecret {
    let mut tags = BTreeMap::new();
    let mut own = |a: &str, s: &str| {
        tags.insert(naming::TAG_AGENT.to_string(), a.to_string());
        tags.insert(naming::TAG_SYNC.to_string(), s.to_string());
    };
    match owner {
        Owner::Us => own(AGENT, SYNC),
        Owner::Nobody => {}
        Owner::OtherAgent => own("web-02", SYNC),
        Owner::OtherSync => own(AGENT, "other"),
    }
    RemoteSecret {
        name: name.into(),
        arn: format!("arn:aws:secretsmanager:us-east-1:1:secret:{name}-abc"),
        tags,
        kms_key_id: None,
        description: Some("d".into()),
        pending_deletion: pending,
        current_version: Some(format!("v-{name}")),
        rotation_enabled: false,
    }
}

fn desired_one(pairs: &[(&str, &str)]) -> Desired {
    let s = spec();
    Desired {
        skipped: Vec::new(),
        secrets: pairs
            .iter()
            .map(|(k, v)| DesiredSecret {
                key: Some((*k).into()),
                name: (*k).into(),
                value: SecretValue::new(*v),
                tags: s.ownership_tags(),
                json_keys: None,
            })
            .collect(),
        errors: vec![],
    }
}

fn actual(secrets: &[(&str, Owner, bool, Option<&str>)]) -> Actual {
    let mut a = Actual::default();
    for (name, owner, pending, value) in secrets {
        a.secrets
            .insert((*name).into(), remote(name, *owner, *pending));
        if let Some(v) = value {
            a.values
                .insert((*name).into(), Ok(Some(SecretValue::new(*v))));
        }
    }
    a
}

fn kinds(p: &Plan) -> Vec<(ActionKind, String)> {
    p.actions.iter().map(|a| (a.kind, a.name.clone())).collect()
}

fn states(p: &Plan) -> Vec<(String, SecretState)> {
    let mut v: Vec<_> = p
        .secrets
        .iter()
        .map(|s| (s.name.clone(), s.state))
        .collect();
    v.sort();
    v
}

use ActionKind as K;
use SecretState as S;

struct Case {
    what: &'static str,
    desired: Desired,
    actual: Actual,
    opts: PlanOptions,
    actions: Vec<(ActionKind, &'static str)>,
    states: Vec<(&'static str, SecretState)>,
    guard: bool,
}

fn opts() -> PlanOptions {
    PlanOptions::default()
}

#[test]
fn plan_table() {
    let cases = vec![
        Case {
            what: "absent -> create",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[]),
            opts: opts(),
            actions: vec![(K::Create, "A")],
            states: vec![("A", S::Synced)],
            guard: false,
        },
        Case {
            what: "equal value and tags -> nothing",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[("A", Owner::Us, false, Some("1"))]),
            opts: opts(),
            actions: vec![],
            states: vec![("A", S::Synced)],
            guard: false,
        },
        Case {
            what: "value differs -> update",
            desired: desired_one(&[("A", "2")]),
            actual: actual(&[("A", Owner::Us, false, Some("1"))]),
            opts: opts(),
            actions: vec![(K::Update, "A")],
            states: vec![("A", S::Synced)],
            guard: false,
        },
        Case {
            what: "unowned without adopt -> conflict, no call",
            desired: desired_one(&[("A", "2")]),
            actual: actual(&[("A", Owner::Nobody, false, Some("1"))]),
            opts: opts(),
            actions: vec![(K::Conflict, "A")],
            states: vec![("A", S::Conflict)],
            guard: false,
        },
        Case {
            what: "unowned with adopt -> update + ownership tags",
            desired: desired_one(&[("A", "2")]),
            actual: actual(&[("A", Owner::Nobody, false, Some("1"))]),
            opts: PlanOptions {
                adopt_existing: true,
                ..opts()
            },
            actions: vec![(K::Update, "A"), (K::Tag, "A")],
            states: vec![("A", S::Synced)],
            guard: false,
        },
        Case {
            what: "other agent -> conflict even with adopt",
            desired: desired_one(&[("A", "2")]),
            actual: actual(&[("A", Owner::OtherAgent, false, Some("1"))]),
            opts: PlanOptions {
                adopt_existing: true,
                ..opts()
            },
            actions: vec![(K::Conflict, "A")],
            states: vec![("A", S::Conflict)],
            guard: false,
        },
        Case {
            what: "other sync -> conflict",
            desired: desired_one(&[("A", "2")]),
            actual: actual(&[("A", Owner::OtherSync, false, Some("1"))]),
            opts: opts(),
            actions: vec![(K::Conflict, "A")],
            states: vec![("A", S::Conflict)],
            guard: false,
        },
        Case {
            what: "orphan owned -> delete",
            desired: desired_one(&[("A", "1"), ("B", "1")]),
            actual: actual(&[
                ("A", Owner::Us, false, Some("1")),
                ("B", Owner::Us, false, Some("1")),
                ("C", Owner::Us, false, None),
            ]),
            opts: opts(),
            actions: vec![(K::Delete, "C")],
            states: vec![("A", S::Synced), ("B", S::Synced), ("C", S::Deleted)],
            guard: false,
        },
        Case {
            what: "orphan owned by someone else is never deleted",
            desired: desired_one(&[]),
            actual: actual(&[
                ("X", Owner::OtherAgent, false, None),
                ("Y", Owner::Nobody, false, None),
            ]),
            opts: opts(),
            actions: vec![],
            states: vec![],
            guard: false,
        },
        Case {
            what: "disable_secret_deletion -> retained",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[
                ("A", Owner::Us, false, Some("1")),
                ("C", Owner::Us, false, None),
            ]),
            opts: PlanOptions {
                disable_deletion: true,
                ..opts()
            },
            actions: vec![],
            states: vec![("A", S::Synced), ("C", S::Retained)],
            guard: false,
        },
        Case {
            what: "unreadable source -> retained",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[
                ("A", Owner::Us, false, Some("1")),
                ("C", Owner::Us, false, None),
            ]),
            opts: PlanOptions {
                deletes_blocked: Some("x.env does not parse".into()),
                ..opts()
            },
            actions: vec![],
            states: vec![("A", S::Synced), ("C", S::Retained)],
            guard: false,
        },
        Case {
            what: "guard: 3 of 4 -> nothing deleted",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[
                ("A", Owner::Us, false, Some("1")),
                ("B", Owner::Us, false, None),
                ("C", Owner::Us, false, None),
                ("D", Owner::Us, false, None),
            ]),
            opts: opts(),
            actions: vec![],
            states: vec![
                ("A", S::Synced),
                ("B", S::Retained),
                ("C", S::Retained),
                ("D", S::Retained),
            ],
            guard: true,
        },
        Case {
            what: "guard lifted by allow_deletes",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[
                ("A", Owner::Us, false, Some("1")),
                ("B", Owner::Us, false, None),
                ("C", Owner::Us, false, None),
            ]),
            opts: PlanOptions {
                allow_deletes: true,
                ..opts()
            },
            actions: vec![(K::Delete, "B"), (K::Delete, "C")],
            states: vec![("A", S::Synced), ("B", S::Deleted), ("C", S::Deleted)],
            guard: false,
        },
        Case {
            what: "guard: a single deletion always passes",
            desired: desired_one(&[]),
            actual: actual(&[("B", Owner::Us, false, None)]),
            opts: opts(),
            actions: vec![(K::Delete, "B")],
            states: vec![("B", S::Deleted)],
            guard: false,
        },
        Case {
            what: "guard off at fraction 1.0",
            desired: desired_one(&[]),
            actual: actual(&[("B", Owner::Us, false, None), ("C", Owner::Us, false, None)]),
            opts: PlanOptions {
                max_delete_fraction: 1.0,
                ..opts()
            },
            actions: vec![(K::Delete, "B"), (K::Delete, "C")],
            states: vec![("B", S::Deleted), ("C", S::Deleted)],
            guard: false,
        },
        Case {
            what: "key back while pending deletion -> restore + update",
            desired: desired_one(&[("A", "1")]),
            actual: actual(&[("A", Owner::Us, true, None)]),
            opts: opts(),
            actions: vec![(K::Restore, "A"), (K::Update, "A")],
            states: vec![("A", S::Synced)],
            guard: false,
        },
        Case {
            what: "pending deletion and not desired -> deleted, no call",
            desired: desired_one(&[]),
            actual: actual(&[("A", Owner::Us, true, None)]),
            opts: opts(),
            actions: vec![],
            states: vec![("A", S::Deleted)],
            guard: false,
        },
    ];
    for c in cases {
        let p = plan(&spec(), &c.desired, &c.actual, &c.opts);
        let want: Vec<(ActionKind, String)> = c
            .actions
            .iter()
            .map(|(k, n)| (*k, (*n).to_string()))
            .collect();
        assert_eq!(kinds(&p), want, "{}", c.what);
        let want_states: Vec<(String, SecretState)> = c
            .states
            .iter()
            .map(|(n, s)| ((*n).to_string(), *s))
            .collect();
        assert_eq!(states(&p), want_states, "{}", c.what);
        assert_eq!(p.guard_tripped.is_some(), c.guard, "{}", c.what);
    }
}

#[test]
fn delete_uses_recovery_window() {
    for days in [0u8, 7, 30] {
        let p = plan(
            &spec(),
            &desired_one(&[]),
            &actual(&[("C", Owner::Us, false, None)]),
            &PlanOptions {
                recovery_window_days: days,
                ..opts()
            },
        );
        assert_eq!(
            p.actions[0].op,
            Op::Delete {
                recovery_window_days: days
            }
        );
    }
}

#[test]
fn tags_ours_set_and_stale_removed_others_kept() {
    let mut s = spec();
    s.tags = BTreeMap::from([("team".into(), "pay".into())]);
    let mut d = desired_one(&[("A", "1")]);
    d.secrets[0].tags.insert("team".into(), "pay".into());
    let mut a = actual(&[("A", Owner::Us, false, Some("1"))]);
    let r = a.secrets.get_mut("A").unwrap();
    r.tags.insert("old".into(), "x".into());
    r.tags.insert("someone-else".into(), "y".into());
    let o = PlanOptions {
        managed_tags: BTreeMap::from([("A".to_string(), BTreeSet::from(["old".to_string()]))]),
        ..opts()
    };
    let p = plan(&s, &d, &a, &o);
    assert_eq!(kinds(&p), vec![(K::Tag, "A".to_string())]);
    assert_eq!(
        p.actions[0].op,
        Op::Tag {
            set: BTreeMap::from([("team".into(), "pay".into())]),
            remove: vec!["old".into()],
        }
    );
    // Equal tags: no call.
    let r = a.secrets.get_mut("A").unwrap();
    r.tags.insert("team".into(), "pay".into());
    r.tags.remove("old");
    assert!(plan(&s, &d, &a, &o).actions.is_empty());
}

#[test]
fn tokens_are_stable_and_distinguish_history() {
    let v1 = SecretValue::new("one");
    let v2 = SecretValue::new("two");
    assert_eq!(
        request_token(&TokenKey::default(), "n", &v1, None),
        request_token(&TokenKey::default(), "n", &v1, None)
    );
    assert_ne!(
        request_token(&TokenKey::default(), "n", &v1, None),
        request_token(&TokenKey::default(), "m", &v1, None)
    );
    let t1 = request_token(&TokenKey::default(), "n", &v1, None);
    let t2 = request_token(&TokenKey::default(), "n", &v2, Some(&t1));
    let t3 = request_token(&TokenKey::default(), "n", &v1, Some(&t2));
    assert_ne!(t1, t3, "v1 -> v2 -> v1 must write again");
    assert_ne!(t2, t3);
    assert_eq!(t1.len(), 64);
    assert!(!t1.contains("one"));
    let other = TokenKey([7; 32]);
    assert_ne!(
        request_token(&other, "n", &v1, None),
        t1,
        "the key changes every token"
    );
}

#[test]
fn update_token_depends_on_replaced_version() {
    let p = plan(
        &spec(),
        &desired_one(&[("A", "2")]),
        &actual(&[("A", Owner::Us, false, Some("1"))]),
        &opts(),
    );
    let Op::PutValue { token, .. } = &p.actions[0].op else {
        panic!("not a put")
    };
    assert_eq!(
        *token,
        request_token(
            &TokenKey::default(),
            "A",
            &SecretValue::new("2"),
            Some("v-A")
        )
    );
}

fn many(keys: &[(&str, &str)]) -> Desired {
    let s = spec();
    let obj: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|(k, v)| ((*k).to_string(), serde_json::Value::String((*v).into())))
        .collect();
    Desired {
        skipped: Vec::new(),
        secrets: vec![DesiredSecret {
            key: None,
            name: "M".into(),
            value: SecretValue::new(serde_json::Value::Object(obj).to_string()),
            tags: s.ownership_tags(),
            json_keys: Some(keys.iter().map(|(k, _)| (*k).to_string()).collect()),
        }],
        errors: vec![],
    }
}

#[test]
fn many_to_one_compares_semantically() {
    let d = many(&[("A", "1"), ("B", "2")]);
    let a = actual(&[(
        "M",
        Owner::Us,
        false,
        Some("{ \"B\": \"2\",\n \"A\": \"1\" }"),
    )]);
    assert!(plan(&spec(), &d, &a, &opts()).actions.is_empty());
    let a = actual(&[("M", Owner::Us, false, Some(r#"{"A":"1","B":"3"}"#))]);
    assert_eq!(
        kinds(&plan(&spec(), &d, &a, &opts())),
        vec![(K::Update, "M".to_string())]
    );
    let a = actual(&[("M", Owner::Us, false, Some("not json"))]);
    assert_eq!(
        kinds(&plan(&spec(), &d, &a, &opts())),
        vec![(K::Update, "M".to_string())]
    );
}

#[test]
fn many_to_one_guard_on_dropped_keys() {
    let d = many(&[("A", "1")]);
    let a = actual(&[(
        "M",
        Owner::Us,
        false,
        Some(r#"{"A":"1","B":"2","C":"3","D":"4"}"#),
    )]);
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Error, "M".to_string())]);
    let p = plan(
        &spec(),
        &d,
        &a,
        &PlanOptions {
            allow_deletes: true,
            ..opts()
        },
    );
    assert_eq!(kinds(&p), vec![(K::Update, "M".to_string())]);
    let p = plan(
        &spec(),
        &d,
        &a,
        &PlanOptions {
            allow_deletes: true,
            deletes_blocked: Some("f missing".into()),
            ..opts()
        },
    );
    assert_eq!(
        kinds(&p),
        vec![(K::Error, "M".to_string())],
        "unreadable source never drops keys"
    );
}

#[test]
fn values_known_to_differ_are_written_without_a_read_one_to_one_only() {
    // One-to-one: a name known to differ is written although no value was
    // read; a name neither read nor known is an error, never a blind write.
    let d = desired_one(&[("A", "1"), ("B", "1")]);
    let mut a = actual(&[("A", Owner::Us, false, None), ("B", Owner::Us, false, None)]);
    a.known_different.insert("A".into());
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(
        kinds(&p),
        vec![(K::Update, "A".to_string()), (K::Error, "B".to_string())]
    );
    // Many-to-one needs the current JSON for its key guard, so "known to
    // differ" alone is not enough: without a read it is an error.
    let d = many(&[("A", "1")]);
    let mut a = actual(&[("M", Owner::Us, false, None)]);
    a.known_different.insert("M".into());
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Error, "M".to_string())]);
}

#[test]
fn kms_and_description() {
    let mut s = spec();
    s.kms_key_id = Some("alias/app".into());
    let d = desired_one(&[("A", "1")]);
    let mut a = actual(&[("A", Owner::Us, false, Some("1"))]);
    assert_eq!(
        kinds(&plan(&s, &d, &a, &opts())),
        vec![(K::Kms, "A".to_string())]
    );
    a.secrets.get_mut("A").unwrap().kms_key_id = Some("arn:aws:kms:us-east-1:1:alias/app".into());
    assert!(plan(&s, &d, &a, &opts()).actions.is_empty());
    a.secrets.get_mut("A").unwrap().description = Some("changed by hand".into());
    assert_eq!(
        kinds(&plan(&s, &d, &a, &opts())),
        vec![(K::Describe, "A".to_string())]
    );
}

/// Key ARN of key `id` in the test account.
fn key_arn(id: &str) -> String {
    format!("arn:aws:kms:us-east-1:123456789012:key/{id}")
}

fn identity(id: &str) -> KeyIdentity {
    KeyIdentity {
        key_id: id.into(),
        arn: key_arn(id),
    }
}

#[test]
fn kms_keys_compare_by_identity() {
    const MANAGED: &str = "aaaa-managed";
    // (what, configured, reported (None = omitted), spellings KMS resolved,
    //  accepted (configured, reported) for A, expect a kms action)
    type Row = (
        &'static str,
        &'static str,
        Option<String>,
        Vec<(&'static str, &'static str)>,
        Option<(&'static str, Option<&'static str>)>,
        bool,
    );
    let cases: Vec<Row> = vec![
        (
            "same alias",
            "alias/app",
            Some("alias/app".into()),
            vec![],
            None,
            false,
        ),
        (
            "alias vs its alias ARN",
            "alias/app",
            Some("arn:aws:kms:us-east-1:123456789012:alias/app".into()),
            vec![],
            None,
            false,
        ),
        (
            "key id vs its key ARN",
            "k1",
            Some(key_arn("k1")),
            vec![],
            None,
            false,
        ),
        (
            "key ARN vs its key id",
            &*key_arn("k1").leak(),
            Some("k1".into()),
            vec![],
            None,
            false,
        ),
        (
            "alias resolved vs key ARN of that key",
            "alias/app",
            Some(key_arn("k1")),
            vec![("alias/app", "k1")],
            None,
            false,
        ),
        (
            "alias resolved vs key id of that key",
            "alias/app",
            Some("k1".into()),
            vec![("alias/app", "k1")],
            None,
            false,
        ),
        (
            "alias resolved vs another key",
            "alias/app",
            Some(key_arn("k2")),
            vec![("alias/app", "k1")],
            None,
            true,
        ),
        (
            "key ARN vs other alias of the same key",
            &*key_arn("k1").leak(),
            Some("alias/old-name".into()),
            vec![("alias/old-name", "k1")],
            None,
            false,
        ),
        (
            "two aliases of different keys",
            "alias/app",
            Some("alias/old".into()),
            vec![("alias/app", "k1"), ("alias/old", "k2")],
            None,
            true,
        ),
        // DescribeSecret omits the AWS-managed key.
        (
            "managed alias named, omitted",
            "alias/aws/secretsmanager",
            None,
            vec![],
            None,
            false,
        ),
        (
            "managed alias ARN named, omitted",
            "arn:aws:kms:us-east-1:123456789012:alias/aws/secretsmanager",
            None,
            vec![],
            None,
            false,
        ),
        (
            "managed key's ARN named, omitted, resolved",
            &*key_arn(MANAGED).leak(),
            None,
            vec![("alias/aws/secretsmanager", MANAGED)],
            None,
            false,
        ),
        (
            "custom alias, omitted (managed key in use)",
            "alias/app",
            None,
            vec![("alias/app", "k1"), ("alias/aws/secretsmanager", MANAGED)],
            None,
            true,
        ),
        // DescribeKey denied: nothing resolved.
        (
            "denied: custom alias, omitted -> write",
            "alias/app",
            None,
            vec![],
            None,
            true,
        ),
        (
            "denied: alias vs key ARN -> write",
            "alias/app",
            Some(key_arn("k1")),
            vec![],
            None,
            true,
        ),
        (
            "denied: written once, AWS reports the key ARN since",
            "alias/app",
            Some(key_arn("k1")),
            vec![],
            Some(("alias/app", Some(&*key_arn("k1").leak()))),
            false,
        ),
        (
            "denied: written once, AWS reports nothing since",
            "alias/app",
            None,
            vec![],
            Some(("alias/app", None)),
            false,
        ),
        (
            "denied: written once, then changed by hand",
            "alias/app",
            Some(key_arn("k9")),
            vec![],
            Some(("alias/app", Some(&*key_arn("k1").leak()))),
            true,
        ),
        (
            "denied: written for an older configured key",
            "alias/new",
            Some(key_arn("k1")),
            vec![],
            Some(("alias/app", Some(&*key_arn("k1").leak()))),
            true,
        ),
    ];
    for (what, configured, reported, ids, accepted, want_kms) in cases {
        let mut s = spec();
        s.kms_key_id = Some(configured.into());
        let d = desired_one(&[("A", "1")]);
        let mut a = actual(&[("A", Owner::Us, false, Some("1"))]);
        a.secrets.get_mut("A").unwrap().kms_key_id = reported.clone();
        let mut o = opts();
        o.kms.identities = ids
            .iter()
            .map(|(spelling, id)| ((*spelling).to_string(), identity(id)))
            .collect();
        if let Some((k, r)) = accepted {
            o.kms
                .accepted
                .insert("A".into(), (k.into(), r.map(str::to_string)));
        }
        let p = plan(&s, &d, &a, &o);
        let want = if want_kms {
            vec![(K::Kms, "A".to_string())]
        } else {
            vec![]
        };
        assert_eq!(kinds(&p), want, "{what}");
        if want_kms {
            assert!(
                matches!(&p.actions[0].op, Op::UpdateMetadata { kms_key_id: Some(k), description: None } if k == configured),
                "{what}: writes the configured spelling"
            );
        }
    }
}

#[test]
fn kms_spellings_to_resolve_only_when_spellings_differ() {
    let mut s = spec();
    let d = desired_one(&[("A", "1"), ("B", "1"), ("C", "1"), ("F", "1")]);
    let mut a = actual(&[
        ("A", Owner::Us, false, Some("1")),
        ("B", Owner::Us, false, Some("1")),
        ("C", Owner::Us, false, Some("1")),
        ("F", Owner::OtherAgent, false, Some("1")),
    ]);
    assert!(
        kms_spellings_to_resolve(&s, &d, &a.secrets, false).is_empty(),
        "no key configured"
    );
    s.kms_key_id = Some("alias/app".into());
    let set = |a: &mut Actual, n: &str, k: Option<&str>| {
        a.secrets.get_mut(n).unwrap().kms_key_id = k.map(str::to_string);
    };
    set(&mut a, "A", Some("arn:aws:kms:us-east-1:1:alias/app"));
    set(&mut a, "B", Some("arn:aws:kms:us-east-1:1:alias/app"));
    set(&mut a, "C", Some("arn:aws:kms:us-east-1:1:alias/app"));
    set(&mut a, "F", Some("alias/foreign"));
    assert!(
        kms_spellings_to_resolve(&s, &d, &a.secrets, false).is_empty(),
        "spelt alike (the foreign secret is never compared): no KMS call"
    );
    set(&mut a, "A", Some(&key_arn("k1")));
    set(&mut a, "B", None);
    set(&mut a, "C", Some("alias/old"));
    let got: Vec<String> = kms_spellings_to_resolve(&s, &d, &a.secrets, false)
        .into_iter()
        .collect();
    assert_eq!(
        got,
        vec!["alias/app", "alias/aws/secretsmanager", "alias/old"]
    );
    // A rotated secret is not compared either.
    a.secrets.get_mut("C").unwrap().rotation_enabled = true;
    set(&mut a, "B", Some("alias/app"));
    assert_eq!(
        kms_spellings_to_resolve(&s, &d, &a.secrets, false)
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["alias/app"]
    );
}

/// (what, desired, actual, opts, actions, states)
type RotationCase = (
    &'static str,
    Desired,
    Actual,
    PlanOptions,
    Vec<(ActionKind, &'static str)>,
    Vec<(&'static str, SecretState)>,
);

#[test]
fn rotation_enabled_secrets_are_never_written_or_deleted() {
    let mut s = spec();
    s.kms_key_id = Some("alias/app".into());
    s.tags.insert("team".into(), "pay".into());
    let rotated = |a: &mut Actual, n: &str| {
        a.secrets.get_mut(n).unwrap().rotation_enabled = true;
    };
    // (what, desired, actual, opts, actions, states)
    let mut cases: Vec<RotationCase> = vec![];
    let mut a = actual(&[("A", Owner::Us, false, Some("rotated-by-aws"))]);
    rotated(&mut a, "A");
    cases.push((
        "value, tags and key differ -> conflict only",
        desired_one(&[("A", "1")]),
        a,
        opts(),
        vec![(K::Conflict, "A")],
        vec![("A", S::Conflict)],
    ));
    let mut a = actual(&[("A", Owner::Us, true, None)]);
    rotated(&mut a, "A");
    cases.push((
        "pending deletion -> no restore",
        desired_one(&[("A", "1")]),
        a,
        opts(),
        vec![(K::Conflict, "A")],
        vec![("A", S::Conflict)],
    ));
    let mut a = actual(&[("A", Owner::Nobody, false, Some("x"))]);
    rotated(&mut a, "A");
    cases.push((
        "adoptable -> not adopted",
        desired_one(&[("A", "1")]),
        a,
        PlanOptions {
            adopt_existing: true,
            ..opts()
        },
        vec![(K::Conflict, "A")],
        vec![("A", S::Conflict)],
    ));
    let mut a = actual(&[
        ("A", Owner::Us, false, Some("1")),
        ("B", Owner::Us, false, Some("2")),
    ]);
    rotated(&mut a, "B");
    cases.push((
        "left the source -> retained, not deleted",
        desired_one(&[("A", "1")]),
        a,
        PlanOptions {
            max_delete_fraction: 1.0,
            ..opts()
        },
        vec![(K::Kms, "A")],
        vec![("A", S::Synced), ("B", S::Retained)],
    ));
    for (what, d, a, o, want_actions, want_states) in cases {
        let p = plan(&s, &d, &a, &o);
        let want: Vec<(ActionKind, String)> = want_actions
            .iter()
            .map(|(k, n)| (*k, (*n).to_string()))
            .collect();
        assert_eq!(kinds(&p), want, "{what}");
        let want: Vec<(String, SecretState)> = want_states
            .iter()
            .map(|(n, st)| ((*n).to_string(), *st))
            .collect();
        assert_eq!(states(&p), want, "{what}");
        assert_eq!(p.rotation_conflicts, 1, "{what}");
        let rotated_name = if what.starts_with("left") { "B" } else { "A" };
        let sp = p.secrets.iter().find(|x| x.name == rotated_name).unwrap();
        assert!(
            sp.message
                .as_deref()
                .unwrap_or("")
                .contains("rotation enabled: AWS owns this value"),
            "{what}: {sp:?}"
        );
    }
    // Nothing to apply for a rotated secret: no op other than report-only.
    let mut a = actual(&[("A", Owner::Us, false, Some("x"))]);
    rotated(&mut a, "A");
    let p = plan(&s, &desired_one(&[("A", "1")]), &a, &opts());
    assert!(!p.has_changes());
}

#[test]
fn desired_errors_are_reported_and_their_names_kept() {
    let mut d = desired_one(&[]);
    d.errors.push(DesiredError {
        key: Some("BIG".into()),
        name: Some("BIG".into()),
        message: "too big".into(),
    });
    let a = actual(&[("BIG", Owner::Us, false, None)]);
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Error, "BIG".to_string())]);
    assert_eq!(states(&p), vec![("BIG".to_string(), S::Error)]);
}

#[test]
fn unreadable_value_is_error_not_write() {
    let d = desired_one(&[("A", "1")]);
    let mut a = actual(&[("A", Owner::Us, false, None)]);
    a.values.insert("A".into(), Err("access denied".into()));
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Error, "A".to_string())]);
}

#[test]
fn only_needed_values_are_read() {
    let d = desired_one(&[("A", "1"), ("B", "1"), ("C", "1"), ("D", "1")]);
    let a = actual(&[
        ("A", Owner::Us, false, None),
        ("B", Owner::Nobody, false, None),
        ("C", Owner::OtherAgent, false, None),
        ("D", Owner::Us, true, None),
    ]);
    assert_eq!(
        names_to_read(&spec(), &d, &a.secrets, false),
        vec!["A".to_string()]
    );
    assert_eq!(
        names_to_read(&spec(), &d, &a.secrets, true),
        vec!["A".to_string(), "B".to_string()]
    );
}

fn replica(region: &str) -> ReplicaStatus {
    ReplicaStatus {
        region: region.into(),
        status: "InSync".into(),
        message: None,
    }
}

fn regions(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|r| (*r).to_string()).collect()
}

/// The replica ops a plan makes, per secret, in order.
fn replica_ops(p: &Plan) -> Vec<(String, String)> {
    p.actions
        .iter()
        .filter_map(|a| match &a.op {
            Op::Replicate { add } => Some((a.name.clone(), format!("+{}", add.join(",")))),
            Op::RemoveReplicas { regions } => {
                Some((a.name.clone(), format!("-{}", regions.join(","))))
            }
            Op::Delete { .. } => Some((a.name.clone(), "delete".into())),
            _ => None,
        })
        .collect()
}

#[test]
fn replica_regions_table() {
    struct R {
        what: &'static str,
        /// Configured replica regions.
        want: &'static [&'static str],
        /// Described this pass (None: not described).
        described: Option<&'static [&'static str]>,
        /// Tracked in the state (None: untracked).
        managed: Option<&'static [&'static str]>,
        ops: &'static [&'static str],
        /// Tracking recorded from the describe.
        tracking: Option<&'static [&'static str]>,
    }
    let cases = [
        R {
            what: "nothing configured, nothing tracked: no call",
            want: &[],
            described: None,
            managed: None,
            ops: &[],
            tracking: None,
        },
        R {
            what: "configured, untracked, not described: unknown, no call",
            want: &["eu-west-1"],
            described: None,
            managed: None,
            ops: &[],
            tracking: None,
        },
        R {
            what: "configured, described without replicas: add",
            want: &["eu-west-1", "ap-south-1"],
            described: Some(&[]),
            managed: None,
            ops: &["+ap-south-1,eu-west-1"],
            tracking: Some(&[]),
        },
        R {
            what: "configured and present: nothing, and it becomes tracked",
            want: &["eu-west-1"],
            described: Some(&["eu-west-1"]),
            managed: None,
            ops: &[],
            tracking: Some(&["eu-west-1"]),
        },
        R {
            what: "tracked, not described: state says present",
            want: &["eu-west-1"],
            described: None,
            managed: Some(&["eu-west-1"]),
            ops: &[],
            tracking: None,
        },
        R {
            what: "new region in config, tracked: add only it",
            want: &["eu-west-1", "eu-central-1"],
            described: None,
            managed: Some(&["eu-west-1"]),
            ops: &["+eu-central-1"],
            tracking: None,
        },
        R {
            what: "dropped from config: remove what we set up",
            want: &[],
            described: None,
            managed: Some(&["eu-west-1"]),
            ops: &["-eu-west-1"],
            tracking: None,
        },
        R {
            what: "dropped from config but already gone in AWS: no call",
            want: &[],
            described: Some(&[]),
            managed: Some(&["eu-west-1"]),
            ops: &[],
            tracking: Some(&[]),
        },
        R {
            what: "someone else's replica is left alone",
            want: &["eu-west-1"],
            described: Some(&["eu-west-1", "sa-east-1"]),
            managed: Some(&["eu-west-1"]),
            ops: &[],
            tracking: Some(&["eu-west-1"]),
        },
        R {
            what: "replica removed behind our back: added again",
            want: &["eu-west-1"],
            described: Some(&[]),
            managed: Some(&["eu-west-1"]),
            ops: &["+eu-west-1"],
            tracking: Some(&[]),
        },
        R {
            what: "swap one region for another",
            want: &["eu-central-1"],
            described: Some(&["eu-west-1"]),
            managed: Some(&["eu-west-1"]),
            ops: &["+eu-central-1", "-eu-west-1"],
            tracking: Some(&["eu-west-1"]),
        },
    ];
    for c in cases {
        let mut sp = spec();
        sp.replica_regions = c.want.iter().map(|r| (*r).to_string()).collect();
        let mut a = actual(&[("A", Owner::Us, false, Some("1"))]);
        if let Some(d) = c.described {
            a.replicas
                .insert("A".into(), d.iter().map(|r| replica(r)).collect());
        }
        let mut o = opts();
        if let Some(m) = c.managed {
            o.managed_replicas.insert("A".into(), regions(m));
        }
        let p = plan(&sp, &desired_one(&[("A", "1")]), &a, &o);
        let got: Vec<String> = replica_ops(&p).into_iter().map(|(_, op)| op).collect();
        assert_eq!(got, c.ops, "{}", c.what);
        assert!(
            p.actions.iter().all(|a| a.kind == K::Replicate),
            "{}: {:?}",
            c.what,
            kinds(&p)
        );
        assert_eq!(
            p.replica_tracking.get("A"),
            c.tracking.map(regions).as_ref(),
            "{}",
            c.what
        );
        assert_eq!(states(&p), vec![("A".to_string(), S::Synced)], "{}", c.what);
        if c.described.is_some() {
            assert!(p.replicas.contains_key("A"), "{}", c.what);
        }
    }
}

#[test]
fn replicas_are_removed_before_a_deletion_and_never_for_foreign_secrets() {
    let mut a = actual(&[
        ("A", Owner::Us, false, Some("1")),
        ("GONE", Owner::Us, false, Some("x")),
        ("THEIRS", Owner::OtherSync, false, Some("x")),
    ]);
    a.replicas.insert(
        "GONE".into(),
        vec![replica("eu-west-1"), replica("sa-east-1")],
    );
    let mut o = opts();
    o.max_delete_fraction = 1.0;
    let p = plan(&spec(), &desired_one(&[("A", "1")]), &a, &o);
    assert_eq!(
        replica_ops(&p),
        vec![
            ("GONE".to_string(), "-eu-west-1,sa-east-1".to_string()),
            ("GONE".to_string(), "delete".to_string()),
        ],
        "all replicas go first (AWS refuses to delete a replicated secret)"
    );
    // Retained secrets keep theirs.
    o.disable_deletion = true;
    let p = plan(&spec(), &desired_one(&[("A", "1")]), &a, &o);
    assert!(replica_ops(&p).is_empty(), "{:?}", kinds(&p));
}

#[test]
fn create_carries_replicas_and_describe_scope() {
    let mut sp = spec();
    sp.replica_regions = vec!["eu-west-1".into()];
    let p = plan(
        &sp,
        &desired_one(&[("NEW", "1")]),
        &Actual::default(),
        &opts(),
    );
    match &p.actions[0].op {
        Op::Create(req) => assert_eq!(req.replica_regions, vec!["eu-west-1".to_string()]),
        other => panic!("{other:?}"),
    }
    // Who gets described.
    let a = actual(&[
        ("OURS", Owner::Us, false, None),
        ("TRACKED", Owner::Us, false, None),
        ("PENDING", Owner::Us, true, None),
        ("THEIRS", Owner::OtherAgent, false, None),
        ("LOOSE", Owner::Nobody, false, None),
    ]);
    let d = desired_one(&[("OURS", "1"), ("TRACKED", "1"), ("LOOSE", "1")]);
    let mut o = opts();
    o.managed_replicas
        .insert("TRACKED".into(), regions(&["eu-west-1"]));
    let all = names_to_describe(&sp, &d, &a.secrets, &o, DescribeReplicas::All);
    assert_eq!(all, ["OURS", "TRACKED"]);
    let untracked = names_to_describe(&sp, &d, &a.secrets, &o, DescribeReplicas::Untracked);
    assert_eq!(untracked, ["OURS"]);
    o.adopt_existing = true;
    let adopt = names_to_describe(&sp, &d, &a.secrets, &o, DescribeReplicas::All);
    assert_eq!(adopt, ["LOOSE", "OURS", "TRACKED"]);
    // A sync that neither configures nor tracks replicas describes nothing.
    let none = names_to_describe(&spec(), &d, &a.secrets, &opts(), DescribeReplicas::All);
    assert!(none.is_empty());
}

#[test]
fn an_empty_value_is_a_skip_that_neither_writes_nor_deletes() {
    let mut d = desired_one(&[("B", "2")]);
    d.skipped.push(crate::reconcile::desired::SkippedKey {
        key: "A".into(),
        name: "A".into(),
    });
    // "A" exists and is ours, with an older value: it stays as it is.
    let a = actual(&[
        ("A", Owner::Us, false, Some("old")),
        ("B", Owner::Us, false, Some("2")),
    ]);
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Skip, "A".to_string())]);
    assert_eq!(
        states(&p),
        vec![("A".into(), S::Skipped), ("B".into(), S::Synced)]
    );
    assert!(p.actions.iter().all(|a| a.op == Op::None));
    assert!(p.guard_tripped.is_none());
    // Not in AWS at all: still nothing is created.
    let a = actual(&[("B", Owner::Us, false, Some("2"))]);
    let p = plan(&spec(), &d, &a, &opts());
    assert_eq!(kinds(&p), vec![(K::Skip, "A".to_string())]);
}

#[test]
fn another_install_with_our_identity_is_a_conflict_until_taken_over() {
    let mine = Some("aaaaaaaaaaaaaaaa".to_string());
    let theirs = |name: &str| {
        let mut r = remote(name, Owner::Us, false);
        r.tags
            .insert(naming::TAG_INSTALL.into(), "bbbbbbbbbbbbbbbb".into());
        r
    };
    let mut a = Actual::default();
    // K0 is in the files with another value; K9 left the files.
    a.secrets.insert("K0".into(), theirs("K0"));
    a.values
        .insert("K0".into(), Ok(Some(SecretValue::new("theirs"))));
    a.secrets.insert("K9".into(), theirs("K9"));
    let d = desired_one(&[("K0", "mine")]);
    let o = PlanOptions {
        install_id: mine.clone(),
        allow_deletes: true,
        ..opts()
    };
    let p = plan(&spec(), &d, &a, &o);
    assert_eq!(
        kinds(&p),
        vec![
            (K::Conflict, "K0".to_string()),
            (K::Conflict, "K9".to_string())
        ]
    );
    assert_eq!(p.collisions, 2);
    assert!(p.actions[0].reason.contains("identity collision"));
    assert!(p.actions.iter().all(|a| a.op == Op::None));

    // Taken over on purpose: written, tagged with our install, orphan deleted.
    let o = PlanOptions {
        take_over: true,
        ..o
    };
    let p = plan(&spec(), &d, &a, &o);
    let k: Vec<K> = p.actions.iter().map(|a| a.kind).collect();
    assert!(
        k.contains(&K::Update) && k.contains(&K::Tag) && k.contains(&K::Delete),
        "{k:?}"
    );
    assert_eq!(p.collisions, 0);

    // A create carries our install id.
    let p = plan(
        &spec(),
        &desired_one(&[("NEW", "v")]),
        &Actual::default(),
        &o,
    );
    let Op::Create(req) = &p.actions[0].op else {
        panic!("not a create")
    };
    assert_eq!(req.tags.get(naming::TAG_INSTALL), mine.as_ref());
}

#[test]
fn the_deletion_guard_holds_over_its_window() {
    // The walk from the field: 100 keys cut to 60, 36, 22, 13, 8, 5, 3.
    let mut state = crate::reconcile::state::SyncState::default();
    let mut now = 1_000_000;
    let mut owned: Vec<String> = (0..100).map(|i| format!("K{i:03}")).collect();
    let mut tripped_at = None;
    for (step, keep) in [60usize, 36, 22, 13, 8, 5, 3].into_iter().enumerate() {
        let mut a = Actual::default();
        for name in &owned {
            a.secrets
                .insert(name.clone(), remote(name, Owner::Us, false));
            a.values
                .insert(name.clone(), Ok(Some(SecretValue::new("v"))));
        }
        let pairs: Vec<(&str, &str)> = owned[..keep].iter().map(|n| (n.as_str(), "v")).collect();
        let d = desired_one(&pairs);
        let (window_deleted, window_owned_peak) = state.guard_totals(now);
        let o = PlanOptions {
            window_deleted,
            window_owned_peak,
            ..opts()
        };
        let p = plan(&spec(), &d, &a, &o);
        if p.guard_tripped.is_some() {
            tripped_at = Some(step);
            assert!(p.actions.iter().all(|a| a.kind != K::Delete));
            break;
        }
        let deleted = p.actions.iter().filter(|a| a.kind == K::Delete).count();
        state.record_guard(now, p.owned_live, deleted, 0, false);
        owned.truncate(keep);
        now += 60;
    }
    // 100 -> 60 passes (40 of 100); 60 -> 36 would make 64 of 100 in an hour.
    assert_eq!(tripped_at, Some(1));

    // An hour later the window is empty again, and --allow-deletes starts it
    // afresh.
    assert_eq!(state.guard_totals(now + 3600), (0, 0));
    state.record_guard(now, 60, 24, 0, true);
    assert_eq!(state.guard_totals(now), (0, 36));
    // A deletion undone by a restore no longer counts.
    state.record_guard(now + 1, 36, 2, 0, false);
    state.record_guard(now + 2, 36, 0, 2, false);
    assert_eq!(state.guard_totals(now + 3).0, 0);
}

#[test]
fn a_secret_from_before_install_ids_gets_the_tag_only_with_another_write() {
    let o = PlanOptions {
        install_id: Some("aaaaaaaaaaaaaaaa".into()),
        ..opts()
    };
    // In step: no call at all (an agent starting on such secrets writes nothing).
    let a = actual(&[("K", Owner::Us, false, Some("v"))]);
    let p = plan(&spec(), &desired_one(&[("K", "v")]), &a, &o);
    assert!(p.actions.is_empty(), "{:?}", kinds(&p));
    // A value change also claims it for this install.
    let p = plan(&spec(), &desired_one(&[("K", "new")]), &a, &o);
    assert_eq!(
        kinds(&p),
        vec![(K::Update, "K".to_string()), (K::Tag, "K".to_string())]
    );
    let Op::Tag { set, .. } = &p.actions[1].op else {
        panic!("not a tag op")
    };
    assert_eq!(
        set.get(naming::TAG_INSTALL).map(String::as_str),
        Some("aaaaaaaaaaaaaaaa")
    );
}
