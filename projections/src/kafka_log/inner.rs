//! What a `KafkaLog` shares: the partitions' writers and the pooled readers, and everything
//! they do (blocking calls, run on tokio's blocking pool by the `EventLog` methods); the
//! readers' side is in `readers.rs`.

use super::*;

impl Inner {
    /// Whether this process writes as one node of a group (else it is the single writer).
    pub(super) fn in_group(&self) -> bool {
        self.assigned.lock().expect("assigned lock").is_some()
    }

    pub(super) fn is_assigned(&self, topic: &str, partition: u32) -> bool {
        match &*self.assigned.lock().expect("assigned lock") {
            None => true,
            Some(set) => set.contains(&(topic.to_string(), partition)),
        }
    }

    pub(super) fn kafka_topic(&self, topic: &str) -> String {
        let rest = topic.strip_prefix("taskledger.").unwrap_or(topic);
        format!("{}{rest}", self.config.topic_prefix)
    }

    pub(super) fn writer_slot(
        &self,
        topic: &str,
        partition: u32,
    ) -> Arc<Mutex<Option<PartitionWriter>>> {
        self.writers
            .lock()
            .expect("writers lock")
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// The partition's writer in `slot`, taking the partition first if this process does not
    /// hold it (yet, or any more after a failed append).
    pub(super) fn owned<'s>(
        &self,
        slot: &'s mut Option<PartitionWriter>,
        topic: &str,
        partition: u32,
    ) -> Result<&'s mut PartitionWriter, LogError> {
        if slot.is_none() {
            // in a group, only the engine's explicit acquisition (after which it folds the log
            // before deciding) may take a partition, never an append on its own
            if self.in_group() {
                return Err(LogError::NotWriter);
            }
            *slot = Some(self.acquire(topic, partition)?);
        }
        Ok(slot.as_mut().expect("just set"))
    }

    /// A producer for the partition's writer of `epoch`; transactional with the id
    /// `<topic>-<partition>-<epoch>`, initialised (which fences an earlier producer of that id).
    pub(super) fn producer(
        &self,
        topic: &str,
        partition: u32,
        epoch: u64,
    ) -> Result<FutureProducer, LogError> {
        let timeout_ms = self.config.timeout.as_millis().to_string();
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            // after a commit the broker may answer the next transaction's first request with
            // CONCURRENT_TRANSACTIONS until its markers are written; retry at once, not after
            // the default 100 ms
            .set("retry.backoff.ms", "1")
            .set("message.timeout.ms", &timeout_ms)
            .set("request.timeout.ms", &timeout_ms)
            .set("transaction.timeout.ms", &timeout_ms);
        if self.config.transactions {
            cfg.set(
                "transactional.id",
                format!("{}-{partition}-{epoch}", self.kafka_topic(topic)),
            );
        }
        let producer: FutureProducer = cfg.create().map_err(unavailable)?;
        if self.config.transactions {
            producer
                .init_transactions(self.config.timeout)
                .map_err(log_error)?;
        }
        Ok(producer)
    }

    /// Produces records to a partition (in one transaction when enabled); their offsets.
    pub(super) fn produce(
        &self,
        producer: &FutureProducer,
        topic: &str,
        partition: u32,
        records: &[(String, OwnedHeaders, Vec<u8>)],
    ) -> Result<Vec<u64>, LogError> {
        let kafka_topic = self.kafka_topic(topic);
        if self.config.transactions {
            producer.begin_transaction().map_err(log_error)?;
        }
        let sent: Result<Vec<_>, LogError> = records
            .iter()
            .map(|(key, headers, value)| {
                let record = FutureRecord::to(&kafka_topic)
                    .partition(partition as i32)
                    .key(key.as_str())
                    .payload(value.as_slice())
                    .headers(headers.clone());
                producer.send_result(record).map_err(|(e, _)| log_error(e))
            })
            .collect();
        let outcome = sent.and_then(|futures| {
            // deliveries first (each ends within `message.timeout.ms`): committing with records
            // in flight makes librdkafka flush, which waits in polls of 100 ms
            let offsets = futures::executor::block_on(join_all(futures))
                .into_iter()
                .map(|d| match d {
                    Ok(Ok(d)) => Ok(d.offset as u64),
                    Ok(Err((e, _))) => Err(log_error(e)),
                    Err(_) => Err(unavailable("delivery cancelled")),
                })
                .collect::<Result<Vec<u64>, LogError>>()?;
            if self.config.transactions {
                producer
                    .commit_transaction(self.config.timeout)
                    .map_err(log_error)?;
            }
            Ok(offsets)
        });
        if outcome.is_err() && self.config.transactions {
            let _ = producer.abort_transaction(self.config.timeout);
        }
        outcome
    }

    pub(super) fn stamp(owner: &Owner, headers: OwnedHeaders) -> OwnedHeaders {
        headers
            .insert(Header {
                key: H_EPOCH,
                value: Some(owner.epoch.to_string().as_str()),
            })
            .insert(Header {
                key: H_WRITER,
                value: Some(owner.writer.as_str()),
            })
    }

    /// Takes a partition: fences the current owner at the broker, announces a new epoch, and
    /// checks that the announcement took effect (a concurrent claimant may have won).
    ///
    /// Transactional ids are `<topic>-<partition>-<epoch>`: initialising the current owner's
    /// id fences it (and aborts its open transaction), and the new owner writes under an id of
    /// its own, so no broker's bookkeeping of the aborted transaction can touch its records.
    pub(super) fn acquire(&self, topic: &str, partition: u32) -> Result<PartitionWriter, LogError> {
        for _ in 0..5 {
            let end = self.end(topic, partition)?;
            self.observe_until(topic, partition, end)?;
            let current = self.with_index(topic, partition, |ix| ix.max_epoch());
            if current > 0 && self.config.transactions {
                retire(self.producer(topic, partition, current)?);
            }
            let epoch = current + 1;
            let producer = self.producer(topic, partition, epoch)?;
            let owner = Owner {
                epoch,
                writer: self.writer_id.clone(),
            };
            let body = serde_json::json!({
                "marker": "OwnershipTaken",
                "epoch": epoch,
                "writer": owner.writer,
                "node": self.config.node,
                "time": chrono::Utc::now().to_rfc3339(),
            })
            .to_string()
            .into_bytes();
            let headers = Self::stamp(
                &owner,
                OwnedHeaders::new().insert(Header {
                    key: H_MARKER,
                    value: Some("ownership-taken"),
                }),
            );
            let offsets = self.produce(
                &producer,
                topic,
                partition,
                &[(MARKER_KEY.to_string(), headers, body)],
            )?;
            let marker = offsets[0];
            self.observe_until(topic, partition, marker + 1)?;
            let took = self.with_index(topic, partition, |ix| {
                ix.owner_before(marker + 1) == Some(&owner)
            });
            if took {
                tracing::info!(topic, partition, epoch, "took ownership of the partition");
                let link = self.with_index(topic, partition, |ix| {
                    ix.last_link().map_or(CHAIN_START, |(_, link)| link)
                });
                return Ok(PartitionWriter {
                    producer,
                    owner,
                    last_own: marker,
                    known_end: marker + 1,
                    link,
                });
            }
            tracing::warn!(
                topic,
                partition,
                epoch,
                "another writer announced the same epoch"
            );
        }
        Err(LogError::Fenced)
    }

    pub(super) fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> Result<Appended, LogError> {
        // refused before the producer sees it, which would otherwise cost the writer its role
        if let Some(refused) = oversized(&records, Some(MAX_RECORD_BYTES)) {
            return Err(LogError::Unavailable(refused.to_string()));
        }
        let slot = self.writer_slot(topic, partition);
        let mut slot = slot.lock().expect("writer slot");
        let writer = self.owned(&mut slot, topic, partition)?;
        let mut link = writer.link;
        let prepared: Vec<(String, OwnedHeaders, Vec<u8>)> = records
            .into_iter()
            .map(|r| {
                link = chain_link(&link, &r.key, &r.value);
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: H_EVENT_TYPE,
                        value: Some(r.event_type),
                    })
                    .insert(Header {
                        key: H_SCHEMA,
                        value: Some(SCHEMA_VERSION),
                    })
                    .insert(Header {
                        key: H_EVENT_ID,
                        value: Some(r.event_id.as_str()),
                    })
                    .insert(Header {
                        key: H_CHAIN,
                        value: Some(hex(&link).as_str()),
                    });
                (r.key, Self::stamp(&writer.owner, headers), r.value)
            })
            .collect();
        let offsets = match self.produce(&writer.producer, topic, partition, &prepared) {
            Ok(o) if !o.is_empty() => o,
            Ok(_) => return Err(LogError::Corrupt("append of no records".into())),
            Err(e) => {
                // the producer may be unusable (fenced, fatal, timed out mid-transaction): the
                // next append takes the partition afresh
                retire_writer(slot.take());
                return Err(e);
            }
        };
        let first = offsets[0];
        let last = *offsets.last().expect("not empty");
        // with transactions each commit leaves one control record after the last record
        let gap = if self.config.transactions { 2 } else { 1 };
        let prior = if first == writer.last_own + gap {
            writer.known_end
        } else {
            // something came between: see what, and whether it superseded us
            let before = self.observe_until(topic, partition, first)?;
            self.observe_until(topic, partition, last + 1)?;
            let ours = self.with_index(topic, partition, |ix| {
                ix.owner_before(first) == Some(&writer.owner)
            });
            if !ours {
                retire_writer(slot.take());
                return Err(LogError::Fenced);
            }
            before.map_or(writer.known_end, |o| o + 1)
        };
        writer.last_own = last;
        writer.known_end = last + 1;
        writer.link = link;
        Ok(Appended {
            prior,
            offsets,
            next: last + 1,
        })
    }

    /// Runs `f` on the partition's epoch index: the one in memory, else the copy kept in the
    /// store (see `KafkaLog::keep_indexes_in`), else an empty one, observed from offset 0.
    pub(super) fn with_index<T>(
        &self,
        topic: &str,
        partition: u32,
        f: impl FnOnce(&mut EpochIndex) -> T,
    ) -> T {
        let key = (topic.to_string(), partition);
        {
            let mut epochs = self.epochs.lock().expect("epochs lock");
            if let Some(ix) = epochs.get_mut(&key) {
                return f(ix);
            }
        }
        // the first use in this process: the kept copy (which `serve` checked against the
        // broker on start, `check_kept`), loaded outside the lock
        let kept = self.kept_index(topic, partition);
        let mut epochs = self.epochs.lock().expect("epochs lock");
        f(epochs.entry(key).or_insert(kept))
    }

    /// The index kept in the store for a partition, or an empty one. `serve` checked every
    /// copy against the broker when it started (`check_kept`).
    fn kept_index(&self, topic: &str, partition: u32) -> EpochIndex {
        match self.kept_copy(topic, partition) {
            Some(ix) => {
                tracing::info!(
                    topic,
                    partition,
                    from = ix.scanned(),
                    "resuming the kept epoch index"
                );
                ix
            }
            None => {
                // a test's proof that a restart did not read the partition from its start
                #[cfg(feature = "failpoints")]
                fail::fail_point!("kafka-index-from-start");
                EpochIndex::default()
            }
        }
    }

    /// The copy of a partition's index kept in the store, if there is one that can be read.
    fn kept_copy(&self, topic: &str, partition: u32) -> Option<EpochIndex> {
        let key = keys::kafka_epochs(&self.kafka_topic(topic), partition);
        let bytes = self.store.get().and_then(|db| {
            let meta = crate::store::cf(db, keys::CF_META).ok()?;
            db.get_cf(meta, &key).ok().flatten()
        })?;
        decode_kept(topic, partition, &bytes)
    }

    /// Checks that the partition still holds what the kept copy of its index says was read
    /// there: no fewer positions, and the same record at the copy's last valid event and at
    /// its last effective marker (a chain link and a writer's id, which another log holds at
    /// that offset only by copying this one). A topic deleted and created again, or another
    /// broker behind the same address, fails it: folding that log on top of the projections
    /// built from the first would mix two histories, so the caller refuses to start.
    pub(super) fn check_kept(
        &self,
        topic: &str,
        partition: u32,
        ix: &EpochIndex,
    ) -> Result<(), LogError> {
        let (low, end) = self.watermarks(topic, partition)?;
        let differs = |why: String| {
            Err(LogError::Corrupt(format!(
                "Kafka topic {} partition {partition} is not the log this data directory was \
                 built from: {why} (if the topic was deleted and created again, start on an \
                 empty data directory, which is rebuilt from the log)",
                self.kafka_topic(topic)
            )))
        };
        if ix.scanned() > end {
            return differs(format!(
                "it ends at offset {end}, but {} positions of it were read",
                ix.scanned()
            ));
        }
        let mut expected = Vec::new();
        if let Some((at, link)) = ix.last_link() {
            let stamp = ix.owner_before(at).cloned();
            expected.push((at, (Seen::Event(stamp), Some(link))));
        }
        if let Some((at, owner)) = ix.last_marker() {
            expected.push((at, (Seen::Marker(owner.clone()), None)));
        }
        let gone = |at: u64, low: u64| {
            tracing::warn!(
                topic,
                partition,
                offset = at,
                low,
                "cannot check the kept epoch index: the record it ends with is gone (retention)"
            );
        };
        for (at, record) in expected {
            if at < low {
                gone(at, low);
                continue;
            }
            match self.record_at(topic, partition, at)? {
                Some(found) if found == record => {}
                Some(_) => {
                    return differs(format!(
                        "the record at offset {at} is not the one read there before"
                    ))
                }
                // nothing a reader sees there: retention may have removed it meanwhile (the
                // reader then starts at the new low watermark), else it is not our record
                None => match self.watermarks(topic, partition)? {
                    (low, _) if low > at => gone(at, low),
                    _ => {
                        return differs(format!(
                            "no record at offset {at}, where one was read before"
                        ))
                    }
                },
            }
        }
        Ok(())
    }

    /// Keeps a copy of the partition's index in the store, if there is one, when it has moved
    /// on since the last copy by `KEEP_EVERY` positions or for `KEEP_AFTER` (or, with `now`,
    /// whenever it moved on). A copy is taken under the index's lock, so it is whole for the
    /// positions it covers; one that is lost or stale (a crash) only means observing again
    /// from an earlier position.
    pub(super) fn keep_index(&self, topic: &str, partition: u32, now: bool) {
        let Some(db) = self.store.get() else {
            return;
        };
        let partition_key = (topic.to_string(), partition);
        // held until the copy is written, so copies are written in the order they were taken
        let mut kept = self.kept.lock().expect("kept lock");
        let copy = {
            let epochs = self.epochs.lock().expect("epochs lock");
            let Some(ix) = epochs.get(&partition_key) else {
                return;
            };
            let due = match kept.get(&partition_key) {
                None => true,
                Some(&(at, when)) => {
                    ix.scanned() > at
                        && (now || ix.scanned() - at >= KEEP_EVERY || when.elapsed() >= KEEP_AFTER)
                }
            };
            if !due {
                return;
            }
            kept.insert(partition_key, (ix.scanned(), Instant::now()));
            postcard::to_stdvec(ix)
        };
        let written = copy.map_err(|e| e.to_string()).and_then(|body| {
            let mut bytes = Vec::with_capacity(body.len() + 1);
            bytes.push(INDEX_FORMAT);
            bytes.extend_from_slice(&body);
            let meta = crate::store::cf(db, keys::CF_META).map_err(|e| e.to_string())?;
            let key = keys::kafka_epochs(&self.kafka_topic(topic), partition);
            db.put_cf(meta, key, bytes).map_err(|e| e.to_string())
        });
        if let Err(error) = written {
            tracing::warn!(topic, partition, %error, "cannot keep the epoch index");
        }
    }

    /// Where the partition ends for a read-committed reader: librdkafka (since 1.7.1) asks
    /// with the consumer's isolation level, so this is the last stable offset, short of a
    /// transaction still open. Every position before it holds a committed record, an aborted
    /// one or a transaction marker, all of which a reader moves past.
    pub(super) fn end(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        self.watermarks(topic, partition).map(|(_, end)| end)
    }

    /// Where the partition starts (its low watermark: retention removed what lies before) and
    /// where it ends (see `end`).
    fn watermarks(&self, topic: &str, partition: u32) -> Result<(u64, u64), LogError> {
        self.meta
            .fetch_watermarks(
                &self.kafka_topic(topic),
                partition as i32,
                self.config.timeout,
            )
            .map(|(low, high)| (low.max(0) as u64, high.max(0) as u64))
            .map_err(unavailable)
    }
}

/// A kept copy of a partition's index as stored (`INDEX_FORMAT`, then postcard), if it can be
/// read.
pub(super) fn decode_kept(topic: &str, partition: u32, bytes: &[u8]) -> Option<EpochIndex> {
    let decoded = match bytes.split_first() {
        Some((&INDEX_FORMAT, body)) => postcard::from_bytes::<EpochIndex>(body).ok(),
        _ => None,
    };
    if decoded.is_none() {
        tracing::warn!(
            topic,
            partition,
            "a kept epoch index cannot be read: reading the partition from offset 0"
        );
    }
    decoded
}

/// Destroys a producer on a thread of its own: librdkafka's destroy waits for its broker
/// threads, which can take long while the broker is unreachable, and no command should wait
/// for that.
pub(super) fn retire(producer: FutureProducer) {
    close_apart(producer, "kafka-producer-drop");
}

/// Drops a librdkafka client on a thread named `name`: closing one may wait for an
/// unreachable broker.
pub(super) fn close_apart(client: impl Send + 'static, name: &str) {
    let _ = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || drop(client));
}

/// Gives up a partition's writer (after a failed append): its producer is retired.
pub(super) fn retire_writer(writer: Option<PartitionWriter>) {
    if let Some(w) = writer {
        retire(w.producer);
    }
}

/// A read-committed consumer that never joins its group or commits (projections keep their
/// offsets in RocksDB); positions come from `assign`.
pub(super) fn consumer(brokers: &str, writer_id: &str) -> Result<BaseConsumer, LogError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("taskledger-reader-{writer_id}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "10")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(unavailable)
}

pub(super) fn header<'a>(msg: &'a impl Message, name: &str) -> Option<&'a str> {
    let headers = msg.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// The address an ownership marker's body announces (`node`), if any.
pub(super) fn announced_node(marker: &impl Message) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(marker.payload()?).ok()?;
    body.get("node")?.as_str().map(str::to_string)
}

pub(super) fn classify(msg: &impl Message) -> Seen {
    let owner = match (
        header(msg, H_EPOCH).and_then(|e| e.parse().ok()),
        header(msg, H_WRITER),
    ) {
        (Some(epoch), Some(writer)) => Some(Owner {
            epoch,
            writer: writer.to_string(),
        }),
        _ => None,
    };
    match (header(msg, H_MARKER), owner) {
        (Some("ownership-taken"), Some(owner)) => Seen::Marker(owner),
        (_, owner) => Seen::Event(owner),
    }
}
