//! The import step of an initial sync: what to take from AWS, and the write into the sync's first file.

#[allow(unused_imports)]
use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    /// Whether the import (and its write-back) succeeded.
    pub ok: bool,
    /// Summary or reason (never values).
    pub message: String,
}

impl ImportOutcome {
    /// `SYNCED` or `FAILED`, as `import_status` spells it.
    pub fn status(&self) -> &'static str {
        if self.ok { "SYNCED" } else { "FAILED" }
    }

    /// Copies the outcome into a report's import fields.
    pub(super) fn record(&self, rep: &mut SyncReport) {
        rep.import_status = Some(self.status().to_string());
        rep.last_import_message = Some(self.message.clone());
    }
}

/// Why an import could not run.
pub(super) enum ImportFailure {
    /// AWS could not be read: retry later.
    Store(StoreError),
    /// Scope or write-back problem: nothing is written anywhere.
    Invalid(String),
}

/// Finds the sync's in-scope secrets in AWS (owned, or adoptable when
/// `adopt_existing`), reads their values into `actual`, and returns the
/// import decision against the local view.
pub(super) async fn prepare_import<S: SecretStore>(
    store: &S,
    job: &SyncJob,
    mode: ImportMode,
    local: &BTreeMap<String, crate::secret::SecretValue>,
    actual: &mut Actual,
) -> Result<import::ImportPlan, ImportFailure> {
    let spec = &job.spec;
    let adopt = job.options.adopt_existing;
    let in_scope = |r: &crate::store::RemoteSecret| {
        !r.pending_deletion
            && match plan::ownership(spec, r) {
                plan::Ownership::Ours => true,
                plan::Ownership::Unowned => adopt,
                plan::Ownership::Foreign(_) => false,
            }
    };
    let mut names: Vec<String> = Vec::new();
    match spec.mapping {
        MappingKind::OneToOne => {
            let prefix = import::name_prefix(spec);
            if adopt && !prefix.is_empty() {
                for r in store
                    .list_by_prefix(&prefix)
                    .await
                    .map_err(ImportFailure::Store)?
                {
                    actual.secrets.entry(r.name.clone()).or_insert(r);
                }
            }
            names.extend(
                actual
                    .secrets
                    .values()
                    .filter(|r| in_scope(r) && import::key_for_name(spec, &r.name).is_some())
                    .map(|r| r.name.clone()),
            );
        }
        MappingKind::ManyToOne => {
            let name = spec.secret_name.clone().unwrap_or_default();
            if actual.secrets.get(&name).is_some_and(in_scope) {
                names.push(name);
            }
        }
    }
    let unread: Vec<String> = names
        .iter()
        .filter(|n| !actual.values.contains_key(*n))
        .cloned()
        .collect();
    if !unread.is_empty() {
        for (name, read) in store
            .get_values(&unread)
            .await
            .map_err(ImportFailure::Store)?
        {
            actual
                .values
                .insert(name, read.map(|v| v.value).map_err(|e| e.to_string()));
        }
    }
    let mut candidates = Vec::new();
    for name in names {
        let value = match actual.values.get(&name) {
            Some(Ok(Some(v))) => v.clone(),
            Some(Ok(None)) => continue,
            Some(Err(e)) => return Err(ImportFailure::Invalid(format!("cannot read {name}: {e}"))),
            None => continue,
        };
        match spec.mapping {
            MappingKind::OneToOne => {
                if let Some(key) = import::key_for_name(spec, &name) {
                    candidates.push(import::Candidate { key, name, value });
                }
            }
            MappingKind::ManyToOne => candidates.extend(
                import::json_candidates(spec, &name, &value).map_err(ImportFailure::Invalid)?,
            ),
        }
    }
    Ok(import::plan_import(mode, local, candidates))
}

/// Writes the import into the sync's first file (created if absent),
/// atomically and keeping its other lines and mode.
pub(super) fn write_import(
    job: &SyncJob,
    plan: &import::ImportPlan,
) -> Result<std::path::PathBuf, String> {
    let first = job
        .files
        .first()
        .ok_or("the sync has no source file to import into")?;
    // Config validation refuses a glob as the first file of an importing sync.
    let path = std::path::Path::new(first);
    let format = job
        .format
        .or_else(|| SourceFormat::from_path(path))
        .ok_or_else(|| format!("{first}: cannot tell the format; set source.format"))?;
    // Never blocks on a FIFO put where the file was.
    let text = match crate::source::files::read_regular(path) {
        Ok(Some(bytes)) => String::from_utf8(bytes).map_err(|_| format!("{first}: not UTF-8"))?,
        Ok(None) => String::new(),
        Err(e) => return Err(format!("{first}: cannot read: {e}")),
    };
    let edits: Vec<Edit> = plan
        .sets
        .iter()
        .map(|(c, _)| Edit::Set {
            key: c.key.clone(),
            value: c.value.clone(),
        })
        .collect();
    let new_text = writeback::apply_checked(&text, format, &edits, job.expand)
        .map_err(|e| format!("{first}: {e}"))?;
    let outcome = writeback::write_atomic(path, new_text.as_bytes(), false)
        .map_err(|e| format!("{first}: {e}"))?;
    for note in &outcome.notes {
        tracing::warn!(file = first, "{note}");
    }
    Ok(outcome.written_path)
}
