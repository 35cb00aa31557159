//! Deciding a batch's commands against the projection plus the commands before them in the
//! batch (`Overlay`).

use super::*;

/// The batch's view of state: the projection plus what earlier commands of the batch did.
pub(super) struct Overlay<'a> {
    pub(super) view: &'a QueueView,
    pub(super) tasks: HashMap<TaskId, Option<Task>>,
    pub(super) groups: HashMap<TaskId, Option<TaskGroup>>,
    pub(super) artifacts: HashMap<(TaskId, u32, String), Option<Artifact>>,
    pub(super) streams: HashMap<String, u64>,
    pub(super) workers_seen: HashMap<String, Option<Millis>>,
    /// Quarantines recorded earlier in the batch, by worker key.
    pub(super) quarantined: HashMap<String, Millis>,
    pub(super) claimed_in_batch: HashMap<String, usize>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(view: &'a QueueView) -> Overlay<'a> {
        Overlay {
            view,
            tasks: HashMap::default(),
            groups: HashMap::default(),
            artifacts: HashMap::default(),
            streams: HashMap::default(),
            workers_seen: HashMap::default(),
            quarantined: HashMap::default(),
            claimed_in_batch: HashMap::default(),
        }
    }
    /// The task as the batch has it so far (read from the projection the first time), lent:
    /// a command's rules only look at it, and only its outcome takes a copy.
    pub(super) fn task(&mut self, id: &TaskId) -> Result<Option<&Task>, StoreError> {
        let slot = match self.tasks.entry(*id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.view.task(id)?),
        };
        Ok(slot.as_ref())
    }
    pub(super) fn existing_task(&mut self, id: &TaskId) -> Result<&Task, EngineError> {
        self.task(id)?
            .ok_or(EngineError::Domain(QueueError::TaskNotFound(*id)))
    }
    pub(super) fn group(&mut self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        if let Some(g) = self.groups.get(id) {
            return Ok(g.clone());
        }
        let g = self.view.group(id)?;
        self.groups.insert(*id, g.clone());
        Ok(g)
    }
    pub(super) fn artifact(
        &mut self,
        t: &TaskId,
        run: u32,
        name: &str,
    ) -> Result<Option<Artifact>, StoreError> {
        let key = (*t, run, name.to_string());
        if let Some(a) = self.artifacts.get(&key) {
            return Ok(a.clone());
        }
        if matches!(self.tasks.get(t), Some(None)) {
            // the task is gone (expired earlier in this batch), its artifacts with it
            return Ok(None);
        }
        let a = self.view.artifact(t, run, name)?;
        self.artifacts.insert(key, a.clone());
        Ok(a)
    }
    pub(super) fn next_sequence(&mut self, stream: &str) -> Result<u64, StoreError> {
        let current = match self.streams.get(stream) {
            Some(s) => *s,
            None => self.view.stream_sequence(stream)?,
        };
        self.streams.insert(stream.to_string(), current + 1);
        Ok(current + 1)
    }
    pub(super) fn apply(&mut self, event: &QueueEvent) {
        match event {
            // changes nothing (it only has its messages published again)
            QueueEvent::Repeated { .. } => {}
            QueueEvent::TaskDefined {
                task_id,
                definition,
                unsatisfied,
            } => {
                self.tasks.insert(
                    *task_id,
                    Some(Task::defined(
                        *task_id,
                        TaskDefinition::clone(definition),
                        unsatisfied.clone(),
                    )),
                );
            }
            QueueEvent::ArtifactExpired {
                task_id,
                run_id,
                name,
            } => {
                self.artifacts
                    .insert((*task_id, *run_id, name.clone()), None);
            }
            QueueEvent::TaskExpired { task_id } => {
                self.tasks.insert(*task_id, None);
                for ((t, _, _), a) in self.artifacts.iter_mut() {
                    if t == task_id {
                        *a = None;
                    }
                }
            }
            QueueEvent::TaskGroupDefined { task_group_id, .. }
            | QueueEvent::TaskGroupExpiresRaised { task_group_id, .. }
            | QueueEvent::TaskGroupSealed { task_group_id, .. }
            | QueueEvent::TaskGroupPriorityChanged { task_group_id, .. }
            | QueueEvent::TaskGroupExpired { task_group_id } => {
                let g = self.groups.get(task_group_id).cloned().flatten();
                self.groups
                    .insert(*task_group_id, TaskGroup::apply(g, event));
            }
            QueueEvent::ArtifactCreated {
                task_id,
                run_id,
                artifact,
            } => {
                self.artifacts.insert(
                    (*task_id, *run_id, artifact.name.clone()),
                    Some(artifact.clone()),
                );
            }
            QueueEvent::ArtifactFinished {
                task_id,
                run_id,
                name,
            } => {
                if let Some(Some(a)) = self.artifacts.get_mut(&(*task_id, *run_id, name.clone())) {
                    a.present = true;
                }
            }
            QueueEvent::WorkerSeen {
                task_queue_id,
                worker_group,
                worker_id,
                at,
                ..
            } => {
                self.workers_seen.insert(
                    queue::worker_key(task_queue_id, worker_group, worker_id),
                    Some(*at),
                );
            }
            QueueEvent::WorkerQuarantined {
                task_queue_id,
                worker_group,
                worker_id,
                until,
                ..
            } => {
                self.quarantined.insert(
                    queue::worker_key(task_queue_id, worker_group, worker_id),
                    *until,
                );
            }
            QueueEvent::RunScheduled { task_id, .. }
            | QueueEvent::RunClaimed { task_id, .. }
            | QueueEvent::RunReclaimed { task_id, .. }
            | QueueEvent::RunResolved { task_id, .. }
            | QueueEvent::RunExceptionRecorded { task_id, .. }
            | QueueEvent::DependencySatisfied { task_id, .. }
            | QueueEvent::PriorityChanged { task_id, .. }
            | QueueEvent::GroupPriorityApplied { task_id, .. } => {
                if let Some(Some(t)) = self.tasks.get_mut(task_id) {
                    t.apply(event);
                }
            }
        }
    }
}

pub(super) type Decided = Result<(Vec<QueueEvent>, Outcome), EngineError>;

/// A command that answers nothing but its events: they join the batch's view, and it is done.
fn done(overlay: &mut Overlay, events: Vec<QueueEvent>) -> Decided {
    events.iter().for_each(|e| overlay.apply(e));
    Ok((events, Outcome::Done))
}

fn task_outcome(overlay: &mut Overlay, id: &TaskId, events: Vec<QueueEvent>) -> Decided {
    for e in &events {
        overlay.apply(e);
    }
    let task = overlay.existing_task(id)?.clone();
    Ok((events, Outcome::Task(task)))
}

pub(super) fn decide(
    overlay: &mut Overlay,
    command: &QueueCommand,
    now: Millis,
    limits: &Limits,
) -> Decided {
    match command {
        QueueCommand::CreateTask {
            task_id,
            definition,
        } => {
            let existing = overlay.task(task_id)?.cloned();
            let group = overlay.group(&definition.task_group_id)?;
            let mut deps = Vec::with_capacity(definition.dependencies.len());
            for dep in &definition.dependencies {
                let found = overlay.task(dep)?.map(|t| DependencyState {
                    resolution: t.resolution(),
                    expires: t.definition.expires,
                });
                deps.push(DependencyView {
                    task_id: *dep,
                    found,
                });
            }
            let events = queue::create_task(
                existing.as_ref(),
                group.as_ref(),
                &deps,
                *task_id,
                definition.clone(),
                now,
                limits,
            )?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ScheduleTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::schedule_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::RerunTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::rerun_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::CancelTask { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::cancel_task(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ClaimWork {
            task_queue_id,
            worker_group,
            worker_id,
            max,
        } => {
            let key = queue::worker_key(task_queue_id, worker_group, worker_id);
            // earlier commands of the batch first; the stored worker, read once, for the rest
            let seen_in_batch = overlay.workers_seen.get(&key).copied();
            let quarantined_in_batch = overlay.quarantined.get(&key).copied();
            let stored = match (seen_in_batch, quarantined_in_batch) {
                (Some(_), Some(_)) => None,
                _ => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?,
            };
            let last_seen =
                seen_in_batch.unwrap_or_else(|| stored.as_ref().and_then(|w| w.last_date_active));
            let quarantine_until =
                quarantined_in_batch.or_else(|| stored.as_ref().and_then(|w| w.quarantine_until));
            let mut events =
                queue::worker_seen(task_queue_id, worker_group, worker_id, last_seen, now);
            for e in &events {
                overlay.apply(e);
            }
            let quarantined = quarantine_until.is_some_and(|q| q > now);
            let mut claims = Vec::new();
            if !quarantined {
                let skip = overlay
                    .claimed_in_batch
                    .get(task_queue_id.as_str())
                    .copied()
                    .unwrap_or(0);
                let candidates = overlay
                    .view
                    .pending(task_queue_id.as_str(), skip + max * 2 + 8)?;
                for (task_id, run_id) in candidates {
                    if claims.len() >= *max {
                        break;
                    }
                    let Some(task) = overlay.task(&task_id)? else {
                        continue;
                    };
                    let Ok(claimed) =
                        queue::claim_run(task, run_id, worker_group, worker_id, now, limits)
                    else {
                        continue;
                    };
                    for e in &claimed {
                        overlay.apply(e);
                    }
                    events.extend(claimed);
                    if let Some(t) = overlay.task(&task_id)? {
                        claims.push((t.clone(), run_id));
                    }
                }
                *overlay
                    .claimed_in_batch
                    .entry(task_queue_id.as_str().to_string())
                    .or_default() += claims.len();
            }
            Ok((events, Outcome::Claims(claims)))
        }
        QueueCommand::ClaimTask {
            task_id,
            run_id,
            worker_group,
            worker_id,
        } => {
            let t = overlay.existing_task(task_id)?;
            queue::claimable_before_deadline(t, now)?;
            // a quarantined worker claims nothing (answered `{}`), as claimWork gives it none
            let task_queue_id = t.definition.task_queue_id.clone();
            let key = queue::worker_key(&task_queue_id, worker_group, worker_id);
            let quarantine_until = match overlay.quarantined.get(&key).copied() {
                Some(until) => Some(until),
                None => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .and_then(|w| w.quarantine_until),
            };
            if quarantine_until.is_some_and(|q| q > now) {
                return Ok((vec![], Outcome::Claims(vec![])));
            }
            let t = overlay.existing_task(task_id)?;
            let events = queue::claim_run(t, *run_id, worker_group, worker_id, now, limits)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ReclaimTask { task_id, run_id } => {
            let t = overlay.existing_task(task_id)?;
            let mut events = queue::reclaim_run(t, *run_id, now, limits)?;
            // upstream counts a reclaim as its worker being seen (lastDateActive, expiry)
            let run = t.runs.get(*run_id as usize);
            if let Some((Some(group), Some(worker))) =
                run.map(|r| (r.worker_group.clone(), r.worker_id.clone()))
            {
                let queue_id = t.definition.task_queue_id.clone();
                let key = queue::worker_key(&queue_id, &group, &worker);
                let last_seen = match overlay.workers_seen.get(&key) {
                    Some(seen) => *seen,
                    None => overlay
                        .view
                        .worker(queue_id.as_str(), &group, &worker)?
                        .and_then(|w| w.last_date_active),
                };
                events.extend(queue::worker_seen(
                    &queue_id, &group, &worker, last_seen, now,
                ));
            }
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::Report {
            task_id,
            run_id,
            reason,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::report(t, *run_id, *reason, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExpireClaim {
            task_id,
            run_id,
            taken_until,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::expire_claim(t, *run_id, *taken_until, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExceedDeadline { task_id } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::exceed_deadline(t, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::SatisfyDependency {
            task_id,
            dependency,
            resolution,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::satisfy_dependency(t, *dependency, *resolution, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ChangePriority {
            task_id,
            priority,
            in_group,
        } => {
            let t = overlay.existing_task(task_id)?;
            let events = queue::change_priority(t, *priority, *in_group, now)?;
            task_outcome(overlay, task_id, events)
        }
        QueueCommand::ExpireTask { task_id } => {
            let events = match overlay.task(task_id)? {
                Some(t) => queue::expire_task(t, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::ExpireArtifact {
            task_id,
            run_id,
            name,
        } => {
            let events = match overlay.artifact(task_id, *run_id, name)? {
                Some(a) => queue::expire_artifact(*task_id, *run_id, &a, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::ExpireTaskGroup { task_group_id } => {
            let events = match overlay.group(task_group_id)? {
                Some(g) => queue::expire_group(&g, now)?,
                None => vec![],
            };
            done(overlay, events)
        }
        QueueCommand::SealTaskGroup { task_group_id } => {
            let g = overlay.group(task_group_id)?.ok_or_else(|| {
                QueueError::Input(format!("task group {task_group_id} not found"))
            })?;
            let events = queue::seal_group(&g, now)?;
            for e in &events {
                overlay.apply(e);
            }
            let g = overlay.group(task_group_id)?.unwrap_or(g);
            Ok((events, Outcome::Group(g)))
        }
        QueueCommand::RecordGroupPriorityChange {
            task_group_id,
            priority,
            tasks_affected,
        } => {
            let g = overlay.group(task_group_id)?.ok_or_else(|| {
                QueueError::Input(format!("task group {task_group_id} not found"))
            })?;
            let events = queue::record_group_priority_change(&g, *priority, *tasks_affected, now)?;
            for e in &events {
                overlay.apply(e);
            }
            Ok((events, Outcome::Group(g)))
        }
        QueueCommand::CreateArtifact {
            task_id,
            run_id,
            artifact,
        } => {
            let t = overlay.task(task_id)?.cloned();
            let existing = overlay.artifact(task_id, *run_id, &artifact.name)?;
            let events = queue::create_artifact(
                t.as_ref(),
                *run_id,
                existing.as_ref(),
                artifact.clone(),
                now,
            )?;
            for e in &events {
                overlay.apply(e);
            }
            let stored = overlay
                .artifact(task_id, *run_id, &artifact.name)?
                .unwrap_or_else(|| artifact.clone());
            Ok((events, Outcome::Artifact(stored)))
        }
        QueueCommand::FinishArtifact {
            task_id,
            run_id,
            name,
            upload_id,
            derived_upload_id,
        } => {
            let existing = overlay.artifact(task_id, *run_id, name)?;
            let events = queue::finish_artifact(
                *task_id,
                *run_id,
                existing.as_ref(),
                *upload_id,
                *derived_upload_id,
                now,
            )?;
            done(overlay, events)
        }
        QueueCommand::QuarantineWorker {
            task_queue_id,
            worker_group,
            worker_id,
            until,
            info,
            by,
        } => {
            // a worker declared earlier in the batch counts
            let key = queue::worker_key(task_queue_id, worker_group, worker_id);
            if !overlay.workers_seen.contains_key(&key)
                && overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .is_none()
            {
                return Err(QueueError::Input("worker not found".into()).into());
            }
            let events = vec![QueueEvent::WorkerQuarantined {
                task_queue_id: task_queue_id.clone(),
                worker_group: worker_group.clone(),
                worker_id: worker_id.clone(),
                until: *until,
                info: info.clone(),
                by: by.clone(),
                at: now,
            }];
            done(overlay, events)
        }
        QueueCommand::DeclareWorker {
            task_queue_id,
            worker_group,
            worker_id,
            expires,
        } => {
            // without an expiry, as upstream's coalesce: a live worker keeps its own, a new or
            // expired one gets a day
            let stored = match expires {
                Some(_) => None,
                None => overlay
                    .view
                    .worker(task_queue_id.as_str(), worker_group, worker_id)?
                    .map(|w| (w.expires, w.quarantine_until)),
            };
            let expires = queue::declared_expiry(*expires, stored, now);
            // the records' expiry is never shortened (the projection keeps the later one)
            let events = vec![QueueEvent::WorkerSeen {
                task_queue_id: task_queue_id.clone(),
                worker_group: worker_group.clone(),
                worker_id: worker_id.clone(),
                at: now,
                expires,
            }];
            done(overlay, events)
        }
    }
}
