//! Signed checkpoints of the log's hash chains, and their verification.

use super::*;

/// A signed statement that the first `count` records of a partition hash-chain to `head`.
/// An auditor who keeps checkpoints can later prove that the server's log still begins with
/// exactly what was signed, without trusting the server: the signature covers the head, and
/// the head covers every record before it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub topic: String,
    pub partition: u32,
    pub count: u64,
    /// The chain link after record `count - 1` (hex; all zeros for an empty partition).
    pub head: String,
    /// When it was signed (RFC 3339).
    pub time: String,
    /// The signer's Ed25519 public key (hex).
    pub public_key: String,
    /// Ed25519 over `signed_text()` (hex).
    pub signature: String,
}

impl Checkpoint {
    fn signed_text(&self) -> String {
        format!(
            "taskledger-checkpoint-v1\n{}\n{}\n{}\n{}\n{}",
            self.topic, self.partition, self.count, self.head, self.time
        )
    }

    /// Signs the head of a partition with `key`.
    pub fn sign(
        key: &ring::signature::Ed25519KeyPair,
        topic: &str,
        partition: u32,
        count: u64,
        head: &str,
        time: &str,
    ) -> Checkpoint {
        use ring::signature::KeyPair;
        let mut cp = Checkpoint {
            topic: topic.to_string(),
            partition,
            count,
            head: head.to_string(),
            time: time.to_string(),
            public_key: hex(key.public_key().as_ref()),
            signature: String::new(),
        };
        cp.signature = hex(key.sign(cp.signed_text().as_bytes()).as_ref());
        cp
    }

    /// Whether the signature holds for the key the checkpoint names.
    pub fn signature_ok(&self) -> bool {
        let (Some(key), Some(sig)) = (unhex(&self.public_key), unhex(&self.signature)) else {
            return false;
        };
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(self.signed_text().as_bytes(), &sig)
            .is_ok()
    }
}

/// Carries each topic's chain walk (partition 0) on from `walked` (one per topic) to the
/// topic's end, and reports them as `verify_chain` reports the embedded log's partitions.
/// Walking on from an earlier result reads only what came since.
pub async fn walk_kafka_chains(
    log: &KafkaLog,
    topics: &[&str],
    walked: &mut [ChainCheck],
) -> Result<ChainReport, StoreError> {
    let mut report = ChainReport::default();
    for (topic, check) in topics.iter().zip(walked.iter_mut()) {
        *check = log.walk_chain(topic, 0, check.clone(), u64::MAX).await?;
        report.partitions.push((topic.to_string(), 0, check.events));
        report.heads.push(hex(&check.head));
        if let Some(offset) = check.broken_at {
            report.broken.get_or_insert(BrokenLink {
                topic: topic.to_string(),
                partition: 0,
                offset,
                reason: format!(
                    "the chain link does not follow from the {} events before it",
                    check.events
                ),
            });
        }
    }
    Ok(report)
}

/// Signs the heads a chain walk verified; `None` if it found a break.
pub fn sign_heads(
    report: &ChainReport,
    key: &ring::signature::Ed25519KeyPair,
    time: &str,
) -> Option<Vec<Checkpoint>> {
    if report.broken.is_some() {
        return None;
    }
    let cps = report
        .partitions
        .iter()
        .zip(&report.heads)
        .map(|((topic, partition, count), head)| {
            Checkpoint::sign(key, topic, *partition, *count, head, time)
        })
        .collect();
    Some(cps)
}

/// Checks a checkpoint against a Kafka topic: the signature, then the chain of the first
/// `count` valid events (each one's link header recomputed) must end in the signed head.
pub async fn verify_kafka_checkpoint(log: &KafkaLog, cp: &Checkpoint) -> Result<(), String> {
    if !cp.signature_ok() {
        return Err("the signature does not hold".into());
    }
    let check = log
        .walk_chain(&cp.topic, cp.partition, ChainCheck::start(), cp.count)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(offset) = check.broken_at {
        return Err(format!(
            "the chain breaks at offset {offset}, after {} events",
            check.events
        ));
    }
    prefix_verdict(cp, check.events, &check.head, "the topic", "events")
}

/// A checkpoint's verdict once the partition's first records were walked: `walked` of them
/// (at most `cp.count`) chained to `head`.
fn prefix_verdict(
    cp: &Checkpoint,
    walked: u64,
    head: &[u8; 32],
    holder: &str,
    unit: &str,
) -> Result<(), String> {
    if walked < cp.count {
        return Err(format!(
            "{holder} holds {walked} {unit}, {} were signed",
            cp.count
        ));
    }
    if hex(head) != cp.head {
        return Err(format!(
            "the first {} {unit} no longer chain to the signed head",
            cp.count
        ));
    }
    Ok(())
}

/// Checks a checkpoint against the log: the signature, then the chain recomputed from the
/// partition's first record up to `count` must end in the signed head. The error says which
/// holds no longer.
pub fn verify_checkpoint(db: &DB, cp: &Checkpoint) -> Result<(), String> {
    if !cp.signature_ok() {
        return Err("the signature does not hold".into());
    }
    let log = cf(db, keys::CF_LOG).map_err(|e| e.to_string())?;
    let start = keys::log_key(&cp.topic, cp.partition, 0);
    let prefix = keys::log_prefix(&cp.topic, cp.partition);
    let mut link = CHAIN_START;
    let mut n = 0u64;
    for item in db.iterator_cf(log, IteratorMode::From(&start, Direction::Forward)) {
        if n == cp.count {
            break;
        }
        let (k, v) = item.map_err(|e| e.to_string())?;
        if !k.starts_with(&prefix) {
            break;
        }
        if keys::parse_log_key(&k).map(|(_, _, o)| o) != Some(n) {
            return Err(format!("gap at offset {n}"));
        }
        link = chain_link(&link, n, &v);
        n += 1;
    }
    prefix_verdict(cp, n, &link, "the log", "records")
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;

    fn key() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn a_checkpoint_signs_exactly_its_fields() {
        let k = key();
        let cp = Checkpoint::sign(
            &k,
            "taskledger.queue",
            0,
            42,
            &"ab".repeat(32),
            "2026-11-28T00:00:00Z",
        );
        assert!(cp.signature_ok());
        for tampered in [
            Checkpoint {
                count: 41,
                ..cp.clone()
            },
            Checkpoint {
                head: "cd".repeat(32),
                ..cp.clone()
            },
            Checkpoint {
                topic: "taskledger.auth".into(),
                ..cp.clone()
            },
            Checkpoint {
                public_key: Checkpoint::sign(&key(), "t", 0, 0, "", "").public_key,
                ..cp.clone()
            },
            Checkpoint {
                signature: "00".into(),
                ..cp.clone()
            },
        ] {
            assert!(!tampered.signature_ok(), "{tampered:?}");
        }
    }
}
