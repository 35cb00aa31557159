//! `serve`'s audit services: signed checkpoints of the log's hash chains, and the periodic
//! rebuild of every projection compared with the live one.

use crate::secrets::stored_secret;
use crate::{metrics, ALL_TOPICS};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use taskledger_core::log::EventLog;
use taskledger_projections::{store, KafkaLog};

/// The Ed25519 key that signs checkpoints: TASKLEDGER_CHECKPOINT_KEY or the data directory's.
pub(crate) fn checkpoint_key(data_dir: &Path) -> Result<ring::signature::Ed25519KeyPair> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let encoded = match std::env::var("TASKLEDGER_CHECKPOINT_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => {
            stored_secret(&data_dir.join("checkpoint-key"), || {
                let rng = ring::rand::SystemRandom::new();
                let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .expect("the system RNG works");
                b64.encode(pkcs8.as_ref())
            })?
            .0
        }
    };
    let der = b64
        .decode(encoded.trim())
        .context("the checkpoint key is not base64")?;
    ring::signature::Ed25519KeyPair::from_pkcs8(&der)
        .map_err(|e| anyhow::anyhow!("the checkpoint key is not an Ed25519 PKCS#8 key: {e}"))
}

/// One walk of the log's hash chains (every partition), as `run_checkpoints` repeats it.
pub(crate) type ChainWalk = Box<
    dyn FnMut() -> std::pin::Pin<
            Box<
                dyn std::future::Future<Output = Result<taskledger_projections::audit::ChainReport>>
                    + Send,
            >,
        > + Send,
>;

/// The embedded log's walk: the whole chain each time (it runs at ~1 M events/s).
pub(crate) fn embedded_chain_walk(db: Arc<rocksdb::DB>) -> ChainWalk {
    Box::new(move || {
        let db = db.clone();
        Box::pin(async move {
            let report = tokio::task::spawn_blocking(move || {
                taskledger_projections::audit::verify_chain(&db)
            })
            .await??;
            Ok(report)
        })
    })
}

/// The Kafka topics' walk: each walk carries on from where the previous one stopped, so only
/// new events are read (a restart walks from offset 0 once).
pub(crate) fn kafka_chain_walk(log: Arc<KafkaLog>) -> ChainWalk {
    use taskledger_projections::kafka_log::ChainCheck;
    let walked = Arc::new(tokio::sync::Mutex::new(vec![
        ChainCheck::start();
        ALL_TOPICS.len()
    ]));
    Box::new(move || {
        let (log, walked) = (log.clone(), walked.clone());
        Box::pin(async move {
            let mut walked = walked.lock().await;
            Ok(
                taskledger_projections::audit::walk_kafka_chains(&log, &ALL_TOPICS, &mut walked)
                    .await?,
            )
        })
    })
}

/// Every `every`: walk the chains, record the outcome for /metrics, and append signed
/// checkpoints of the verified heads to `<data-dir>/checkpoints.jsonl`.
pub(crate) async fn run_checkpoints(
    mut walk: ChainWalk,
    key: Arc<ring::signature::Ed25519KeyPair>,
    file: PathBuf,
    every: Duration,
    stats: Arc<metrics::AuditStats>,
) {
    use std::sync::atomic::Ordering;
    loop {
        tokio::time::sleep(every).await;
        let done = async {
            let report = walk().await?;
            let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            stats.verified_events.store(
                report.partitions.iter().map(|p| p.2).sum(),
                Ordering::Relaxed,
            );
            stats
                .last_run
                .store(chrono::Utc::now().timestamp(), Ordering::Relaxed);
            let Some(cps) = taskledger_projections::audit::sign_heads(&report, &key, &time) else {
                stats.chain_ok.store(0, Ordering::Relaxed);
                if let Some(b) = report.broken {
                    tracing::error!(
                        topic = b.topic,
                        offset = b.offset,
                        reason = b.reason,
                        "the log's hash chain is broken"
                    );
                }
                return Ok(());
            };
            stats.chain_ok.store(1, Ordering::Relaxed);
            let mut lines = String::new();
            for cp in cps {
                lines.push_str(&serde_json::to_string(&cp)?);
                lines.push('\n');
            }
            use tokio::io::AsyncWriteExt;
            let mut out = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .await?;
            out.write_all(lines.as_bytes()).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "checkpointing failed");
        }
    }
}

/// Every `every`: rebuild each projection from the log into a scratch database and compare it
/// with the live one as it stood when the run began (a secondary instance of the server's
/// database, caught up once), like `replay --verify`; the outcome goes to /metrics and, when a
/// projection differs, to the log naming the first differing key.
pub(crate) async fn run_projection_checks<L: EventLog + 'static>(
    log: Arc<L>,
    data_dir: PathBuf,
    every: Duration,
    stats: Arc<metrics::AuditStats>,
) {
    use taskledger_projections::audit;
    loop {
        tokio::time::sleep(every).await;
        let (log, data_dir, stats) = (log.clone(), data_dir.clone(), stats.clone());
        let handle = tokio::runtime::Handle::current();
        let done = tokio::task::spawn_blocking(move || -> Result<()> {
            let secondary_dir = data_dir.join("verify-secondary");
            let scratch_dir = data_dir.join("verify-scratch");
            let _ = std::fs::remove_dir_all(&secondary_dir);
            let live = store::open_secondary(&data_dir.join("db"), &secondary_dir)?;
            let mut results = Vec::new();
            for name in audit::PROJECTIONS {
                let _ = std::fs::remove_dir_all(&scratch_dir);
                let scratch = store::open(&scratch_dir)?;
                let report = handle.block_on(audit::replay_from(
                    &*log,
                    &live,
                    &scratch,
                    name,
                    true,
                    &mut |_, _| {},
                ))?;
                drop(scratch);
                let _ = std::fs::remove_dir_all(&scratch_dir);
                match &report.difference {
                    None => tracing::info!(
                        projection = name,
                        events = report.events,
                        "the projection rebuilt from the log equals the live one"
                    ),
                    Some(d) => tracing::error!(
                        projection = name,
                        cf = d.cf,
                        key = d.key,
                        detail = d.detail,
                        "the projection rebuilt from the log differs from the live one"
                    ),
                }
                results.push((
                    *name,
                    i64::from(report.difference.is_none()),
                    report.events,
                    report.rate(),
                ));
            }
            drop(live);
            let _ = std::fs::remove_dir_all(&secondary_dir);
            *stats.projections.lock().expect("projection checks") = results;
            stats.projections_last_run.store(
                chrono::Utc::now().timestamp(),
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(())
        })
        .await;
        if let Ok(Err(e)) | Err(e) = done.map_err(anyhow::Error::from) {
            tracing::error!(error = %e, "verifying the projections failed");
        }
    }
}
