//! Rebuilding the projections from offset zero into a scratch database and comparing them
//! with the live ones (`taskledger replay`).

use super::*;

/// Where a rebuilt projection first differs from the live one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub cf: &'static str,
    /// Hex of the first differing key.
    pub key: String,
    pub detail: String,
}

/// The result of a replay.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub seconds: f64,
    /// SHA-256 over every projection column family, rebuilt and live (when compared).
    pub rebuilt_digest: String,
    pub live_digest: Option<String>,
    pub difference: Option<Difference>,
}

impl ReplayReport {
    /// Events folded per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds.max(1e-9)
    }
}

/// Projections `replay` knows.
pub const PROJECTIONS: &[&str] = &[
    "queue",
    "auth",
    "worker-manager",
    "object",
    "secrets",
    "index",
    "hooks",
    "notify",
    "github",
];

/// Whether `db` holds the projection `name` at all (a database written by an older taskledger
/// lacks the column families of later projections).
pub fn projection_present(db: &DB, name: &str) -> bool {
    projection_cfs(name)
        .iter()
        .all(|cf_name| db.cf_handle(cf_name).is_some())
}

/// The projections that own one column family each; the queue's are all the others.
const OWN_CF: &[(&str, &str)] = &[
    ("auth", keys::CF_AUTH),
    ("worker-manager", keys::CF_WORKER_MANAGER),
    ("object", keys::CF_OBJECTS),
    ("secrets", keys::CF_SECRETS),
    ("index", keys::CF_INDEX),
    ("hooks", keys::CF_HOOKS),
    ("notify", keys::CF_NOTIFY),
    ("github", keys::CF_GITHUB),
];

/// The column families a projection owns.
fn projection_cfs(name: &str) -> Vec<&'static str> {
    match OWN_CF.iter().find(|(projection, _)| *projection == name) {
        Some(&(_, own)) => vec![own],
        None => keys::PROJECTION_CFS
            .iter()
            .copied()
            .filter(|c| OWN_CF.iter().all(|(_, own)| own != c))
            .collect(),
    }
}

fn digest_cfs(db: &DB, cfs: &[&'static str]) -> Result<String, StoreError> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for name in cfs {
        ctx.update(name.as_bytes());
        for item in db.iterator_cf(cf(db, name)?, IteratorMode::Start) {
            let (k, v) = item?;
            ctx.update(&(k.len() as u64).to_be_bytes());
            ctx.update(&k);
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(&v);
        }
    }
    Ok(hex(ctx.finish().as_ref()))
}

fn first_difference(
    a: &DB,
    b: &DB,
    cfs: &[&'static str],
) -> Result<Option<Difference>, StoreError> {
    for name in cfs {
        let mut ia = a.iterator_cf(cf(a, name)?, IteratorMode::Start);
        let mut ib = b.iterator_cf(cf(b, name)?, IteratorMode::Start);
        loop {
            match (ia.next().transpose()?, ib.next().transpose()?) {
                (None, None) => break,
                (Some((k, _)), None) => {
                    return Ok(Some(Difference {
                        cf: name,
                        key: hex(&k),
                        detail: "only in the rebuilt projection".into(),
                    }))
                }
                (None, Some((k, _))) => {
                    return Ok(Some(Difference {
                        cf: name,
                        key: hex(&k),
                        detail: "only in the live projection".into(),
                    }))
                }
                (Some((ka, va)), Some((kb, vb))) => {
                    if ka != kb {
                        let (key, side) = if ka < kb {
                            (ka, "rebuilt")
                        } else {
                            (kb, "live")
                        };
                        return Ok(Some(Difference {
                            cf: name,
                            key: hex(&key),
                            detail: format!("only in the {side} projection"),
                        }));
                    }
                    if va != vb {
                        return Ok(Some(Difference {
                            cf: name,
                            key: hex(&ka),
                            detail: "values differ".into(),
                        }));
                    }
                }
            }
        }
    }
    Ok(None)
}

/// Rebuilds `projection` from offset zero into the fresh database `scratch`, up to the offset
/// the live projection has consumed, calling `progress(done, total)` as it goes; with
/// `verify`, compares the rebuilt column families with the live ones. Reads the embedded log
/// in `live`.
pub fn replay(
    live: &Arc<DB>,
    scratch: &Arc<DB>,
    projection: &str,
    verify: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, StoreError> {
    let log = EmbeddedLog::new(live.clone());
    // the embedded log never waits: its reads complete on the first poll
    futures::executor::block_on(replay_from(
        &log, live, scratch, projection, verify, progress,
    ))
}

/// Events a rebuild reads, decodes and folds at a time: large, so a fold sees most of a
/// task's life and its pending, claim and timer keys come and go without reaching the
/// database.
const REBUILD_BATCH: usize = 32_768;

/// One read's worth of decoded events, on its way from the reading task to the folding thread.
enum Decoded {
    Queue(Vec<Envelope<QueueEvent>>),
    Auth(Vec<Envelope<AuthEvent>>),
    WorkerManager(Vec<Envelope<WorkerEvent>>),
    Object(Vec<Envelope<ObjectEvent>>),
    Secrets(Vec<Envelope<SecretEvent>>),
    Index(Vec<Envelope<IndexEvent>>),
    Hooks(Vec<Envelope<HookEvent>>),
    Notify(Vec<Envelope<NotifyEvent>>),
    Github(Vec<Envelope<GithubEvent>>),
}

/// The rebuilt projection, folding on a thread of its own.
enum Rebuilt {
    Queue(QueueView),
    Auth(AuthView),
    WorkerManager(WorkerManagerView),
    Object(ObjectView),
    Secrets(SecretsView),
    Index(IndexView),
    Hooks(HooksView),
    Notify(NotifyView),
    Github(GithubView),
}

impl Rebuilt {
    fn apply(&self, offsets: &[u64], next: u64, decoded: &Decoded) -> Result<(), StoreError> {
        match (self, decoded) {
            (Rebuilt::Queue(q), Decoded::Queue(envs)) => apply_queue(q, offsets, next, envs),
            (Rebuilt::Auth(a), Decoded::Auth(envs)) => a.apply(offsets, next, envs),
            (Rebuilt::WorkerManager(w), Decoded::WorkerManager(envs)) => {
                w.apply(offsets, next, envs)
            }
            (Rebuilt::Object(o), Decoded::Object(envs)) => o.apply(offsets, next, envs),
            (Rebuilt::Secrets(s), Decoded::Secrets(envs)) => s.apply(offsets, next, envs),
            (Rebuilt::Index(i), Decoded::Index(envs)) => i.apply(offsets, next, envs),
            (Rebuilt::Hooks(h), Decoded::Hooks(envs)) => h.apply(offsets, next, envs),
            (Rebuilt::Notify(n), Decoded::Notify(envs)) => n.apply(offsets, next, envs),
            (Rebuilt::Github(g), Decoded::Github(envs)) => g.apply(offsets, next, envs),
            _ => unreachable!("events are decoded for the projection being rebuilt"),
        }
    }

    fn decode(&self, records: &[Stored]) -> Result<Decoded, StoreError> {
        fn all<E: serde::de::DeserializeOwned>(
            records: &[Stored],
        ) -> Result<Vec<Envelope<E>>, StoreError> {
            // sized up front: collecting through `Result` would grow the vector a doubling
            // at a time, copying a batch of large envelopes (a task definition is inline)
            // again and again
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                out.push(codec::decode::<Envelope<E>>(&r.value)?);
            }
            Ok(out)
        }
        Ok(match self {
            Rebuilt::Queue(_) => Decoded::Queue(all(records)?),
            Rebuilt::Auth(_) => Decoded::Auth(all(records)?),
            Rebuilt::WorkerManager(_) => Decoded::WorkerManager(all(records)?),
            Rebuilt::Object(_) => Decoded::Object(all(records)?),
            Rebuilt::Secrets(_) => Decoded::Secrets(all(records)?),
            Rebuilt::Index(_) => Decoded::Index(all(records)?),
            Rebuilt::Hooks(_) => Decoded::Hooks(all(records)?),
            Rebuilt::Notify(_) => Decoded::Notify(all(records)?),
            Rebuilt::Github(_) => Decoded::Github(all(records)?),
        })
    }
}

/// `replay` reading the events from `log` (embedded or Kafka); the live projections are in
/// `live`. Reading and decoding run here while a thread of its own folds the previous batch.
pub async fn replay_from<L: EventLog>(
    log: &L,
    live: &Arc<DB>,
    scratch: &Arc<DB>,
    projection: &str,
    verify: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ReplayReport, StoreError> {
    let started = std::time::Instant::now();
    let (topic, partition, consumer) = match projection {
        "auth" => (AUTH_TOPIC, AUTH_PARTITION, AUTH_CONSUMER),
        "worker-manager" => (
            WORKER_MANAGER_TOPIC,
            WORKER_MANAGER_PARTITION,
            WORKER_MANAGER_CONSUMER,
        ),
        "object" => (OBJECT_TOPIC, OBJECT_PARTITION, OBJECT_CONSUMER),
        "secrets" => (SECRETS_TOPIC, SECRETS_PARTITION, SECRETS_CONSUMER),
        "index" => (INDEX_TOPIC, INDEX_PARTITION, INDEX_CONSUMER),
        "hooks" => (HOOKS_TOPIC, HOOKS_PARTITION, HOOKS_CONSUMER),
        "notify" => (NOTIFY_TOPIC, NOTIFY_PARTITION, NOTIFY_CONSUMER),
        "github" => (GITHUB_TOPIC, GITHUB_PARTITION, GITHUB_CONSUMER),
        _ => (QUEUE_TOPIC, QUEUE_PARTITION, VIEW_CONSUMER),
    };
    let live_offset = crate::store::read_u64(
        live,
        keys::CF_META,
        &keys::consumer_offset(consumer, topic, partition),
    )?;
    let rebuilt = match projection {
        "auth" => Rebuilt::Auth(AuthView::open(scratch.clone())?),
        "worker-manager" => Rebuilt::WorkerManager(WorkerManagerView::open(scratch.clone())?),
        "object" => Rebuilt::Object(ObjectView::open(scratch.clone())?),
        "secrets" => Rebuilt::Secrets(SecretsView::open(scratch.clone())?),
        "index" => Rebuilt::Index(IndexView::open(scratch.clone())?),
        "hooks" => Rebuilt::Hooks(HooksView::open(scratch.clone())?),
        "notify" => Rebuilt::Notify(NotifyView::open(scratch.clone())?),
        "github" => Rebuilt::Github(GithubView::open(scratch.clone())?),
        _ => Rebuilt::Queue(QueueView::new(scratch.clone())?.for_rebuild()),
    };
    let rebuilt = Arc::new(rebuilt);
    // two batches in flight: one folding, one decoded and waiting
    let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u64>, u64, Decoded)>(1);
    // folded batches come back to be freed here, where they were allocated: the reading side
    // waits for the fold anyway, and frees across threads cost the fold thread more
    let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Decoded>();
    let folder = {
        let rebuilt = rebuilt.clone();
        // named, so a profile can tell the fold from the reading side
        std::thread::Builder::new()
            .name("replay-fold".into())
            .spawn(move || -> Result<(), StoreError> {
                if let Rebuilt::Queue(q) = &*rebuilt {
                    fold_queue_overlapped(q, rx, spent_tx)?;
                    return q.flush();
                }
                for (offsets, next, decoded) in rx {
                    rebuilt.apply(&offsets, next, &decoded)?;
                    let _ = spent_tx.send(decoded);
                }
                Ok(())
            })
            .map_err(|e| StoreError::Log(LogError::Unavailable(e.to_string())))?
    };
    let mut offset = 0u64;
    let mut events = 0u64;
    let mut read_error = None;
    while offset < live_offset {
        let max = (live_offset - offset).min(REBUILD_BATCH as u64) as usize;
        let read = read_onward(
            log,
            topic,
            partition,
            offset,
            max,
            live_offset,
            READ_PATIENCE,
        );
        let batch = match read.await {
            Ok(b) => b,
            Err(e) => {
                read_error = Some(StoreError::from(e));
                break;
            }
        };
        // only what the live projection has consumed
        let next = batch.next.min(live_offset);
        let records: Vec<_> = batch
            .records
            .into_iter()
            .filter(|r| r.offset < live_offset)
            .collect();
        events += records.len() as u64;
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let decoded = match rebuilt.decode(&records) {
            Ok(d) => d,
            Err(e) => {
                read_error = Some(e);
                break;
            }
        };
        if tx.send((offsets, next, decoded)).is_err() {
            // the folder stopped on an error, which joining it reports
            break;
        }
        spent_rx.try_iter().for_each(drop);
        offset = next;
        progress(offset, live_offset);
    }
    drop(tx);
    folder
        .join()
        .map_err(|_| StoreError::Log(LogError::Corrupt("the folding thread panicked".into())))??;
    if let Some(e) = read_error {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cfs = projection_cfs(projection);
    let rebuilt_digest = digest_cfs(scratch, &cfs)?;
    let (live_digest, difference) = if verify {
        (
            Some(digest_cfs(live, &cfs)?),
            first_difference(scratch, live, &cfs)?,
        )
    } else {
        (None, None)
    };
    Ok(ReplayReport {
        events,
        seconds,
        rebuilt_digest,
        live_digest,
        difference,
    })
}

/// The queue projection's fold, with each batch's write overlapping the next batch's fold:
/// a thread of its own writes batch k while this one folds batch k+1, reading through k's
/// writes (`QueueView::fold_batch`). Batches are written in order, one at a time, and a fold
/// waits for the write before its own to finish, so only one batch is ever unwritten.
fn fold_queue_overlapped(
    view: &QueueView,
    batches: std::sync::mpsc::Receiver<(Vec<u64>, u64, Decoded)>,
    spent: std::sync::mpsc::Sender<Decoded>,
) -> Result<(), StoreError> {
    use std::sync::mpsc::channel;
    let (write_tx, write_rx) = channel::<Arc<Folded>>();
    let (written_tx, written_rx) = channel::<()>();
    std::thread::scope(|scope| {
        let writer = std::thread::Builder::new()
            .name("replay-write".into())
            .spawn_scoped(scope, move || -> Result<(), StoreError> {
                for folded in write_rx {
                    view.write_folded(&folded)?;
                    drop(folded);
                    if written_tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(())
            })
            .map_err(|e| StoreError::Log(LogError::Unavailable(e.to_string())))?;
        let folding = (|| -> Result<(), StoreError> {
            let mut unwritten: Option<Arc<Folded>> = None;
            for (offsets, next, decoded) in batches {
                let Decoded::Queue(envs) = &decoded else {
                    unreachable!("queue events are decoded for the queue projection");
                };
                let folded = view.fold_batch(
                    VIEW_CONSUMER,
                    QUEUE_TOPIC,
                    QUEUE_PARTITION,
                    &offsets,
                    next,
                    envs,
                    unwritten.as_deref(),
                )?;
                // the previous write must finish before this batch's may start
                if unwritten.is_some() && written_rx.recv().is_err() {
                    // the writer stopped on an error, which joining it reports
                    return Ok(());
                }
                let folded = Arc::new(folded);
                if write_tx.send(folded.clone()).is_err() {
                    return Ok(());
                }
                unwritten = Some(folded);
                let _ = spent.send(decoded);
            }
            Ok(())
        })();
        drop(write_tx);
        let written = writer.join().map_err(|_| {
            StoreError::Log(LogError::Corrupt("the writing thread panicked".into()))
        })?;
        folding.and(written)
    })
}

/// Reads every record of every partition in order (the raw sequential read rate, for the
/// replay benchmark's ratio); returns how many.
pub fn read_all(db: &DB) -> Result<u64, StoreError> {
    let mut n = 0;
    for item in db.iterator_cf(cf(db, keys::CF_LOG)?, IteratorMode::Start) {
        let (_, v) = item?;
        std::hint::black_box(&v);
        n += 1;
    }
    Ok(n)
}
