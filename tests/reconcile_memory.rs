//! Engine tests: `reconcile::run_pass` (and `apply::apply`) against the
//! in-memory store, which behaves like AWS Secrets Manager where moto does
//! not (pending-deletion rules, limits, per-page/per-batch call counts).
//!
//! Every test asserts on what the store holds afterwards (values, tags,
//! versions) and on which calls were made, not only on the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secretsync::naming::{TAG_AGENT, TAG_SYNC};
use secretsync::reconcile::apply;
use secretsync::reconcile::desired::{MappingKind, MappingSpec};
use secretsync::reconcile::plan::{ActionKind, Op, PlanOptions, SecretState};
use secretsync::reconcile::report::{SecretView, SyncStatus};
use secretsync::reconcile::state::SyncState;
use secretsync::reconcile::{self, Listing, Mode, PassResult, SyncJob};
use secretsync::secret::SecretValue;
use secretsync::store::memory::{
    MemoryStore, OP_BATCH_GET, OP_CREATE, OP_DELETE, OP_DESCRIBE, OP_DESCRIBE_KEY, OP_LIST, OP_PUT,
    OP_RESTORE, OP_TAG, OP_UNTAG, OP_UPDATE,
};
use secretsync::store::{Connection, RemoteSecret, StoreError};

const AGENT: &str = "web-01";
const SYNC: &str = "app";

// ---------------------------------------------------------------- helpers

/// Builds a [`SyncJob`] the way `SyncJob::from_config` would for a one-to-one
/// sync `app` of agent `web-01`, environment `prod`, names `prod/<KEY>`,
/// configured tag `team=pay`.
struct JobBuilder {
    job: SyncJob,
}

impl JobBuilder {
    fn new() -> Self {
        let spec = MappingSpec {
            sync_name: SYNC.into(),
            agent_id: AGENT.into(),
            environment: Some("prod".into()),
            mapping: MappingKind::OneToOne,
            key_schema: "{{environment}}/{{secretKey}}".into(),
            secret_name: None,
            include: vec![glob::Pattern::new("*").expect("glob")],
            exclude: vec![],
            tags: BTreeMap::from([("team".into(), "pay".into())]),
            metadata_as_tags: false,
            kms_key_id: None,
            description: None,
            replica_regions: vec![],
        };
        let job = SyncJob {
            spec,
            region: "us-east-1".into(),
            connection: Connection {
                region: "us-east-1".into(),
                profile: None,
                role_arn: None,
                external_id: None,
                endpoint_url: None,
                max_write_tps: 20,
                max_read_tps: 50,
                call_timeout: Duration::from_secs(10),
            },
            files: vec![],
            format: None,
            expand: false,
            max_file_size: 1024 * 1024,
            options: PlanOptions::default(),
            import: None,
            known: Default::default(),
            kms_writes: Default::default(),
            listing: Default::default(),
            state_unwritable: None,
            import_held: None,
            enabled: true,
            describe_replicas: secretsync::reconcile::plan::DescribeReplicas::Untracked,
        };
        Self { job }
    }

    fn tags(mut self, tags: &[(&str, &str)]) -> Self {
        self.job.spec.tags = tags
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        self
    }

    fn metadata_as_tags(mut self) -> Self {
        self.job.spec.metadata_as_tags = true;
        self
    }

    fn adopt_existing(mut self) -> Self {
        self.job.options.adopt_existing = true;
        self
    }

    fn disable_deletion(mut self) -> Self {
        self.job.options.disable_deletion = true;
        self
    }

    fn kms(mut self, key: &str) -> Self {
        self.job.spec.kms_key_id = Some(key.into());
        self
    }

    fn many_to_one(mut self, secret_name: &str) -> Self {
        self.job.spec.mapping = MappingKind::ManyToOne;
        self.job.spec.secret_name = Some(secret_name.into());
        self
    }
}

/// A sync with its source files in a tempdir, a memory store and the state
/// the one-shot `sync` command would keep between passes.
struct Harness {
    dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    job: SyncJob,
    state: SyncState,
}

impl Harness {
    /// `files` are written in order and become the job's source list.
    fn new(builder: JobBuilder, files: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut job = builder.job;
        job.files = files
            .iter()
            .map(|(name, _)| dir.path().join(name).display().to_string())
            .collect();
        let h = Self {
            dir,
            store: Arc::new(MemoryStore::new()),
            job,
            state: SyncState::default(),
        };
        for (name, body) in files {
            h.write(name, body);
        }
        h
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn write(&self, file: &str, body: &str) {
        std::fs::write(self.path(file), body).expect("write source");
    }

    async fn pass(&mut self) -> PassResult {
        self.run(Mode::Apply, false).await
    }

    /// One pass, then the state update the one-shot `sync` command makes.
    async fn run(&mut self, mode: Mode, allow_deletes: bool) -> PassResult {
        let pass = reconcile::run_pass(
            Arc::clone(&self.store),
            &self.job,
            mode,
            allow_deletes,
            &self.state,
        )
        .await;
        if let (Some(plan), Some(applied)) = (&pass.plan, &pass.applied) {
            reconcile::record_state(&mut self.state, plan, applied);
        }
        pass
    }

    /// Current value in the store, as plain text.
    fn value(&self, name: &str) -> String {
        let (_, v) = self
            .store
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in store"));
        v.unwrap_or_else(|| panic!("{name} has no value"))
            .expose()
            .to_string()
    }

    fn meta(&self, name: &str) -> RemoteSecret {
        self.store
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in store"))
            .0
    }

    fn call(&self, op: &str) -> u64 {
        self.store.calls().get(op).copied().unwrap_or(0)
    }
}

fn secret<'a>(pass: &'a PassResult, name: &str) -> &'a SecretView {
    pass.report
        .secrets
        .as_ref()
        .expect("apply pass has secrets[]")
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} not in report: {:#?}", pass.report.secrets))
}

fn state(pass: &PassResult, name: &str) -> SecretState {
    secret(pass, name).state
}

fn message(pass: &PassResult, name: &str) -> String {
    secret(pass, name).message.clone().unwrap_or_default()
}

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// Ownership tags of this agent and sync, plus `extra`.
fn owned(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut t = tags(&[(TAG_AGENT, AGENT), (TAG_SYNC, SYNC)]);
    t.extend(tags(extra));
    t
}

fn seed(store: &MemoryStore, name: &str, tags: BTreeMap<String, String>, value: &str) {
    store.insert(
        RemoteSecret {
            name: name.into(),
            tags,
            description: Some("theirs".into()),
            ..Default::default()
        },
        Some(SecretValue::new(value)),
    );
}

fn throttled() -> StoreError {
    StoreError::Throttled {
        op: "x",
        message: "Rate exceeded".into(),
    }
}

fn unavailable() -> StoreError {
    StoreError::Unavailable {
        op: "x",
        message: "503 Service Unavailable".into(),
    }
}

fn assert_synced(pass: &PassResult) {
    assert_eq!(
        pass.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        pass.report.last_sync_message
    );
    assert!(!pass.transient);
}

// ------------------------------------------------------- no-op and updates

#[tokio::test]
async fn create_then_unchanged_is_zero_writes_then_one_put_per_changed_key() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\nC=3\n")]);

    let first = h.pass().await;
    assert_synced(&first);
    assert_eq!(h.call(OP_CREATE), 3);
    assert_eq!(h.store.write_calls(), 3);
    for (name, v) in [("prod/A", "1"), ("prod/B", "2"), ("prod/C", "3")] {
        assert_eq!(h.value(name), v);
        assert_eq!(h.meta(name).tags, owned(&[("team", "pay")]));
        assert_eq!(state(&first, name), SecretState::Synced);
        assert_eq!(
            secret(&first, name).version_id,
            h.meta(name).current_version,
            "report carries the version AWS assigned"
        );
    }

    // Saving the file unchanged (same bytes, new mtime) makes zero writes.
    h.write("app.env", "A=1\nB=2\nC=3\n");
    h.store.reset_calls();
    let second = h.pass().await;
    assert_synced(&second);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    assert_eq!(second.report.counts.unchanged, 3);

    // One changed key: exactly one PutSecretValue, nothing else.
    h.write("app.env", "A=1\nB=two\nC=3\n");
    h.store.reset_calls();
    let third = h.pass().await;
    assert_synced(&third);
    assert_eq!(h.call(OP_PUT), 1);
    assert_eq!(h.store.write_calls(), 1, "{:?}", h.store.calls());
    assert_eq!(h.value("prod/B"), "two");
    assert_eq!(h.store.versions("prod/B").len(), 2);
    assert_eq!(h.store.versions("prod/A").len(), 1);

    // Going back to the earlier value still writes (v1 → v2 → v1).
    h.write("app.env", "A=1\nB=2\nC=3\n");
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_PUT), 1);
    assert_eq!(h.value("prod/B"), "2");
    let versions = h.store.versions("prod/B");
    assert_eq!(versions.len(), 3);
    assert_eq!(versions.iter().collect::<BTreeSet<_>>().len(), 3);
}

#[tokio::test]
async fn values_known_from_earlier_passes_are_not_read_again() {
    let body: String = (0..100).map(|i| format!("K{i:03}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_CREATE), 100);

    // Nothing changed: one listing page, no value read, no write.
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_BATCH_GET), 0, "{:?}", h.store.calls());
    assert_eq!(h.call(OP_LIST), 1);
    assert_eq!(h.store.write_calls(), 0);

    // One key edited: its current version is one we wrote, so it is known
    // to differ without a read: one listing page and one put.
    h.write("app.env", &body.replace("K007=v7\n", "K007=seven\n"));
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(
        h.store.calls(),
        BTreeMap::from([(OP_LIST, 1), (OP_PUT, 1)]),
        "a one-key edit costs one page of listing and one write"
    );
    assert_eq!(h.value("prod/K007"), "seven");

    // Someone else writes a new version: that one secret is read again and
    // repaired; the other 99 are still known.
    let (mut meta, _) = h.store.get("prod/K042").expect("exists");
    meta.current_version = None;
    h.store
        .insert(meta, Some(SecretValue::new("changed elsewhere")));
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_BATCH_GET), 1, "{:?}", h.store.calls());
    assert_eq!(h.call(OP_PUT), 1);
    assert_eq!(h.value("prod/K042"), "v42");

    // A failed write is forgotten: the next pass reads that value again
    // before writing, instead of trusting what it hoped to have written.
    h.write("app.env", &body.replace("K009=v9\n", "K009=nine\n"));
    h.store.fail_next(OP_PUT, unavailable(), 1);
    assert!(h.pass().await.transient);
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.value("prod/K009"), "nine");
    assert_eq!(h.call(OP_PUT), 1, "{:?}", h.store.calls());
}

#[tokio::test]
async fn event_passes_describe_only_what_they_write() {
    let body: String = (0..100).map(|i| format!("K{i:03}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    assert_synced(&h.pass().await);
    h.job.listing = Listing::Changed;

    // The listing taken before the creates is stale: the next pass lists.
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.calls(), BTreeMap::from([(OP_LIST, 1)]));

    // Same names as the last full listing, nothing changed: no call at all.
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.calls(), BTreeMap::new());

    // One key edited: that one secret is described again, then written.
    let edited = body.replace("K007=v7\n", "K007=seven\n");
    h.write("app.env", &edited);
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(
        h.store.calls(),
        BTreeMap::from([(OP_DESCRIBE, 1), (OP_PUT, 1)])
    );
    assert_eq!(h.value("prod/K007"), "seven");

    // Another agent takes over the secret we are about to write: the
    // re-check sees it, the pass falls back to a full listing, CONFLICT,
    // no write.
    let (mut meta, _) = h.store.get("prod/K008").expect("exists");
    meta.tags.insert(TAG_AGENT.into(), "someone-else".into());
    let (_, value) = h.store.get("prod/K008").expect("exists");
    h.store.insert(meta, value);
    h.write("app.env", &edited.replace("K008=v8\n", "K008=eight\n"));
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(state(&pass, "prod/K008"), SecretState::Conflict);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    // The full listing (ours only) and a lookup of the name that left it.
    assert_eq!(h.call(OP_LIST), 2, "fell back to the full listing");
    assert_eq!(h.value("prod/K008"), "v8");

    // A new key means a create: full listing (names differ: one page by
    // tag, one lookup of the new name), then the create.
    h.write("app.env", &format!("{edited}NEW=n\n"));
    h.store.reset_calls();
    h.pass().await;
    assert_eq!(h.call(OP_LIST), 2);
    assert_eq!(h.call(OP_CREATE), 1);
}

#[tokio::test]
async fn event_passes_stay_narrow_while_a_deleted_secret_waits_out_its_window() {
    let body: String = (0..20).map(|i| format!("K{i:03}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    assert_synced(&h.pass().await);
    h.job.listing = Listing::Changed;
    // A removed key is deleted (full listing); afterwards the secret waits
    // out its recovery window in the listing, and edits are narrow again.
    let without_k009 = body.replace("K009=v9\n", "");
    h.write("app.env", &without_k009);
    h.pass().await;
    assert!(h.store.get("prod/K009").expect("kept").0.pending_deletion);
    h.pass().await; // lists again after the delete
    h.write("app.env", &without_k009.replace("K010=v10\n", "K010=ten\n"));
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(
        h.store.calls(),
        BTreeMap::from([(OP_DESCRIBE, 1), (OP_PUT, 1)])
    );
    assert_eq!(state(&pass, "prod/K009"), SecretState::Deleted);
    // The key comes back: not a live secret of ours, so a full listing
    // and a restore.
    h.write("app.env", &body.replace("K010=v10\n", "K010=ten\n"));
    h.store.reset_calls();
    h.pass().await;
    assert_eq!(h.call(OP_RESTORE), 1);
    assert!(h.call(OP_LIST) >= 1);
}

#[tokio::test]
async fn event_passes_recheck_a_secret_before_changing_only_its_tags() {
    let yaml = |owner: &str| format!("A: {{value: a, metadata: {{owner: {owner}}}}}\nB: b\n");
    let mut h = Harness::new(
        JobBuilder::new().metadata_as_tags(),
        &[("s.yaml", &yaml("alice"))],
    );
    assert_synced(&h.pass().await);
    h.job.listing = Listing::Changed;
    assert_synced(&h.pass().await); // lists again after the creates
    // Only the metadata of A changes: its value is known to be equal, but
    // its tags will be written, so it is described first.
    h.write("s.yaml", &yaml("bob"));
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(
        h.store.calls(),
        BTreeMap::from([(OP_DESCRIBE, 1), (OP_TAG, 1)])
    );
    assert_eq!(
        h.meta("prod/A").tags.get("owner").map(String::as_str),
        Some("bob")
    );
}

#[tokio::test]
async fn many_to_one_json_is_compared_semantically() {
    let mut h = Harness::new(
        JobBuilder::new().many_to_one("{{environment}}/{{syncName}}"),
        &[("app.env", "B=2\nA=1\n")],
    );
    assert_synced(&h.pass().await);
    assert_eq!(h.value("prod/app"), r#"{"A":"1","B":"2"}"#);

    // Someone rewrites the same object with other key order and whitespace.
    let meta = h.meta("prod/app");
    h.store.insert(
        meta,
        Some(SecretValue::new("{ \"B\": \"2\",\n  \"A\": \"1\" }")),
    );
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
}

#[tokio::test]
async fn reading_1000_owned_secrets_is_paged_and_batched() {
    let body: String = (0..1000).map(|i| format!("K{i:04}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("big.env", &body)]);
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_CREATE), 1000);

    // As after a restart: nothing known, every value is read.
    h.job.known = Default::default();
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_synced(&pass);
    assert_eq!(pass.report.counts.unchanged, 1000);
    assert_eq!(h.store.write_calls(), 0);
    let (lists, batches) = (h.call(OP_LIST), h.call(OP_BATCH_GET));
    assert!(lists <= 10, "{lists} ListSecrets pages");
    assert!(batches <= 50, "{batches} BatchGetSecretValue calls");
    assert!(lists >= 1 && batches >= 1, "the pass did read AWS");
}

/// The issue-16 goal: a first sync costs at most 1.01 calls per key. Names
/// not owned yet are found by one listing of their common prefix, not one
/// lookup per 10 names; a foreign secret under the prefix is still seen.
#[tokio::test]
async fn first_sync_of_1000_keys_lists_the_prefix_once() {
    let body: String = (0..1000).map(|i| format!("K{i:04}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("big.env", &body)]);
    seed(&h.store, "prod/K0007", tags(&[("team", "other")]), "theirs");
    seed(&h.store, "prod-other/K0001", tags(&[]), "elsewhere");
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(pass.report.counts.create, 999, "{:?}", pass.report.counts);
    assert_eq!(state(&pass, "prod/K0007"), SecretState::Conflict);
    let total: u64 = h.store.calls().values().sum();
    // One listing by tag, one by the names' prefix, 999 creates.
    assert_eq!(h.call(OP_LIST), 2, "{:?}", h.store.calls());
    assert!(
        total as f64 / 1000.0 <= 1.01,
        "{total} calls for 1,000 keys"
    );
    assert_eq!(h.value("prod-other/K0001"), "elsewhere");
}

/// A fleet runs the same sync name on every host. The first listing (by
/// the sync's name) stops after two pages of the neighbours' 500 secrets
/// and lists by the agent's id; from then on only that: one page.
#[tokio::test]
async fn listing_switches_to_the_agent_id_in_a_fleet_with_one_sync_name() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\n")]);
    for i in 0..500 {
        let mut t = owned(&[]);
        t.insert(TAG_AGENT.into(), "web-02".into());
        seed(&h.store, &format!("web-02/K{i:03}"), t, "theirs");
    }
    assert_synced(&h.pass().await);
    assert_eq!(
        h.call(OP_LIST),
        4,
        "2 capped pages by sync name, 1 by agent id, 1 prefix lookup"
    );
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(
        h.store.calls(),
        BTreeMap::from([(OP_LIST, 1)]),
        "one page of our own two secrets"
    );
}

/// A host with several syncs keeps listing by sync name: by its id it
/// would page through all of its syncs' secrets for each one.
#[tokio::test]
async fn listing_stays_by_sync_name_on_a_host_with_many_syncs() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\n")]);
    for i in 0..300 {
        seed(
            &h.store,
            &format!("other/K{i:03}"),
            owned(&[])
                .into_iter()
                .map(|(k, v)| {
                    if k == TAG_SYNC {
                        (k, "billing".to_string())
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            "x",
        );
    }
    assert_synced(&h.pass().await);
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.calls(), BTreeMap::from([(OP_LIST, 1)]));
}

/// A prefix shared with many foreign secrets (the names' common prefix is
/// `prod/K00`): the capped listing gives up after half the lookups' cost
/// and the names are looked up 10 per call.
#[tokio::test]
async fn first_sync_falls_back_to_lookups_when_the_prefix_is_crowded() {
    let body: String = (0..100).map(|i| format!("K{i:04}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    for i in 0..1000 {
        seed(&h.store, &format!("prod/K00-other-{i:04}"), tags(&[]), "x");
    }
    seed(&h.store, "prod/K0042", tags(&[]), "theirs");
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(state(&pass, "prod/K0042"), SecretState::Conflict);
    assert_eq!(pass.report.counts.create, 99);
    // 1 by tag + 5 capped prefix pages (half of 10 lookups) + 10 lookups.
    assert_eq!(h.call(OP_LIST), 16, "{:?}", h.store.calls());
}

// --------------------------------------------------- transient failures

/// A throttled failure or two do not stop a pass (the store's pacer slows
/// the rest down); after [`apply::THROTTLED_FAILURES_MAX`] the account's
/// quota is clearly spent (other hosts share it): the rest of the pass is
/// not sent, those secrets are PENDING and the next pass sends them.
#[tokio::test]
async fn a_throttled_pass_stops_sending_and_the_next_one_finishes() {
    let body: String = (0..100).map(|i| format!("K{i:03}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    h.store.fail_next(OP_CREATE, throttled(), 1);
    let pass = h.pass().await;
    assert!(pass.transient && pass.throttled);
    assert_eq!(
        h.call(OP_CREATE),
        100,
        "one throttled failure: the pass went on"
    );
    assert_eq!(h.store.names().len(), 99);
    assert_synced(&h.pass().await);

    let body: String = (0..100).map(|i| format!("K{i:03}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    let limit = apply::THROTTLED_FAILURES_MAX as u64;
    h.store.fail_next(OP_CREATE, throttled(), limit as u32);
    let pass = h.pass().await;
    assert!(pass.transient && pass.throttled);
    let creates = h.call(OP_CREATE);
    assert!(
        creates <= limit + apply::DEFAULT_CONCURRENCY as u64,
        "{creates} creates after {limit} throttled failures"
    );
    let views = pass.report.secrets.as_ref().expect("secrets");
    let not_sent = views
        .iter()
        .filter(|s| s.message.as_deref() == Some("not sent: AWS throttled this pass; will retry"))
        .count();
    assert!(not_sent >= 100 - creates as usize, "{not_sent} not sent");
    assert!(
        views
            .iter()
            .all(|s| matches!(s.state, SecretState::Synced | SecretState::Pending))
    );
    assert_synced(&h.pass().await);
    assert_eq!(h.store.names().len(), 100);
}

#[tokio::test]
async fn transient_put_failure_is_pending_then_converges_without_duplicate_versions() {
    for err in [throttled(), unavailable()] {
        let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\n")]);
        assert_synced(&h.pass().await);
        h.write("app.env", "A=10\nB=20\n");

        h.store.fail_next(OP_PUT, err.clone(), 1);
        let failed = h.pass().await;
        assert!(failed.transient, "{err}");
        assert_eq!(failed.report.sync_status, SyncStatus::Pending);
        let msg = failed.report.last_sync_message.clone().unwrap_or_default();
        assert!(msg.contains("will retry"), "{msg}");
        let pending: Vec<&SecretView> = failed
            .report
            .secrets
            .iter()
            .flatten()
            .filter(|s| s.state == SecretState::Pending)
            .collect();
        assert_eq!(pending.len(), 1, "{:#?}", failed.report.secrets);
        let name = pending[0].name.clone();
        let other = if name == "prod/A" { "prod/B" } else { "prod/A" };
        assert!(
            pending[0]
                .message
                .as_deref()
                .unwrap_or("")
                .contains("PutSecretValue"),
            "{:?}",
            pending[0].message
        );
        assert_eq!(state(&failed, other), SecretState::Synced);
        assert_eq!(h.store.versions(&name).len(), 1, "failed put wrote nothing");
        let token = failed
            .plan
            .as_ref()
            .expect("plan")
            .actions
            .iter()
            .find_map(|a| match &a.op {
                Op::PutValue { token, .. } if a.name == name => Some(token.clone()),
                _ => None,
            })
            .expect("put planned");

        h.store.reset_calls();
        let retry = h.pass().await;
        assert_synced(&retry);
        assert_eq!(h.call(OP_PUT), 1, "only the pending secret is written");
        assert_eq!(h.value("prod/A"), "10");
        assert_eq!(h.value("prod/B"), "20");
        let versions = h.store.versions(&name);
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(versions[1], token, "the retry reused the token");
        assert_eq!(secret(&retry, &name).version_id.as_ref(), Some(&token));

        h.store.reset_calls();
        assert_synced(&h.pass().await);
        assert_eq!(h.store.write_calls(), 0);
    }
}

#[tokio::test]
async fn retrying_a_plan_whose_writes_landed_creates_no_second_version() {
    // A write whose response was lost is retried with the same plan: the
    // tokens make the retry a no-op in AWS.
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\n")]);
    let created = h.run(Mode::Plan, false).await;
    let plan = created.plan.expect("plan");
    for _ in 0..2 {
        let applied = apply::apply(Arc::clone(&h.store), &plan, 4).await;
        assert!(
            applied.outcomes.iter().all(|o| *o == apply::Outcome::Ok),
            "{:?}",
            applied.outcomes
        );
    }
    assert_eq!(h.call(OP_CREATE), 2);
    assert_eq!(h.store.versions("prod/A").len(), 1);

    h.write("app.env", "A=2\n");
    let update = h.run(Mode::Plan, false).await;
    let plan = update.plan.expect("plan");
    assert_eq!(plan.count(ActionKind::Update), 1);
    for _ in 0..3 {
        let applied = apply::apply(Arc::clone(&h.store), &plan, 4).await;
        assert_eq!(applied.secrets[0].state, SecretState::Synced);
    }
    assert_eq!(h.call(OP_PUT), 3);
    assert_eq!(h.store.versions("prod/A").len(), 2);
    assert_eq!(h.value("prod/A"), "2");
}

#[tokio::test]
async fn outage_while_reading_makes_no_writes_and_says_aws_unavailable() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\n")]);
    assert_synced(&h.pass().await);
    h.write("app.env", "A=changed\nC=new\n");

    // Whole outage: the very first listing fails.
    h.store.fail_all(unavailable());
    h.store.reset_calls();
    let down = h.pass().await;
    assert!(down.transient);
    assert_eq!(down.report.sync_status, SyncStatus::Pending);
    let msg = down.report.last_sync_message.clone().unwrap_or_default();
    assert!(msg.contains("AWS unavailable"), "{msg}");
    assert!(down.plan.is_none() && down.applied.is_none());
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    h.store.heal();

    // Value reads fail after the listing worked (as after a restart, when
    // no value is known): still nothing written.
    h.job.known = Default::default();
    h.store.fail_next(OP_BATCH_GET, unavailable(), 1);
    h.store.reset_calls();
    let half = h.pass().await;
    assert!(half.transient);
    assert_eq!(half.report.sync_status, SyncStatus::Pending);
    assert!(
        half.report
            .last_sync_message
            .as_deref()
            .unwrap_or("")
            .contains("AWS unavailable")
    );
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    assert_eq!(h.value("prod/A"), "1");
    assert!(h.store.get("prod/C").is_none());

    // Nothing is lost: the next pass does everything, and B is deleted
    // only now that the sources are read and AWS answers.
    let up = h.pass().await;
    assert_synced(&up);
    assert_eq!(h.value("prod/A"), "changed");
    assert_eq!(h.value("prod/C"), "new");
    assert!(h.meta("prod/B").pending_deletion);
}

#[tokio::test(start_paused = true)]
async fn outage_in_the_middle_of_apply_loses_no_edit() {
    // 40 new keys, 32 worked on at once (apply's default), 50 ms per call:
    // AWS goes down once the first 32 creates are done.
    let body: String = (0..40).map(|i| format!("K{i:02}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", &body)]);
    h.store.set_latency(Duration::from_millis(50));
    let store = Arc::clone(&h.store);
    let (job, st) = (h.job.clone(), h.state.clone());
    let pass =
        tokio::spawn(
            async move { reconcile::run_pass(store, &job, Mode::Apply, false, &st).await },
        );
    while h.call(OP_CREATE) <= 32 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    h.store.fail_all(unavailable());
    let cut = pass.await.expect("join");
    assert!(cut.transient);
    assert_eq!(cut.report.sync_status, SyncStatus::Pending);
    let states: Vec<SecretState> = cut
        .report
        .secrets
        .iter()
        .flatten()
        .map(|s| s.state)
        .collect();
    let synced = states.iter().filter(|s| **s == SecretState::Synced).count();
    let pending = states
        .iter()
        .filter(|s| **s == SecretState::Pending)
        .count();
    assert_eq!((synced, pending), (32, 8), "{states:?}");
    assert_eq!(h.store.names().len(), 32);

    h.store.heal();
    h.store.set_latency(Duration::ZERO);
    h.store.reset_calls();
    let resumed = h.pass().await;
    assert_synced(&resumed);
    assert_eq!(h.call(OP_CREATE), 8);
    assert_eq!(h.store.write_calls(), 8);
    for i in 0..40 {
        let name = format!("prod/K{i:02}");
        assert_eq!(h.value(&name), format!("v{i}"));
        assert_eq!(h.store.versions(&name).len(), 1, "{name}");
    }
}

// ------------------------------------------------------------ AWS limits

#[tokio::test]
async fn aws_limits_put_only_the_offending_keys_in_error_before_any_call() {
    let max = "x".repeat(65_536);
    let over = "x".repeat(65_537);
    let wide = "é".repeat(32_769); // 32,769 characters, 65,538 bytes
    let long_key = format!("K{}", "k".repeat(515)); // "prod/" + 516 > 512
    let meta = |n: usize| -> String {
        let pairs: Vec<String> = (0..n).map(|i| format!("m{i}: v")).collect();
        format!("{{value: t, metadata: {{{}}}}}", pairs.join(", "))
    };
    // 2 ownership + team + 47 metadata = 50 tags: fine; 48 is one too many.
    let yaml = format!(
        "OK: fine\nMAX: {max}\nBIG: {over}\n\"bad key!\": v\n{long_key}: v\n\
         WIDE: {wide}\nFIFTY: {}\nFIFTYONE: {}\nAWSTAG: {{value: t, metadata: {{\"aws:owner\": x}}}}\n\
         LONGTAG: {{value: t, metadata: {{k: {}}}}}\n",
        meta(47),
        meta(48),
        "v".repeat(257)
    );
    let mut h = Harness::new(JobBuilder::new().metadata_as_tags(), &[("s.yaml", &yaml)]);
    // BIG used to be small and is owned: it must neither be written nor deleted.
    seed(&h.store, "prod/BIG", owned(&[("team", "pay")]), "old");

    let pass = h.pass().await;
    assert_eq!(pass.report.sync_status, SyncStatus::Failed);
    assert!(!pass.transient);
    let created: BTreeSet<String> = ["prod/FIFTY", "prod/MAX", "prod/OK"]
        .map(String::from)
        .into();
    assert_eq!(h.call(OP_CREATE), 3, "{:?}", h.store.calls());
    assert_eq!(h.call(OP_PUT) + h.call(OP_TAG) + h.call(OP_DELETE), 0);
    let names: BTreeSet<String> = h.store.names().into_iter().collect();
    let mut expected = created.clone();
    expected.insert("prod/BIG".into());
    assert_eq!(names, expected);
    assert_eq!(h.value("prod/MAX").len(), 65_536);
    assert_eq!(h.meta("prod/FIFTY").tags.len(), 50);
    assert_eq!(h.value("prod/BIG"), "old");
    assert!(!h.meta("prod/BIG").pending_deletion);

    let errors: BTreeMap<String, String> = pass
        .report
        .secrets
        .iter()
        .flatten()
        .filter(|s| s.state == SecretState::Error)
        .map(|s| {
            (
                s.key.clone().unwrap_or_default(),
                s.message.clone().unwrap_or_default(),
            )
        })
        .collect();
    let keys: BTreeSet<&str> = errors.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "AWSTAG",
            "BIG",
            "FIFTYONE",
            "WIDE",
            "LONGTAG",
            "bad key!",
            long_key.as_str()
        ]),
        "{errors:#?}"
    );
    assert!(errors["BIG"].contains("65536"), "{}", errors["BIG"]);
    assert!(errors["WIDE"].contains("65538 bytes"), "{}", errors["WIDE"]);
    assert!(errors["FIFTYONE"].contains("50"), "{}", errors["FIFTYONE"]);
    assert!(errors["AWSTAG"].contains("aws:"), "{}", errors["AWSTAG"]);
    assert!(errors[&long_key].contains("512"), "{}", errors[&long_key]);
    for s in [&over, "xxxxxxxx", "éééé"] {
        assert!(errors.values().all(|m| !m.contains(s)), "value in message");
    }
    for ok in &created {
        assert_eq!(state(&pass, ok), SecretState::Synced);
    }

    // The next pass changes nothing: the errors stay errors, still no calls.
    h.store.reset_calls();
    let again = h.pass().await;
    assert_eq!(again.report.counts.error, 7);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
}

// ---------------------------------------------------------------- restore

#[tokio::test]
async fn key_back_while_pending_deletion_is_restored_then_written() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\nC=3\n")]);
    assert_synced(&h.pass().await);

    h.write("app.env", "A=1\nB=2\n");
    h.store.reset_calls();
    let removed = h.pass().await;
    assert_synced(&removed);
    assert_eq!(h.call(OP_DELETE), 1);
    assert_eq!(state(&removed, "prod/C"), SecretState::Deleted);
    let c = h.meta("prod/C");
    assert!(c.pending_deletion, "scheduled with a window, not forced");
    assert_eq!(c.tags, owned(&[("team", "pay")]));

    h.store.reset_calls();
    let still = h.pass().await;
    assert_eq!(state(&still, "prod/C"), SecretState::Deleted);
    assert_eq!(h.store.write_calls(), 0);

    h.write("app.env", "A=1\nB=2\nC=33\n");
    h.store.reset_calls();
    let back = h.pass().await;
    assert_synced(&back);
    assert_eq!(h.call(OP_RESTORE), 1);
    assert_eq!(h.call(OP_PUT), 1);
    assert_eq!(h.call(OP_CREATE), 0);
    let kinds: Vec<ActionKind> = back
        .plan
        .as_ref()
        .expect("plan")
        .actions
        .iter()
        .filter(|a| a.name == "prod/C")
        .map(|a| a.kind)
        .collect();
    assert_eq!(kinds, [ActionKind::Restore, ActionKind::Update]);
    assert!(!h.meta("prod/C").pending_deletion);
    assert_eq!(h.value("prod/C"), "33");
    assert_eq!(state(&back, "prod/C"), SecretState::Synced);

    // Back with the very value it had: still restored and written.
    h.write("app.env", "A=1\nB=2\n");
    assert_synced(&h.pass().await);
    h.write("app.env", "A=1\nB=2\nC=33\n");
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!((h.call(OP_RESTORE), h.call(OP_PUT)), (1, 1));
    assert!(!h.meta("prod/C").pending_deletion);
    assert_eq!(h.value("prod/C"), "33");
}

// ------------------------------------------------------------ create race

#[tokio::test(start_paused = true)]
async fn create_racing_with_another_writer_is_an_error_then_a_conflict() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=ours\nB=2\n")]);
    h.store.set_latency(Duration::from_millis(100));

    // Run the pass; once its CreateSecret for prod/A is in flight, someone
    // else creates prod/A.
    let store = Arc::clone(&h.store);
    let job = h.job.clone();
    let st = h.state.clone();
    let pass =
        tokio::spawn(
            async move { reconcile::run_pass(store, &job, Mode::Apply, false, &st).await },
        );
    while h.call(OP_CREATE) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let theirs = tags(&[("owner", "bob")]);
    seed(&h.store, "prod/A", theirs.clone(), "their value");
    let raced = pass.await.expect("join");

    assert_eq!(state(&raced, "prod/A"), SecretState::Error);
    let msg = message(&raced, "prod/A");
    assert!(msg.contains("already exists"), "{msg}");
    assert!(!raced.transient);
    assert_eq!(raced.report.sync_status, SyncStatus::Failed);
    assert_eq!(state(&raced, "prod/B"), SecretState::Synced);
    let a = h.meta("prod/A");
    assert_eq!(h.value("prod/A"), "their value");
    assert_eq!(a.tags, theirs);
    assert_eq!(h.store.versions("prod/A").len(), 1);

    h.store.set_latency(Duration::ZERO);
    h.store.reset_calls();
    let next = h.pass().await;
    assert_eq!(state(&next, "prod/A"), SecretState::Conflict);
    assert!(message(&next, "prod/A").contains("adopt_existing"));
    assert_eq!(next.report.sync_status, SyncStatus::Failed);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    assert_eq!(h.value("prod/A"), "their value");
    assert_eq!(h.meta("prod/A").tags, theirs);
}

// ------------------------------------------------- deletion safety rules

#[tokio::test]
async fn deletion_guard_deletes_nothing_until_allowed() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=1\nB=2\nC=3\nD=4\n")]);
    assert_synced(&h.pass().await);

    h.write("app.env", "A=1\n");
    h.store.reset_calls();
    let guarded = h.pass().await;
    assert_eq!(guarded.report.sync_status, SyncStatus::Failed);
    let msg = guarded.report.last_sync_message.clone().unwrap_or_default();
    assert!(
        msg.contains("deletion guard") && msg.contains("3 of 4"),
        "{msg}"
    );
    assert_eq!(h.store.write_calls(), 0);
    for (name, v) in [("prod/B", "2"), ("prod/C", "3"), ("prod/D", "4")] {
        assert_eq!(state(&guarded, name), SecretState::Retained);
        assert!(!h.meta(name).pending_deletion);
        assert_eq!(h.value(name), v);
    }

    let allowed = h.run(Mode::Apply, true).await;
    assert_synced(&allowed);
    assert_eq!(h.call(OP_DELETE), 3);
    for name in ["prod/B", "prod/C", "prod/D"] {
        assert!(h.meta(name).pending_deletion, "{name}");
    }
    assert!(!h.meta("prod/A").pending_deletion);
}

#[tokio::test]
async fn adopt_existing_takes_over_same_named_secrets_only() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=new\n")]);
    seed(&h.store, "prod/A", tags(&[("owner", "bob")]), "old");
    seed(&h.store, "prod/LEGACY", BTreeMap::new(), "legacy");

    // Without adopt_existing: a conflict, untouched.
    let refused = h.run(Mode::Apply, true).await;
    assert_eq!(state(&refused, "prod/A"), SecretState::Conflict);
    assert_eq!(h.store.write_calls(), 0);
    assert_eq!(h.value("prod/A"), "old");

    h.job.options.adopt_existing = true;
    let adopted = h.run(Mode::Apply, true).await;
    assert_synced(&adopted);
    assert_eq!(message(&adopted, "prod/A"), "adopted existing secret");
    assert_eq!(h.value("prod/A"), "new");
    assert_eq!(
        h.meta("prod/A").tags,
        owned(&[("team", "pay"), ("owner", "bob")])
    );
    // An unowned secret the files do not name is never ours to delete.
    assert_eq!(h.call(OP_DELETE), 0);
    let legacy = h.meta("prod/LEGACY");
    assert!(!legacy.pending_deletion);
    assert!(legacy.tags.is_empty());
    assert_eq!(h.value("prod/LEGACY"), "legacy");
}

#[tokio::test]
async fn secrets_of_other_agents_or_syncs_are_conflicts_and_never_deleted() {
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", "A=mine\n")]);
    let other_agent = tags(&[(TAG_AGENT, "web-02"), (TAG_SYNC, SYNC)]);
    let other_sync = tags(&[(TAG_AGENT, AGENT), (TAG_SYNC, "billing")]);
    seed(&h.store, "prod/A", other_agent.clone(), "web-02's");
    seed(&h.store, "prod/X", other_agent.clone(), "x");
    seed(&h.store, "prod/Y", other_sync.clone(), "y");

    let pass = h.run(Mode::Apply, true).await;
    assert_eq!(state(&pass, "prod/A"), SecretState::Conflict);
    assert!(message(&pass, "prod/A").contains("web-02"));
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    for (name, t, v) in [
        ("prod/A", &other_agent, "web-02's"),
        ("prod/X", &other_agent, "x"),
        ("prod/Y", &other_sync, "y"),
    ] {
        let m = h.meta(name);
        assert!(!m.pending_deletion, "{name}");
        assert_eq!(&m.tags, t);
        assert_eq!(h.value(name), v);
    }
}

#[tokio::test]
async fn disable_secret_deletion_retains_removed_keys() {
    let mut h = Harness::new(
        JobBuilder::new().disable_deletion(),
        &[("app.env", "A=1\nB=2\n")],
    );
    assert_synced(&h.pass().await);
    h.write("app.env", "A=1\n");
    h.store.reset_calls();
    let pass = h.run(Mode::Apply, true).await;
    assert_eq!(state(&pass, "prod/B"), SecretState::Retained);
    assert!(message(&pass, "prod/B").contains("disable_secret_deletion"));
    assert_eq!(h.store.write_calls(), 0);
    assert!(!h.meta("prod/B").pending_deletion);
    assert_eq!(h.value("prod/B"), "2");
}

#[tokio::test]
async fn unparsable_or_missing_file_deletes_nothing() {
    let mut h = Harness::new(
        JobBuilder::new(),
        &[("base.env", "A=1\nB=2\n"), ("extra.yaml", "C: 3\nD: 4\n")],
    );
    assert_synced(&h.pass().await);

    // extra.yaml breaks on line 2 and B leaves base.env in the same edit.
    h.write("extra.yaml", "C: 3\nD: [4\n");
    h.write("base.env", "A=1\n");
    h.store.reset_calls();
    let broken = h.run(Mode::Apply, true).await;
    assert_eq!(broken.report.sync_status, SyncStatus::Failed);
    let msg = broken.report.last_sync_message.clone().unwrap_or_default();
    let path = h.path("extra.yaml").display().to_string();
    assert!(msg.contains(&format!("{path}:")), "{msg}");
    let file = &broken.report.files[1];
    assert_eq!((file.status, file.keys), ("error", 0));
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    for name in ["prod/B", "prod/C", "prod/D"] {
        assert_eq!(state(&broken, name), SecretState::Retained, "{name}");
        assert!(!h.meta(name).pending_deletion, "{name}");
    }

    std::fs::remove_file(h.path("extra.yaml")).expect("rm");
    let missing = h.run(Mode::Apply, true).await;
    assert_eq!(missing.report.sync_status, SyncStatus::Failed);
    assert_eq!(h.call(OP_DELETE), 0);
    assert!(!h.meta("prod/C").pending_deletion);
}

#[tokio::test]
async fn unparsable_later_file_does_not_roll_back_keys_it_may_override() {
    for many_to_one in [false, true] {
        let builder = if many_to_one {
            JobBuilder::new().many_to_one("{{environment}}/{{syncName}}")
        } else {
            JobBuilder::new()
        };
        let mut h = Harness::new(
            builder,
            &[
                ("base.env", "A=old\nB=b\n"),
                ("over.yaml", "A: new\n"),
                ("last.env", "C=c1\n"),
            ],
        );
        assert_synced(&h.pass().await);
        let before: BTreeMap<String, String> = h
            .store
            .names()
            .into_iter()
            .map(|n| (n.clone(), h.value(&n)))
            .collect();

        // over.yaml stops parsing: A must keep "new", not fall back to base.env.
        h.write("over.yaml", "A: [new\n");
        h.store.reset_calls();
        let broken = h.pass().await;
        assert_eq!(broken.report.sync_status, SyncStatus::Failed);
        let after: BTreeMap<String, String> = h
            .store
            .names()
            .into_iter()
            .map(|n| (n.clone(), h.value(&n)))
            .collect();
        assert_eq!(after, before, "many_to_one={many_to_one}");
        assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
        let held = if many_to_one { "prod/app" } else { "prod/A" };
        assert_eq!(state(&broken, held), SecretState::Error);
        let path = h.path("over.yaml").display().to_string();
        assert!(
            message(&broken, held).contains(&path),
            "{}",
            message(&broken, held)
        );

        if !many_to_one {
            // A key from a file after the broken one cannot be overridden
            // by it and still syncs.
            h.write("last.env", "C=c2\n");
            h.store.reset_calls();
            let later = h.pass().await;
            assert_eq!(state(&later, "prod/C"), SecretState::Synced);
            assert_eq!((h.call(OP_PUT), h.store.write_calls()), (1, 1));
            assert_eq!(h.value("prod/C"), "c2");
            assert_eq!(h.value("prod/A"), "new");
        }

        h.write("over.yaml", "A: newer\n");
        assert_synced(&h.pass().await);
        if many_to_one {
            assert!(h.value("prod/app").contains("\"A\":\"newer\""));
        } else {
            assert_eq!(h.value("prod/A"), "newer");
        }
    }
}

// ------------------------------------------------------------------- tags

#[tokio::test]
async fn tags_it_no_longer_configures_are_removed_and_others_tags_stay() {
    let mut h = Harness::new(
        JobBuilder::new().tags(&[("team", "pay"), ("env", "prod")]),
        &[("app.env", "A=1\n")],
    );
    assert_synced(&h.pass().await);
    let managed = h
        .state
        .managed_tags
        .get("prod/A")
        .cloned()
        .unwrap_or_default();
    assert_eq!(managed, BTreeSet::from(["env".into(), "team".into()]));

    // Someone else tags the secret.
    let mut meta = h.meta("prod/A");
    meta.tags.insert("owner".into(), "bob".into());
    let value = h.store.get("prod/A").and_then(|(_, v)| v);
    h.store.insert(meta, value);

    h.job.spec.tags = tags(&[("team", "pay")]);
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_UNTAG), 1);
    assert_eq!(h.store.write_calls(), 1, "{:?}", h.store.calls());
    assert_eq!(
        h.meta("prod/A").tags,
        owned(&[("team", "pay"), ("owner", "bob")])
    );
    assert_eq!(
        h.state.managed_tags["prod/A"],
        BTreeSet::from(["team".into()])
    );

    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0);
}

#[tokio::test]
async fn tags_set_in_a_pass_whose_later_step_failed_are_still_remembered() {
    // Adoption: value equal, tags added, description rewritten. The tag call
    // succeeds but the description call is throttled, so the secret ends
    // PENDING; the tags it did set must still count as set by this agent.
    let mut h = Harness::new(
        JobBuilder::new().adopt_existing(),
        &[("app.env", "A=same\n")],
    );
    seed(&h.store, "prod/A", tags(&[("owner", "bob")]), "same");
    h.store.fail_next(OP_UPDATE, throttled(), 1);
    let first = h.pass().await;
    assert!(first.transient);
    assert_eq!(state(&first, "prod/A"), SecretState::Pending);
    assert_eq!(
        h.meta("prod/A").tags,
        owned(&[("team", "pay"), ("owner", "bob")])
    );

    assert_synced(&h.pass().await);
    assert!(h.meta("prod/A").description.is_some_and(|d| d != "theirs"));

    // team is no longer configured: this agent set it, so it goes; bob's stays.
    h.job.spec.tags = BTreeMap::new();
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_UNTAG), 1, "{:?}", h.store.calls());
    assert_eq!(h.meta("prod/A").tags, owned(&[("owner", "bob")]));
}

// ------------------------------------------------------------- redaction

#[tokio::test]
async fn values_never_appear_in_debug_or_report_json() {
    const CANARY: &str = "canary-8e41b7";
    let mut h = Harness::new(
        JobBuilder::new().metadata_as_tags(),
        &[(
            "app.env",
            &format!("A={CANARY}-a\nB={CANARY}-b\nC={CANARY}-c\n"),
        )],
    );
    let mut passes = vec![h.pass().await];

    // Updates, one of them throttled; an oversize value; a removal.
    h.write(
        "app.env",
        &format!(
            "A={CANARY}-a2\nB={CANARY}-b2\nBIG={CANARY}{}\n",
            "x".repeat(70_000)
        ),
    );
    h.store.fail_next(OP_PUT, throttled(), 1);
    passes.push(h.pass().await);
    passes.push(h.pass().await);
    // A restore with a rewrite, and a conflict over someone else's secret.
    h.write(
        "app.env",
        &format!("A={CANARY}-a2\nB={CANARY}-b2\nC={CANARY}-c3\nZ={CANARY}-z\n"),
    );
    seed(
        &h.store,
        "prod/Z",
        BTreeMap::new(),
        &format!("{CANARY}-theirs"),
    );
    passes.push(h.pass().await);
    passes.push(h.run(Mode::Plan, false).await);

    let kinds: BTreeSet<ActionKind> = passes
        .iter()
        .flat_map(|p| p.report.actions.iter().map(|a| a.action))
        .collect();
    for k in [
        ActionKind::Create,
        ActionKind::Update,
        ActionKind::Delete,
        ActionKind::Restore,
        ActionKind::Conflict,
        ActionKind::Error,
    ] {
        assert!(kinds.contains(&k), "scenario lacks {k:?}: {kinds:?}");
    }
    for p in &passes {
        let debug = format!("{p:?}");
        let json = serde_json::to_string(&p.report).expect("json");
        assert!(!debug.contains(CANARY), "value in Debug: {debug}");
        assert!(!json.contains(CANARY), "value in JSON: {json}");
    }
    let first = format!("{:?}", passes[0]);
    assert!(
        first.contains("redacted"),
        "the plan's values show as redacted"
    );
    // The store does hold the canaries: the test would notice a leak.
    assert_eq!(h.value("prod/A"), format!("{CANARY}-a2"));
}

// ---------------------------------------------------------------- replicas

#[tokio::test]
async fn untracked_replicas_are_described_once_tracked_then_left_to_the_drift_timer() {
    let mut b = JobBuilder::new();
    b.job.spec.replica_regions = vec!["eu-west-1".into()];
    b.job.spec.description = Some("d".into());
    let mut h = Harness::new(b, &[("app.env", "A=1\nB=2\nC=3\n")]);
    // Three owned secrets from before replicas were configured (no state).
    h.pass().await;
    h.state.managed_replicas.clear();
    for n in ["prod/A", "prod/B", "prod/C"] {
        assert!(h.store.set_replicas(n, vec![]));
    }
    // A missing DescribeSecret permission: one failed call, not three; the
    // values still sync and nothing is planned for unknown replicas.
    h.store.reset_calls();
    h.store.fail_next(
        "DescribeSecret",
        StoreError::AccessDenied {
            op: "DescribeSecret",
            message: "AccessDeniedException: not authorized".into(),
        },
        5,
    );
    h.write("app.env", "A=10\nB=2\nC=3\n");
    let pass = h.pass().await;
    assert_eq!(
        pass.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        pass.report
    );
    assert_eq!(h.call("DescribeSecret"), 1);
    assert_eq!(h.call("ReplicateSecretToRegions"), 0);
    assert_eq!(h.value("prod/A"), "10");
    // Permission back: each untracked secret is described once, the
    // missing replicas added, and from then on the state knows them.
    h.store.heal();
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(
        pass.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        pass.report
    );
    assert_eq!(h.call("DescribeSecret"), 3);
    assert_eq!(h.call("ReplicateSecretToRegions"), 3);
    for n in ["prod/A", "prod/B", "prod/C"] {
        assert_eq!(h.store.replica_regions(n), ["eu-west-1"], "{n}");
        assert_eq!(
            h.state.managed_replicas.get(n),
            Some(&BTreeSet::from(["eu-west-1".to_string()])),
            "{n}"
        );
    }
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_eq!(pass.report.sync_status, SyncStatus::Synced);
    assert_eq!(h.call("DescribeSecret"), 0, "tracked: no describe per pass");
    assert_eq!(h.store.write_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn apply_runs_at_most_concurrency_secrets_at_once_and_keeps_them_busy() {
    // 40 secrets, one create each, 100 ms per call, 4 at a time: ten waves,
    // so exactly 1 s. More than 4 in flight would finish sooner, fewer (or
    // a gap between one finishing and the next starting) later.
    let body: String = (0..40).map(|i| format!("K{i:02}=v{i}\n")).collect();
    let mut h = Harness::new(JobBuilder::new(), &[("app.env", body.as_str())]);
    let plan = h.run(Mode::Plan, false).await.plan.expect("plan");
    assert_eq!(plan.count(ActionKind::Create), 40);
    h.store.set_latency(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    let applied = apply::apply(Arc::clone(&h.store), &plan, 4).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert!(
        applied.outcomes.iter().all(|o| *o == apply::Outcome::Ok),
        "{:?}",
        applied.outcomes
    );
    assert!(
        applied
            .secrets
            .iter()
            .all(|s| s.state == SecretState::Synced),
        "{:?}",
        applied.secrets
    );
    assert_eq!(h.call(OP_CREATE), 40);
    assert_eq!(h.store.names().len(), 40);
}

// ------------------------------------------------------------ KMS keys

#[tokio::test]
async fn the_aws_managed_key_named_explicitly_is_not_rewritten() {
    let mut h = Harness::new(
        JobBuilder::new().kms("alias/aws/secretsmanager"),
        &[("app.env", "A=1\nB=2\n")],
    );
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_CREATE), 2);
    assert_eq!(
        h.meta("prod/A").kms_key_id,
        None,
        "AWS omits the AWS-managed key"
    );
    for _ in 0..3 {
        h.store.reset_calls();
        let pass = h.pass().await;
        assert_synced(&pass);
        assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
        assert_eq!(
            h.call(OP_DESCRIBE_KEY),
            0,
            "omitted = the managed key: no KMS call"
        );
    }
}

#[tokio::test]
async fn a_key_reported_by_arn_is_resolved_once_per_store_and_not_rewritten() {
    let mut h = Harness::new(
        JobBuilder::new().kms("alias/app"),
        &[("app.env", "A=1\nB=2\n")],
    );
    let key = h.store.add_kms_key("alias/app");
    h.store.report_kms_as_key_arn(true);
    assert_synced(&h.pass().await);
    assert_eq!(
        h.meta("prod/A").kms_key_id.as_deref(),
        Some(key.arn.as_str())
    );

    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    assert_eq!(
        h.call(OP_DESCRIBE_KEY),
        1,
        "one DescribeKey for both secrets"
    );

    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
    assert_eq!(h.call(OP_DESCRIBE_KEY), 0, "cached per store");

    // Another key put on one secret by hand is drift: re-encrypted once.
    let other = h.store.add_kms_key("alias/other");
    h.store.report_kms_as_key_arn(false);
    let mut a = h.meta("prod/A");
    a.kms_key_id = Some(other.arn.clone());
    let value = SecretValue::new("1");
    h.store.insert(a, Some(value));
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_synced(&pass);
    assert_eq!(h.call(OP_UPDATE), 1, "{:?}", h.store.calls());
    assert_eq!(h.store.write_calls(), 1);
}

#[tokio::test]
async fn describe_key_denied_falls_back_to_spelling_and_writes_once() {
    let mut h = Harness::new(JobBuilder::new().kms("alias/app"), &[("app.env", "A=1\n")]);
    let key = h.store.add_kms_key("alias/app");
    h.store.report_kms_as_key_arn(true);
    h.store.deny_describe_key(true);
    assert_synced(&h.pass().await);
    assert_eq!(
        h.meta("prod/A").kms_key_id.as_deref(),
        Some(key.arn.as_str())
    );

    // The alias cannot be resolved and AWS reports the key ARN: written
    // once (the agent cannot tell), then what AWS reports is remembered.
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_synced(&pass);
    assert_eq!(h.call(OP_UPDATE), 1, "{:?}", h.store.calls());
    assert_eq!(h.call(OP_DESCRIBE_KEY), 1);
    for _ in 0..3 {
        h.store.reset_calls();
        assert_synced(&h.pass().await);
        assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
        assert_eq!(h.call(OP_DESCRIBE_KEY), 0, "the denial is cached too");
    }

    // Changed by hand to another spelling: drift, written once more.
    let mut a = h.meta("prod/A");
    a.kms_key_id = Some("alias/someone-elses".into());
    h.store.insert(a, Some(SecretValue::new("1")));
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.call(OP_UPDATE), 1, "{:?}", h.store.calls());
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
}

#[tokio::test]
async fn describe_key_denied_and_the_managed_key_omitted_is_equal() {
    let mut h = Harness::new(
        JobBuilder::new().kms("arn:aws:kms:us-east-1:123456789012:alias/aws/secretsmanager"),
        &[("app.env", "A=1\n")],
    );
    h.store.deny_describe_key(true);
    assert_synced(&h.pass().await);
    h.store.reset_calls();
    assert_synced(&h.pass().await);
    assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
}

// ------------------------------------------------------------ rotation

#[tokio::test]
async fn a_secret_with_rotation_enabled_is_a_conflict_never_written_or_deleted() {
    let mut h = Harness::new(
        JobBuilder::new().kms("alias/app"),
        &[("app.env", "A=1\nB=2\nC=3\n")],
    );
    h.store.add_kms_key("alias/app");
    assert_synced(&h.pass().await);

    // AWS rotation turned on for A (the rotation function wrote a value).
    assert!(h.store.set_rotation_enabled("prod/A", true));
    let mut a = h.meta("prod/A");
    a.current_version = Some("rotated-version-0001".into());
    a.tags.insert("team".into(), "rotation-owners".into());
    a.kms_key_id = Some("alias/rotation-key".into());
    h.store.insert(a, Some(SecretValue::new("rotated")));
    assert!(h.meta("prod/A").rotation_enabled);

    for _ in 0..2 {
        h.store.reset_calls();
        let pass = h.pass().await;
        assert_eq!(state(&pass, "prod/A"), SecretState::Conflict);
        assert_eq!(
            message(&pass, "prod/A"),
            "rotation enabled: AWS owns this value"
        );
        assert_eq!(pass.report.sync_status, SyncStatus::Failed);
        assert_eq!(h.store.write_calls(), 0, "{:?}", h.store.calls());
        assert_eq!(h.value("prod/A"), "rotated");
        assert_eq!(pass.plan.as_ref().unwrap().rotation_conflicts, 1);
    }

    // Its key leaves the files: still not deleted (the others' deletion is
    // ordinary).
    h.write("app.env", "B=2\nC=3\n");
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_synced(&pass);
    assert_eq!(state(&pass, "prod/A"), SecretState::Retained);
    assert!(
        message(&pass, "prod/A").contains("rotation enabled"),
        "{}",
        message(&pass, "prod/A")
    );
    assert_eq!(h.call(OP_DELETE), 0);
    assert!(!h.meta("prod/A").pending_deletion);

    // Rotation turned off: the agent owns the value again.
    h.write("app.env", "A=1\nB=2\nC=3\n");
    assert!(h.store.set_rotation_enabled("prod/A", false));
    h.store.reset_calls();
    let pass = h.pass().await;
    assert_synced(&pass);
    assert_eq!(h.value("prod/A"), "1");
}
