//! Starting due passes off the engine loop and folding their results back
//! into sync state, status and `state_dir`.

#[allow(unused_imports)]
use super::*;

impl<F: StoreFactory> Engine<F> {
    pub(super) async fn start_due_passes(&mut self) {
        let now = Instant::now();
        let ready: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.running && s.due.is_some_and(|d| d <= now))
            .map(|(n, _)| n.clone())
            .collect();
        let started = !ready.is_empty();
        for name in ready {
            let conn = match self.slots.get(&name) {
                Some(s) => s.job.connection.clone(),
                None => continue,
            };
            let store = self.store_for(&conn).await;
            let sync_state = self.state.syncs.get(&name).cloned().unwrap_or_default();
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            slot.due = None;
            slot.burst_start = None;
            slot.pass_started = Some(Instant::now());
            slot.pass_event_at = slot.event_at.take();
            slot.running = true;
            slot.riding = std::mem::take(&mut slot.waiting);
            let mode = if slot.auto_sync || slot.explicit {
                Mode::Apply
            } else {
                Mode::Plan
            };
            let force = std::mem::take(&mut slot.force) || !slot.riding.is_empty();
            let allow_deletes = std::mem::take(&mut slot.allow_deletes);
            let explicit = std::mem::take(&mut slot.explicit);
            if mode == Mode::Apply {
                slot.view.sync_status = SyncStatus::Running;
                if let Ok(store) = &store {
                    self.progress
                        .insert(name.clone(), (Arc::clone(store), std::time::Instant::now()));
                }
            }
            let mut job = slot.job.clone();
            job.state_unwritable = self.state_error.clone();
            let describe_all = std::mem::take(&mut slot.describe_all);
            if describe_all {
                job.describe_replicas = DescribeReplicas::All;
            }
            // Only a pass started by file events may skip the full listing.
            job.listing = if force || describe_all {
                Listing::Full
            } else {
                Listing::Changed
            };
            if !explicit {
                job.import_held = self.import_hold.clone();
            }
            let previous = slot.digests.clone();
            let last_good = slot.last_good.clone();
            let span = tracing::info_span!("pass", sync = %name);
            self.inflight.spawn(tracing::Instrument::instrument(
                async move {
                    let done = run_pass_task(
                        store,
                        job,
                        mode,
                        force,
                        allow_deletes,
                        previous,
                        last_good,
                        sync_state,
                    )
                    .await;
                    (name, done)
                },
                span,
            ));
        }
        if started {
            if !self.progress.is_empty() && self.next_progress.is_none() {
                self.next_progress = Some(now + PROGRESS_TICK);
            }
            // RUNNING is visible while the pass runs, not only after it.
            self.publish();
        }
    }

    pub(super) fn finish_pass(&mut self, name: &str, done: PassDone) {
        self.progress.remove(name);
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        slot.running = false;
        let riders = std::mem::take(&mut slot.riding);
        let started = slot.pass_started.take();
        let event_at = slot.pass_event_at.take();
        if done.skipped {
            if slot.view.sync_status == SyncStatus::Running {
                slot.view.sync_status = SyncStatus::Synced;
            }
            tracing::debug!(sync = name, "file events without content change; no pass");
            self.publish();
            return;
        }
        let now = report::now_rfc3339();
        let mut done = done;
        // After an import wrote into a file, the files as re-read are the
        // truth; their digests make the agent's own write a no-op event.
        if let Some(after) = done.result.as_mut().and_then(|r| r.files_after.take()) {
            done.digests = after.iter().map(|f| (f.path.clone(), f.digest)).collect();
            done.files = after;
        }
        for f in &done.files {
            if let Ok(p) = &f.result {
                slot.last_good.insert(f.path.clone(), p.clone());
            }
        }
        slot.view.files = report::file_views(&done.files, &now);
        if let Some(import) = done.result.as_ref().and_then(|r| r.import.as_ref()) {
            slot.view.import_status = Some(import.status().into());
            slot.view.last_import_message = Some(import.message.clone());
            if import.ok && done.mode == Mode::Apply {
                slot.view.last_imported_at = Some(now.clone());
            }
        }
        let wrote = done
            .result
            .as_ref()
            .and_then(|r| r.applied.as_ref())
            .is_some_and(|a| a.outcomes.contains(&crate::reconcile::apply::Outcome::Ok));
        let (report, transient) = match (done.setup_error, done.result) {
            (Some(e), _) => (
                failed_report(&slot.job, format!("cannot set up AWS client: {e}")),
                true,
            ),
            (None, Some(result)) => {
                if let (Some(plan), Some(applied)) = (&result.plan, &result.applied) {
                    let entry = self.state.syncs.entry(name.to_string()).or_default();
                    reconcile::record_state(entry, plan, applied);
                    if result.report.sync_status == SyncStatus::Synced {
                        entry.initial_sync_done = true;
                    }
                }
                let mut secrets = match (&result.report.secrets, &result.plan) {
                    (Some(s), _) => s.clone(),
                    (None, Some(plan)) => planned_views(plan),
                    (None, None) => slot.view.secrets.clone(),
                };
                if let Some(plan) = &result.plan {
                    remember_replicas(&mut slot.replicas, plan, result.applied.as_ref());
                }
                for v in &mut secrets {
                    v.replicas = slot.replicas.get(&v.name).cloned().unwrap_or_default();
                }
                slot.view.secrets = secrets;
                (result.report, result.transient)
            }
            (None, None) => (
                failed_report(&slot.job, "pass produced no result".into()),
                false,
            ),
        };
        slot.view.sync_status = report.sync_status;
        slot.view.last_sync_message = report.last_sync_message.clone();
        slot.view.counts = StateCounts::of(&slot.view.secrets);
        if report.sync_status == SyncStatus::Synced && done.mode == Mode::Apply {
            slot.view.last_synced_at = Some(now);
        }
        if let Some(m) = &self.metrics {
            let finished = Instant::now();
            if let Some(started) = started {
                m.pass_finished(name, report.sync_status.as_str(), finished - started);
            }
            if report.sync_status == SyncStatus::Synced && done.mode == Mode::Apply {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                m.sync_succeeded(name, unix);
                if let Some(at) = event_at.filter(|_| wrote) {
                    m.propagated(name, finished - at);
                }
            }
        }
        if transient {
            // The edit has not reached AWS yet: the retry carries its time.
            if let Some(at) = event_at {
                slot.event_at = Some(slot.event_at.map_or(at, |e| e.min(at)));
            }
            slot.failures = slot.failures.saturating_add(1);
            slot.describe_all = true;
            let delay = backoff(slot.failures);
            slot.force = true;
            slot.schedule(Instant::now() + delay);
            slot.digests = None;
            tracing::warn!(sync = name, retry_in = ?delay, reason = report.last_sync_message.as_deref().unwrap_or(""), "pass incomplete; will retry");
        } else {
            slot.failures = 0;
            slot.digests = Some(done.digests);
        }
        tracing::info!(sync = name, "{}", report::summary_line(&report));
        for r in riders {
            let _ = r.send(Ok(report.clone()));
        }
        self.save_state();
        self.publish();
    }

    pub(super) fn save_state(&mut self) {
        if self.saved_state.as_ref() == Some(&self.state) {
            return;
        }
        match self.state.save(&self.config.agent.state_dir) {
            Ok(()) => {
                self.state_warned = false;
                self.state_error = None;
                self.saved_state = Some(self.state.clone());
            }
            Err(e) => {
                if !self.state_warned {
                    tracing::warn!(error = %e, "state not saved; stale tags set by this agent may not be removed later, and imports are held back");
                    self.state_warned = true;
                }
                self.state_error = Some(e.to_string());
            }
        }
    }
}
