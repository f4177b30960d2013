//! Starting due passes off the engine loop and folding their results back
//! into sync state, status and `state_dir`.

#[allow(unused_imports)]
use super::*;

impl<F: StoreFactory> Engine<F> {
    pub(super) async fn start_due_passes(&mut self) {
        let now = Instant::now();
        let debounce = self.config.agent.debounce;
        for slot in self.slots.values_mut() {
            if !slot.running && slot.due.is_some_and(|d| d <= now) {
                slot.hold_for_writers(now, debounce);
            }
        }
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
            slot.startup_hold = false;
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
            let settle_check = (!explicit
                && slot
                    .settling_since
                    .is_none_or(|since| now < since + MAX_SETTLE_WAIT))
            .then(|| SettleCheck {
                confirmed: slot.unconfirmed.clone(),
            });
            slot.resume = Some(Resume {
                force,
                allow_deletes,
                describe_all: slot.describe_all,
                status: slot.view.sync_status,
            });
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
                        settle_check,
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
        let resume = slot.resume.take();
        if let Some(settle) = done.settle {
            // Nothing was acted on: the pass is put back as it was and runs
            // again after another quiet period.
            let now = Instant::now();
            if let Some(r) = resume {
                slot.force |= r.force;
                slot.allow_deletes |= r.allow_deletes;
                slot.describe_all |= r.describe_all;
                slot.view.sync_status = r.status;
            }
            let mut riders = std::mem::take(&mut slot.riding);
            riders.append(&mut slot.waiting);
            slot.waiting = riders;
            slot.pass_started = None;
            if let Some(at) = slot.pass_event_at.take() {
                slot.event_at = Some(slot.event_at.map_or(at, |e| e.min(at)));
            }
            slot.settling_since.get_or_insert(now);
            let why = match settle {
                Settle::Changing => "a source file changed while it was read",
                Settle::Dropped(stamps) => {
                    slot.unconfirmed = Some(stamps);
                    "keys left the source files; confirming after a quiet period before deleting"
                }
            };
            let again = now + self.config.agent.debounce;
            slot.due = Some(slot.due.map_or(again, |d| d.max(again)));
            tracing::info!(
                sync = name,
                "{why}; reading again in {:?}",
                self.config.agent.debounce
            );
            self.publish();
            return;
        }
        slot.settling_since = None;
        slot.unconfirmed = None;
        let riders = std::mem::take(&mut slot.riding);
        let started = slot.pass_started.take();
        let event_at = slot.pass_event_at.take();
        if done.skipped {
            // No pass ran: the sync keeps the status its last pass gave it
            // (a FAILED sync never turns SYNCED on an event that changed
            // no content).
            if slot.view.sync_status == SyncStatus::Running {
                slot.view.sync_status = resume.map_or(SyncStatus::Pending, |r| r.status);
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
        // A glob match that is really gone leaves the view; every other
        // path keeps its last good view while it fails.
        slot.last_good
            .retain(|path, _| done.files.iter().any(|f| &f.path == path));
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
        let identity_collisions = done
            .result
            .as_ref()
            .filter(|_| done.mode == Mode::Apply)
            .and_then(|r| r.plan.as_ref())
            .map_or(0, |p| p.collisions);
        let rotation_conflicts = done
            .result
            .as_ref()
            .filter(|_| done.mode == Mode::Apply)
            .and_then(|r| r.plan.as_ref())
            .map_or(0, |p| p.rotation_conflicts);
        let (report, transient, throttled) = match (done.setup_error, done.result) {
            (Some(e), _) => (
                failed_report(&slot.job, format!("cannot set up AWS client: {e}")),
                true,
                false,
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
                (result.report, result.transient, result.throttled)
            }
            (None, None) => (
                failed_report(&slot.job, "pass produced no result".into()),
                false,
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
            m.rotation_conflicts(name, rotation_conflicts);
            m.identity_collisions(name, identity_collisions);
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
        let mut retry_in = None;
        if transient {
            // The edit has not reached AWS yet: the retry carries its time.
            if let Some(at) = event_at {
                slot.event_at = Some(slot.event_at.map_or(at, |e| e.min(at)));
            }
            slot.failures = slot.failures.saturating_add(1);
            slot.describe_all = true;
            // A throttled startup: the fleet may have restarted together,
            // so the retry is spread over a window, not in lockstep.
            let delay = if throttled && !slot.settled_since_start {
                schedule::first_pass_retry(slot.failures, fastrand::f64())
            } else {
                backoff(slot.failures)
            };
            slot.force = true;
            slot.schedule(Instant::now() + delay);
            slot.digests = None;
            retry_in = Some(delay);
        } else {
            slot.failures = 0;
            slot.settled_since_start = true;
            slot.digests = Some(done.digests);
        }
        log_pass(name, &report, retry_in);
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

/// The one log line per pass. The reason is part of the message text, not
/// only a field: the journal's MESSAGE and a text log line show it as is.
/// FAILED is an ERROR (the operator must act: deletion guard, a file that
/// does not parse); a pass that will be retried (AWS unreachable,
/// throttled) is a WARN with its cause; anything else is INFO. The
/// message is the status message, which names files, keys and secrets,
/// never values.
fn log_pass(name: &str, report: &report::SyncReport, retry_in: Option<Duration>) {
    let line = report::summary_line(report);
    let line = line.trim_end();
    let reason = report
        .last_sync_message
        .as_deref()
        .filter(|m| !m.is_empty());
    match (report.sync_status, retry_in, reason) {
        (SyncStatus::Failed, _, reason) => {
            let reason = reason.unwrap_or("no reason recorded");
            tracing::error!(sync = name, reason, "{line}: {reason}");
        }
        (_, Some(delay), reason) => {
            let reason = reason.unwrap_or("no reason recorded");
            tracing::warn!(sync = name, reason, retry_in = ?delay, "{line}: {reason}; will retry in {delay:?}");
        }
        (_, None, Some(reason)) => tracing::info!(sync = name, reason, "{line}: {reason}"),
        (_, None, None) => tracing::info!(sync = name, "{line}"),
    }
}
