//! The readers' side of `Inner`: pooled consumers positioned on a partition, fetching and
//! polling records (blocking calls, run on tokio's blocking pool by the `EventLog` methods).

use super::inner::{announced_node, classify, close_apart, header};
use super::*;

/// Patience with a partition whose reads come back without moving (a slow broker: a read
/// gives up after `READ_PATIENCE`, 300 ms, with what it has), for the readers that know the
/// partition goes on: a long observation or chain walk is not cut short by one slow read.
pub(super) struct Stall(Option<Instant>);

impl Stall {
    pub(super) fn new() -> Stall {
        Stall(None)
    }

    /// After a read that moved on.
    pub(super) fn moved(&mut self) {
        self.0 = None;
    }

    /// After a read that did not move: waits a moment and says to try again, or false once
    /// reads have not moved for `audit::READ_PATIENCE` (10 s).
    pub(super) fn wait(&mut self) -> bool {
        let since = *self.0.get_or_insert_with(Instant::now);
        if since.elapsed() >= crate::audit::READ_PATIENCE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
        true
    }
}

/// A record as `Inner::record_at` finds it: its kind and, for an event, its claimed link.
pub(super) type Found = (Seen, Option<[u8; 32]>);

impl Inner {
    pub(super) fn new_reader(
        &self,
        topic: &str,
        partition: u32,
        at: u64,
    ) -> Result<Reader, LogError> {
        let mut reader = Reader {
            topic: topic.to_string(),
            partition,
            next: u64::MAX,
            consumer: consumer(&self.config.brokers, &self.writer_id)?,
        };
        self.position(&mut reader, at)?;
        Ok(reader)
    }

    /// Assigns a new reader's consumer its partition at `at` (once: see `take_reader`).
    pub(super) fn position(&self, reader: &mut Reader, at: u64) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.kafka_topic(&reader.topic),
            reader.partition as i32,
            Offset::Offset(at as i64),
        )
        .map_err(unavailable)?;
        reader.consumer.assign(&tpl).map_err(unavailable)?;
        reader.next = at;
        Ok(())
    }

    /// A reader of the partition positioned at `at`: an idle one already there if any, else a
    /// new one. A reader's consumer is assigned once, never moved: re-assigning a librdkafka
    /// consumer before it has processed the removal of its previous assignment can stop the
    /// same partition twice, and the second stop's reply aborts the process (an assertion in
    /// `rd_kafka_assignment_partition_stopped`; librdkafka issue 5573, which the bundled 2.12.1
    /// has). It happened under broker outages, when polls lag.
    pub(super) fn take_reader(
        &self,
        topic: &str,
        partition: u32,
        at: u64,
    ) -> Result<Reader, LogError> {
        let found = {
            let mut pool = self.readers.lock().expect("readers lock");
            pool.iter()
                .position(|r| r.topic == topic && r.partition == partition && r.next == at)
                .map(|i| pool.swap_remove(i))
        };
        match found {
            Some(r) => Ok(r),
            None => self.new_reader(topic, partition, at),
        }
    }

    /// Keeps an idle reader for the next read where it stopped; the oldest idle one goes when
    /// the pool is full (its consumer closed on a thread of its own, as closing may wait for
    /// an unreachable broker).
    pub(super) fn put_reader(&self, reader: Reader) {
        let evicted = {
            let mut pool = self.readers.lock().expect("readers lock");
            pool.push(reader);
            (pool.len() > READER_POOL).then(|| pool.remove(0))
        };
        if let Some(old) = evicted {
            close_apart(old, "kafka-reader-drop");
        }
    }

    /// Observes the partition up to `until` (exclusive), so the index knows every marker
    /// before it; returns the last offset this call saw (none if the index had seen them all).
    pub(super) fn observe_until(
        &self,
        topic: &str,
        partition: u32,
        until: u64,
    ) -> Result<Option<u64>, LogError> {
        let mut last_seen = None;
        let mut stall = Stall::new();
        loop {
            let from = self.with_index(topic, partition, |ix| ix.scanned());
            if from >= until {
                return Ok(last_seen);
            }
            let fetched = self.fetch(topic, partition, from, 4096, until)?;
            last_seen = fetched.last_seen.or(last_seen);
            if self.with_index(topic, partition, |ix| ix.scanned()) > from {
                stall.moved();
            } else if !stall.wait() {
                return Err(unavailable(format!(
                    "{topic}/{partition}: cannot read up to offset {until}: nothing came back \
                     at offset {from} within {:?}",
                    crate::audit::READ_PATIENCE
                )));
            }
        }
    }

    /// What a reader finds at `offset`, judged apart from the epoch index (which this leaves
    /// untouched): the record's kind and, for an event, the chain link it claims; `None` when
    /// a reader passes nothing there (an aborted record or a transaction marker). The offset
    /// must lie between the partition's low watermark and its end.
    pub(super) fn record_at(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<Option<Found>, LogError> {
        let reader = self.new_reader(topic, partition, offset)?;
        let mut stall = Stall::new();
        let found = loop {
            match reader.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(msg)) if (msg.offset() as u64) < offset => continue,
                Some(Ok(msg)) if msg.offset() as u64 > offset => break Ok(None),
                Some(Ok(msg)) => {
                    let seen = classify(&msg);
                    let link = match seen {
                        Seen::Event(_) => header(&msg, H_CHAIN).and_then(unhex),
                        Seen::Marker(_) => None,
                    };
                    break Ok(Some((seen, link)));
                }
                Some(Err(e)) => break Err(unavailable(e)),
                None if stall.wait() => continue,
                None => {
                    break Err(unavailable(format!(
                        "{topic}/{partition}: nothing came back at offset {offset} within {:?}",
                        crate::audit::READ_PATIENCE
                    )))
                }
            }
        };
        close_apart(reader, "kafka-check-reader");
        found
    }

    /// Reads from `from`: at most `max` valid events, not past `until`. Classifies everything
    /// it passes with the partition's epoch index.
    pub(super) fn fetch(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
        until: u64,
    ) -> Result<Fetched, LogError> {
        if read_comes_back_short() {
            return Ok(Fetched {
                batch: Batch {
                    records: vec![],
                    next: from,
                },
                last_seen: None,
                links: vec![],
            });
        }
        // markers before `from` must be known to judge what follows
        let scanned = self.with_index(topic, partition, |ix| ix.scanned());
        if scanned < from {
            self.observe_until(topic, partition, from)?;
        }
        let mut reader = self.take_reader(topic, partition, from)?;
        let result = self.poll(&mut reader, from, max, until);
        if result.is_ok() {
            self.put_reader(reader);
        }
        result
    }

    pub(super) fn poll(
        &self,
        reader: &mut Reader,
        from: u64,
        max: usize,
        until: u64,
    ) -> Result<Fetched, LogError> {
        let kafka_topic = self.kafka_topic(&reader.topic);
        let (topic, partition) = (reader.topic.clone(), reader.partition);
        let mut records = Vec::new();
        let mut last_seen = None;
        let mut links = Vec::new();
        let mut next = from;
        let mut last_progress = Instant::now();
        let mut overshot = false;
        while records.len() < max && next < until {
            match reader.consumer.poll(Duration::from_millis(10)) {
                Some(Ok(msg)) => {
                    let offset = msg.offset() as u64;
                    if offset < next {
                        // a record read before: no progress, so patience still runs out
                        if last_progress.elapsed() >= READ_PATIENCE {
                            break;
                        }
                        continue;
                    }
                    if offset >= until {
                        // consumed past the bound: the next read must seek
                        overshot = true;
                        break;
                    }
                    let seen = classify(&msg);
                    let (link, node) = match &seen {
                        Seen::Event(_) => (header(&msg, H_CHAIN).and_then(unhex), None),
                        Seen::Marker(owner) => {
                            (None, announced_node(&msg).map(|n| (owner.epoch, n)))
                        }
                    };
                    // the last valid event's claimed link is kept for a writer taking over
                    let valid = self.with_index(&topic, partition, |ix| {
                        let valid = ix.observe(offset, &seen, link);
                        if let Some((epoch, node)) = node {
                            ix.note_node(offset, epoch, node);
                        }
                        valid
                    });
                    last_seen = Some(offset);
                    next = offset + 1;
                    last_progress = Instant::now();
                    if valid {
                        links.push(link);
                        records.push(Stored {
                            partition,
                            offset,
                            key: msg
                                .key()
                                .map(|k| String::from_utf8_lossy(k).into_owned())
                                .unwrap_or_default(),
                            value: msg.payload().unwrap_or_default().to_vec(),
                        });
                    }
                }
                Some(Err(e)) => return Err(unavailable(e)),
                None => {
                    // past the last visible record: transaction markers may remain, which the
                    // consumer's position moves past
                    let position = reader
                        .consumer
                        .position()
                        .ok()
                        .and_then(|tpl| {
                            tpl.find_partition(&kafka_topic, partition as i32)
                                .and_then(|p| p.offset().to_raw())
                        })
                        .filter(|&p| p >= 0)
                        .map(|p| p as u64)
                        .unwrap_or(next);
                    if position > next {
                        next = position.min(until);
                        self.with_index(&topic, partition, |ix| ix.skip_to(next));
                        continue;
                    }
                    if last_progress.elapsed() >= READ_PATIENCE {
                        break;
                    }
                }
            }
        }
        self.keep_index(&topic, partition, false);
        reader.next = if overshot { u64::MAX } else { next };
        Ok(Fetched {
            batch: Batch { records, next },
            last_seen,
            links,
        })
    }
}
