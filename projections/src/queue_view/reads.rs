//! The projection's reads, as the gateway and the reactors ask them.

use super::*;

impl QueueView {
    pub fn task(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_TASKS,
            &keys::task(id),
            decode_row,
        )
    }

    /// `f` over the task's status, read from its stored bytes without decoding the rest of
    /// the task (`TaskStatusRow`): its payload, metadata and lists are never copied.
    pub fn task_status<R>(
        &self,
        id: &TaskId,
        f: impl FnOnce(TaskStatus<'_>) -> R,
    ) -> Result<Option<R>, StoreError> {
        read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_TASKS,
            &keys::task(id),
            |bytes| {
                let row: TaskStatusRow = codec::decode_borrowed(bytes)?;
                Ok(f(row.status()))
            },
        )
    }

    /// The last sequence applied on `stream` (0 before its first event).
    pub fn stream_sequence(&self, stream: &str) -> Result<u64, StoreError> {
        let seq = read_row(
            &self.db,
            self.recent.as_deref(),
            keys::CF_STREAMS,
            stream.as_bytes(),
            decode_count,
        )?;
        Ok(seq.unwrap_or(0))
    }

    pub fn group(&self, id: &TaskId) -> Result<Option<TaskGroup>, StoreError> {
        get(&self.db, keys::CF_GROUPS, &keys::task(id))
    }

    pub fn artifact(
        &self,
        task: &TaskId,
        run: u32,
        name: &str,
    ) -> Result<Option<Artifact>, StoreError> {
        get(
            &self.db,
            keys::CF_ARTIFACTS,
            &keys::artifact(task, run, name),
        )
    }

    pub fn worker(
        &self,
        q: &str,
        group: &str,
        id: &str,
    ) -> Result<Option<WorkerRecord>, StoreError> {
        get(&self.db, keys::CF_WORKERS, &keys::worker(q, group, id))
    }

    /// A task queue's record, expired or not.
    pub fn task_queue(&self, q: &str) -> Result<Option<TaskQueueRecord>, StoreError> {
        get(&self.db, keys::CF_TASK_QUEUES, &keys::task_queue(q))
    }

    pub fn consumer_offset(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
    ) -> Result<u64, StoreError> {
        let key = keys::consumer_offset(consumer, topic, partition);
        Ok(read_row(&self.db, None, keys::CF_META, &key, decode_count)?.unwrap_or(0))
    }

    pub fn store_consumer_offset(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), StoreError> {
        self.db.put_cf(
            cf(&self.db, keys::CF_META)?,
            keys::consumer_offset(consumer, topic, partition),
            next.to_be_bytes(),
        )?;
        Ok(())
    }

    /// Keys and values under `prefix`, starting after `after` (exclusive), at most `limit`.
    pub fn scan(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let start = match after {
            Some(a) => {
                let mut s = a.to_vec();
                s.push(0);
                s
            }
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        self.visit(cf_name, prefix, &start, |k, v| {
            if out.len() >= limit {
                return false;
            }
            out.push((k.into(), v.into()));
            true
        })?;
        Ok(out)
    }

    /// Hands each key and value under `prefix`, from `start` on in key order, to `visit`
    /// until it returns false: from the mirror when it holds `cf_name`, else the database.
    fn visit(
        &self,
        cf_name: &'static str,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if let Some(map) = self.mirror.read().expect("mirror lock").get(cf_name) {
            for (k, v) in map.range(start.to_vec()..) {
                if !k.starts_with(prefix) || !visit(k, v) {
                    break;
                }
            }
            return Ok(());
        }
        for item in self.db.iterator_cf(
            cf(&self.db, cf_name)?,
            IteratorMode::From(start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Pending runs of a queue in claim order: priority, then time pending.
    pub fn pending(&self, queue: &str, limit: usize) -> Result<Vec<(TaskId, u32)>, StoreError> {
        Ok(self
            .scan(keys::CF_PENDING, &keys::queue_prefix(queue), None, limit)?
            .iter()
            .filter_map(|(k, _)| keys::task_run_suffix(k))
            .collect())
    }

    pub fn count(&self, cf_name: &'static str, queue: &str) -> Result<usize, StoreError> {
        // counted in place: a queue may hold a million pending runs, and copying each entry
        // (as `scan` does) while holding the mirror's lock would stall the writer's folds
        let prefix = keys::queue_prefix(queue);
        let mut n = 0;
        self.visit(cf_name, &prefix, &prefix, |_, _| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    /// Timers due at or before `now`, earliest first.
    pub fn due_timers(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<(Millis, TimerKind, TaskId, u32)>, StoreError> {
        let mut out = Vec::new();
        let mirror = self.mirror.read().expect("mirror lock");
        for k in mirror
            .get(keys::CF_TIMERS)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            let Some(t) = keys::parse_timer(k) else {
                continue;
            };
            if t.0 > now || out.len() >= limit {
                break;
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The time of the earliest timer.
    pub fn next_timer(&self) -> Result<Option<Millis>, StoreError> {
        let mirror = self.mirror.read().expect("mirror lock");
        Ok(mirror
            .get(keys::CF_TIMERS)
            .and_then(|m| m.keys().next())
            .and_then(|k| keys::parse_timer(k))
            .map(|t| t.0))
    }

    pub fn dependents(
        &self,
        task: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        // lets a crash test make the dependency reactor panic on a resolution
        #[cfg(feature = "failpoints")]
        fail::fail_point!("read-dependents");
        self.pairs(keys::CF_DEPENDENTS, task, after, limit)
    }

    pub fn group_members(
        &self,
        group: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs(keys::CF_GROUP_MEMBERS, group, after, limit)
    }

    /// The group's members whose slugid text starts with the base64url digit `digit`
    /// (0 to 63): one bucket of a listing in taskId text order (see `pairs_with_first_digit`).
    pub fn group_members_with_first_digit(
        &self,
        group: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs_with_first_digit(keys::CF_GROUP_MEMBERS, group, digit)
    }

    /// The task's dependents whose slugid text starts with the base64url digit `digit`.
    pub fn dependents_with_first_digit(
        &self,
        task: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        self.pairs_with_first_digit(keys::CF_DEPENDENTS, task, digit)
    }

    /// The second ids of `first`'s pairs whose first byte's top six bits are `digit`: the ids
    /// whose slugid text starts with that digit's character, a contiguous run of the keys.
    fn pairs_with_first_digit(
        &self,
        cf_name: &'static str,
        first: &TaskId,
        digit: u8,
    ) -> Result<Vec<TaskId>, StoreError> {
        let prefix = keys::task(first);
        let mut start = prefix.clone();
        start.push(digit << 2);
        let mut out = Vec::new();
        self.visit(cf_name, &prefix, &start, |k, _| {
            match (k.get(prefix.len()), keys::second_of_pair(k)) {
                (Some(b), Some(id)) if b >> 2 == digit => {
                    out.push(id);
                    true
                }
                _ => false,
            }
        })?;
        Ok(out)
    }

    fn pairs(
        &self,
        cf_name: &'static str,
        first: &TaskId,
        after: Option<&TaskId>,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let after_key = after.map(|a| keys::pair(first, a));
        Ok(self
            .scan(cf_name, &keys::task(first), after_key.as_deref(), limit)?
            .iter()
            .filter_map(|(k, _)| keys::second_of_pair(k))
            .collect())
    }

    pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
        Ok(codec::decode(bytes)?)
    }
}
