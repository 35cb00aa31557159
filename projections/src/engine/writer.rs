//! The writer thread: drains the channel, decides a batch, appends it in one durable write,
//! folds it into the projection, then answers.

use super::decide::{decide, Overlay};
use super::*;

pub(super) struct Writer<L> {
    pub(super) view: QueueView,
    pub(super) log: Arc<L>,
    pub(super) handle: tokio::runtime::Handle,
    pub(super) limits: Limits,
    pub(super) pending: Arc<Notify>,
    pub(super) role: WriterRole,
    pub(super) next_offset: u64,
    pub(super) stats: Arc<CommitStats>,
}

impl<L: EventLog + 'static> Writer<L> {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        loop {
            let (view, log, role) = (&self.view, &*self.log, &self.role);
            let took = self.handle.block_on(tend(
                role,
                log,
                QUEUE_TOPIC,
                QUEUE_PARTITION,
                || async move {
                    catch_up(view, log, Some(role))
                        .await
                        .map_err(|e| e.to_string())
                },
            ));
            if let Some(position) = took {
                self.next_offset = position;
                // runs the projection had not shown before may be pending
                self.pending.notify_waiters();
            }
            let writing = self.role.is_writer();
            let wait = if writing { WRITER_CHECK } else { FOLLOW_POLL };
            // the timer must be made inside the runtime
            let next = self
                .handle
                .block_on(async { tokio::time::timeout(wait, rx.recv()).await });
            let first = match next {
                Err(_) => continue,
                Ok(None) => return,
                Ok(Some(job)) => job,
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            if !writing {
                for job in jobs {
                    let refused = EngineError::Unavailable(LogError::NotWriter.to_string());
                    job.answer(Err(refused));
                }
                continue;
            }
            if !self.commit(jobs) {
                self.role.lost();
            }
        }
    }

    /// Decides, appends and applies a batch and answers its callers; false when the append
    /// failed (this process may no longer write the partition).
    pub(super) fn commit(&mut self, mut jobs: Vec<Job>) -> bool {
        let now = Millis::now();
        let started = std::time::Instant::now();
        self.stats.batch.observe(jobs.len() as f64);
        for job in &jobs {
            self.stats
                .wait
                .observe_duration(started.duration_since(job.arrived));
        }
        let max = self.log.max_record_bytes();
        let decided = loop {
            match self.decide_batch(&jobs, now, max) {
                Ok(decided) => break decided,
                // those commands are refused, and the rest decided again without them (an
                // event's size is its command's, so a second pass rarely finds another)
                Err(Undecided::TooLarge(refused)) => {
                    for (i, why) in refused.into_iter().rev() {
                        jobs.remove(i)
                            .answer(Err(EngineError::TooLarge(why.to_string())));
                    }
                }
                // the batch's events cannot all be numbered and encoded: none is written
                Err(Undecided::Failed(e)) => {
                    tracing::error!(error = %e, "group commit failed");
                    for job in jobs {
                        job.answer(Err(EngineError::Unavailable(e.to_string())));
                    }
                    return false;
                }
            }
        };
        let DecidedBatch {
            envelopes,
            records,
            results,
            became_pending,
        } = decided;
        if !envelopes.is_empty() {
            if let Err(e) = self.append_and_apply(&envelopes, records) {
                tracing::error!(error = %e, "group commit failed");
                for (job, result) in jobs.into_iter().zip(results) {
                    job.answer(result.and(Err(EngineError::Unavailable(e.to_string()))));
                }
                return false;
            }
        }
        for (job, result) in jobs.into_iter().zip(results) {
            job.answer(result);
        }
        self.stats.commit.observe_duration(started.elapsed());
        if became_pending {
            self.pending.notify_waiters();
        }
        true
    }

    /// Decides every job of a batch against the projection and the jobs before it, and
    /// numbers and encodes their events.
    pub(super) fn decide_batch(
        &self,
        jobs: &[Job],
        now: Millis,
        max: Option<usize>,
    ) -> Result<DecidedBatch, Undecided> {
        let mut overlay = Overlay::new(&self.view);
        let mut out = DecidedBatch {
            envelopes: Vec::new(),
            records: Vec::new(),
            results: Vec::with_capacity(jobs.len()),
            became_pending: false,
        };
        let mut refused = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let first = out.records.len();
            let (events, outcome) = match decide(&mut overlay, &job.command, now, &self.limits) {
                Ok(decided) => decided,
                Err(e) => {
                    out.results.push(Err(e));
                    continue;
                }
            };
            for event in events {
                out.became_pending |= matches!(event, QueueEvent::RunScheduled { .. });
                let stream_id = event.stream().id();
                let sequence = overlay
                    .next_sequence(&stream_id)
                    .map_err(|e| Undecided::Failed(e.into()))?;
                let envelope = Envelope {
                    event_id: EventId::new(),
                    stream_id,
                    sequence,
                    time: now,
                    actor: job.actor.clone(),
                    causation_id: job.causation,
                    writer_epoch: 1,
                    payload: event,
                };
                let record = Record::of(&envelope, envelope.payload.type_name())
                    .map_err(|e| Undecided::Failed(StoreError::from(e).into()))?;
                out.records.push(record);
                out.envelopes.push(envelope);
            }
            if let Some(why) = oversized(&out.records[first..], max) {
                refused.push((i, why));
            }
            out.results.push(Ok(outcome));
        }
        if refused.is_empty() {
            Ok(out)
        } else {
            Err(Undecided::TooLarge(refused))
        }
    }

    pub(super) fn append_and_apply(
        &mut self,
        envelopes: &[Envelope<QueueEvent>],
        records: Vec<Record>,
    ) -> Result<(), EngineError> {
        let started = std::time::Instant::now();
        let appended = self
            .handle
            .block_on(self.log.append(QUEUE_TOPIC, QUEUE_PARTITION, records))
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        self.stats.append.observe_duration(started.elapsed());
        // a crash here leaves the log ahead of the projection: the next start folds the rest
        #[cfg(feature = "failpoints")]
        fail::fail_point!("queue-after-append");
        if appended.prior != self.next_offset {
            // records this writer had not seen came first (or markers it skips): fold from the
            // log, which brings our own events along, until it has (a read may come back
            // short); answering before would show callers a projection without their events
            let (view, log) = (&self.view, &*self.log);
            let reached = self
                .handle
                .block_on(fold_until(appended.next, || catch_up(view, log, None)))?;
            if let Reached::Short(position) = reached {
                self.role.set_applied(position);
                return Err(EngineError::Unavailable(unseen_append(
                    appended.next,
                    position,
                )));
            }
        } else {
            apply_queue(&self.view, &appended.offsets, appended.next, envelopes)?;
        }
        self.next_offset = appended.next;
        self.role.set_applied(self.next_offset);
        Ok(())
    }
}

/// A batch decided: its envelopes and their encoded records, each job's result in the jobs'
/// order, and whether a run became pending.
pub(super) struct DecidedBatch {
    envelopes: Vec<Envelope<QueueEvent>>,
    records: Vec<Record>,
    results: Vec<Result<Outcome, EngineError>>,
    became_pending: bool,
}

/// Why a batch was not decided.
pub(super) enum Undecided {
    /// These jobs (by index) would record events larger than the log takes.
    TooLarge(Vec<(usize, Oversized)>),
    /// An event could not be numbered or encoded.
    Failed(EngineError),
}
