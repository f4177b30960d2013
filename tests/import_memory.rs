//! Initial-sync import (`import-prioritize-source` / `-destination`) driven
//! through `reconcile::run_pass` against the in-memory store: what ends up
//! in the file and in the store, and what is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secretsync::config;
use secretsync::reconcile::plan::{ActionKind, TokenKey};
use secretsync::reconcile::report::SyncStatus;
use secretsync::reconcile::state::SyncState;
use secretsync::reconcile::{self, Mode, SyncJob};
use secretsync::secret::SecretValue;
use secretsync::store::RemoteSecret;
use secretsync::store::memory::MemoryStore;

const AGENT: &str = "imp";

fn job(dir: &Path, file: &str, destination: &str, mode: &str) -> SyncJob {
    let text = format!(
        "agent:\n  id: {AGENT}\n  state_dir: {d}/state\naws:\n  region: us-east-1\nsyncs:\n  - name: app\n    source:\n      files: [{d}/{file}]\n    destination:\n{destination}    options:\n      initial_sync: {mode}\n",
        d = dir.display()
    );
    let path = dir.join("agent.yaml");
    std::fs::write(&path, text).unwrap();
    let cfg = config::load_config(&path).unwrap_or_else(|e| panic!("{e}"));
    SyncJob::from_config(&cfg, &cfg.syncs[0]).with_token_key(TokenKey([3; 32]))
}

fn owned(name: &str) -> RemoteSecret {
    RemoteSecret {
        name: name.into(),
        arn: format!("arn:aws:secretsmanager:us-east-1:1:secret:{name}"),
        tags: BTreeMap::from([
            ("secretsync:agent".to_string(), AGENT.to_string()),
            ("secretsync:sync".to_string(), "app".to_string()),
        ]),
        current_version: Some("v0".into()),
        ..Default::default()
    }
}

fn value(store: &MemoryStore, name: &str) -> Option<String> {
    store
        .get(name)
        .and_then(|(_, v)| v.map(|v| v.expose().to_string()))
}

async fn pass(
    store: &Arc<MemoryStore>,
    job: &SyncJob,
    mode: Mode,
    state: &SyncState,
) -> reconcile::PassResult {
    reconcile::run_pass(Arc::clone(store), job, mode, false, state).await
}

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap()
}

#[tokio::test]
async fn prioritize_source_adds_missing_keys_and_keeps_local_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "# app secrets\nexport A=local\nC=c\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/A"), Some(SecretValue::new("aws-a")));
    store.insert(owned("prod/B"), Some(SecretValue::new("aws b #1")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-source",
    );
    let b_versions = store.versions("prod/B");
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(
        r.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        r.report.last_sync_message
    );
    let import = r.import.expect("import ran");
    assert!(import.ok);
    assert_eq!(
        import.message,
        "imported 1 keys, 1 conflict(s) resolved in favour of the files"
    );
    let text = read(&file);
    assert!(
        text.starts_with("# app secrets\nexport A=local\nC=c\n"),
        "{text}"
    );
    let parsed = secretsync::source::parse_env(&text, false).unwrap();
    assert_eq!(parsed.get("B").unwrap().value.expose(), "aws b #1");
    assert_eq!(
        value(&store, "prod/A").as_deref(),
        Some("local"),
        "local wins and is pushed"
    );
    assert_eq!(value(&store, "prod/B").as_deref(), Some("aws b #1"));
    assert_eq!(value(&store, "prod/C").as_deref(), Some("c"));
    assert!(
        r.files_after.is_some(),
        "re-read files are returned for digesting"
    );
    assert_eq!(
        store.versions("prod/B"),
        b_versions,
        "B's value is not rewritten"
    );
}

#[tokio::test]
async fn prioritize_destination_replaces_differing_local_values() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "A='local'\nC=c\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/A"), Some(SecretValue::new("from-aws")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-destination",
    );
    store.reset_calls();
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(
        r.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        r.report.last_sync_message
    );
    assert_eq!(
        r.report.last_import_message.as_deref(),
        Some("imported 1 keys, 1 conflict(s) resolved in favour of AWS")
    );
    assert_eq!(read(&file), "A='from-aws'\nC=c\n");
    assert_eq!(value(&store, "prod/A").as_deref(), Some("from-aws"));
    assert_eq!(
        store.calls().get("PutSecretValue").copied().unwrap_or(0),
        0,
        "A already equal after import"
    );
}

#[tokio::test]
async fn plan_mode_shows_imports_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "C=c\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/B"), Some(SecretValue::new("b")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-source",
    );
    let r = pass(&store, &j, Mode::Plan, &SyncState::default()).await;
    let kinds: Vec<(ActionKind, String)> = r
        .report
        .actions
        .iter()
        .map(|a| (a.action, a.name.clone()))
        .collect();
    assert!(
        kinds.contains(&(ActionKind::Import, "prod/B".into())),
        "{kinds:?}"
    );
    assert!(
        !kinds
            .iter()
            .any(|(k, n)| *k == ActionKind::Delete && n == "prod/B"),
        "the imported key is not an orphan: {kinds:?}"
    );
    assert_eq!(read(&file), "C=c\n");
    assert_eq!(store.write_calls(), 0);
}

#[tokio::test]
async fn no_import_once_the_initial_sync_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "C=c\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/B"), Some(SecretValue::new("b")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-source",
    );
    let done = SyncState {
        initial_sync_done: true,
        ..Default::default()
    };
    let r = pass(&store, &j, Mode::Apply, &done).await;
    assert!(r.import.is_none());
    assert_eq!(read(&file), "C=c\n");
    assert!(
        store.get("prod/B").unwrap().0.pending_deletion,
        "after the initial sync, files rule"
    );
}

#[tokio::test]
async fn many_to_one_json_is_split_into_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, "# db\nX: '0'\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(
        owned("prod/db"),
        Some(SecretValue::new(r#"{"X":"1","Y":"line\nbreak"}"#)),
    );
    let j = job(
        dir.path(),
        "app.yaml",
        "      mapping: many-to-one\n      secret_name: prod/db\n",
        "import-prioritize-destination",
    );
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(
        r.report.sync_status,
        SyncStatus::Synced,
        "{:?}",
        r.report.last_sync_message
    );
    let parsed = secretsync::source::parse_yaml(&read(&file), false).unwrap();
    assert_eq!(parsed.get("X").unwrap().value.expose(), "1");
    assert_eq!(parsed.get("Y").unwrap().value.expose(), "line\nbreak");
    assert!(read(&file).starts_with("# db\n"));
}

#[tokio::test]
async fn nested_json_is_an_import_error_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "X=0\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(
        owned("prod/db"),
        Some(SecretValue::new(r#"{"X":{"nested":true}}"#)),
    );
    let j = job(
        dir.path(),
        "app.env",
        "      mapping: many-to-one\n      secret_name: prod/db\n",
        "import-prioritize-destination",
    );
    store.reset_calls();
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(r.report.sync_status, SyncStatus::Failed);
    assert_eq!(r.report.import_status.as_deref(), Some("FAILED"));
    assert!(
        r.report
            .last_import_message
            .unwrap_or_default()
            .contains("not a string")
    );
    assert_eq!(read(&file), "X=0\n");
    assert_eq!(store.write_calls(), 0);
}

#[tokio::test]
async fn a_file_that_cannot_be_written_fails_the_import_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("real.env");
    std::fs::write(&target, "C=c\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("app.env")).unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/B"), Some(SecretValue::new("b")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-source",
    );
    store.reset_calls();
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(r.report.sync_status, SyncStatus::Failed);
    assert_eq!(r.report.import_status.as_deref(), Some("FAILED"));
    assert_eq!(read(&target), "C=c\n");
    assert_eq!(store.write_calls(), 0, "no push after a failed import");
    assert!(!store.get("prod/B").unwrap().0.pending_deletion);
}

#[tokio::test]
async fn adopt_existing_imports_unowned_secrets_under_the_prefix_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "").unwrap();
    let store = Arc::new(MemoryStore::new());
    let unowned = |n: &str| RemoteSecret {
        tags: BTreeMap::new(),
        ..owned(n)
    };
    store.insert(unowned("prod/app/U"), Some(SecretValue::new("u")));
    store.insert(unowned("prod/other/V"), Some(SecretValue::new("v")));
    let mut foreign = owned("prod/app/F");
    foreign
        .tags
        .insert("secretsync:agent".into(), "someone-else".into());
    store.insert(foreign, Some(SecretValue::new("f")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/app/{{secretKey}}\"\n      adopt_existing: true\n",
        "import-prioritize-source",
    );
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    let parsed = secretsync::source::parse_env(&read(&file), false).unwrap();
    let keys: Vec<&str> = parsed.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["U"], "{:?}", r.report.last_sync_message);
    assert_eq!(
        store
            .get("prod/app/U")
            .unwrap()
            .0
            .tags
            .get("secretsync:agent")
            .map(String::as_str),
        Some(AGENT)
    );
    assert!(store.get("prod/other/V").unwrap().0.tags.is_empty());
}

/// An import-prioritize-destination sync whose file holds a local edit
/// and whose AWS secret an older value: a repeated import would lose the edit.
fn local_edit_and_older_aws_value() -> (tempfile::TempDir, PathBuf, Arc<MemoryStore>, SyncJob) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.env");
    std::fs::write(&file, "A=local-edit\n").unwrap();
    let store = Arc::new(MemoryStore::new());
    store.insert(owned("prod/A"), Some(SecretValue::new("old")));
    let j = job(
        dir.path(),
        "app.env",
        "      key_schema: \"prod/{{secretKey}}\"\n",
        "import-prioritize-destination",
    );
    (dir, file, store, j)
}

#[tokio::test]
async fn no_import_without_a_writable_state_dir() {
    let (_dir, file, store, mut j) = local_edit_and_older_aws_value();
    j.state_unwritable = Some("read-only file system".into());
    store.reset_calls();
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(r.report.sync_status, SyncStatus::Failed);
    assert!(
        r.report
            .last_import_message
            .unwrap_or_default()
            .contains("writable state_dir")
    );
    assert_eq!(
        read(&file),
        "A=local-edit\n",
        "a local edit is never overwritten by a repeated import"
    );
    assert_eq!(store.write_calls(), 0);
}

#[tokio::test]
async fn import_held_after_a_lost_state_writes_nothing_until_resync() {
    let (_dir, file, store, mut j) = local_edit_and_older_aws_value();
    j.import_held = Some("state.json and its backup are unreadable".into());
    store.reset_calls();
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(r.report.sync_status, SyncStatus::Failed);
    assert!(!r.transient, "waits for a resync, not for a retry");
    let message = r.report.last_import_message.unwrap_or_default();
    assert!(message.contains("resync app"), "{message}");
    assert_eq!(read(&file), "A=local-edit\n");
    assert_eq!(store.write_calls(), 0);

    // The explicit resync (the engine clears the hold for it) imports.
    j.import_held = None;
    let r = pass(&store, &j, Mode::Apply, &SyncState::default()).await;
    assert_eq!(r.report.sync_status, SyncStatus::Synced, "{:?}", r.report);
    assert_eq!(read(&file), "A=old\n");
}
