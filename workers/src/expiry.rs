//! The expiry reactors: clients, worker-manager workers and pool errors, tasks, task groups,
//! artifacts, objects, secrets and index entries and namespaces past their `expires` go as events, while this process writes their
//! partition; stored bytes are deleted only after the event is durable.

use super::writing;
use std::time::Duration;
use taskledger_core::envelope::Actor;
use taskledger_core::time::{Millis, DAY};
use taskledger_projections::keys::Expiring;
use taskledger_projections::role::WriterRole;
use taskledger_projections::{Engine, QueueCommand};

/// How often the client-expiry reactor looks for expired clients (upstream: daily).
const CLIENT_EXPIRY_SCAN: Duration = Duration::from_secs(60);

/// Deletes clients past their `expires` that asked for it (`deleteOnExpiration`), as
/// `ClientDeleted { expired: true }` events. Clients that did not ask stay and simply stop
/// authenticating.
pub async fn run_client_expiry(auth: taskledger_projections::AuthEngine) {
    loop {
        if !writing(auth.role()).await {
            continue;
        }
        let now = Millis::now();
        let expired: Vec<String> = auth.view().read(|s| {
            s.clients
                .values()
                .filter(|c| c.delete_on_expiration && c.expires < now)
                .map(|c| c.client_id.clone())
                .collect()
        });
        for client_id in expired {
            let cmd = taskledger_core::access::AuthCommand::ExpireClient {
                client_id: client_id.clone(),
            };
            match auth.execute(Actor::system("client-expiry"), cmd).await {
                Ok(_) => tracing::info!(%client_id, "expired client deleted"),
                Err(e) => tracing::warn!(%client_id, error = %e, "client expiry failed"),
            }
        }
        tokio::time::sleep(CLIENT_EXPIRY_SCAN).await;
    }
}

/// How long worker-pool errors are kept (upstream: 7 days).
const POOL_ERROR_RETENTION: i64 = 7 * DAY;

/// Removes workers past their `expires` (any state), as `WorkerExpired` events, and pool errors
/// older than 7 days, as `PoolErrorsExpired`: upstream's daily `expireWorkers` and
/// `expireErrors`, every `every` here.
pub async fn run_worker_expiry(
    worker_manager: taskledger_projections::WorkerManagerEngine,
    every: Duration,
) {
    loop {
        if !writing(worker_manager.role()).await {
            continue;
        }
        let expired = worker_manager
            .view()
            .read(|s| s.expired_workers(Millis::now()));
        for worker in expired {
            let path = worker.path();
            let cmd = taskledger_core::worker_manager::WorkerCommand::ExpireWorker { worker };
            match worker_manager
                .execute(Actor::system("worker-expiry"), cmd)
                .await
            {
                Ok(events) if !events.is_empty() => {
                    tracing::info!(worker = %path, "expired worker removed")
                }
                // its expiry was extended meanwhile, or it is gone already
                Ok(_) => {}
                Err(e) => tracing::warn!(worker = %path, error = %e, "worker expiry failed"),
            }
        }
        // the bound moves a day at a time, so a pool that keeps reporting errors has its old
        // ones dropped once a day, as upstream's daily job does, not on every scan
        let now = Millis::now();
        let before = Millis(now.0 - now.0.rem_euclid(DAY)).minus(POOL_ERROR_RETENTION);
        let pools: Vec<_> = worker_manager
            .view()
            .read(|s| s.pools.keys().cloned().collect());
        for worker_pool_id in pools {
            let old = match worker_manager.view().oldest_error(worker_pool_id.as_str()) {
                Ok(oldest) => oldest.is_some_and(|t| t < before),
                Err(e) => {
                    tracing::warn!(error = %e, "pool error scan failed");
                    false
                }
            };
            if !old {
                continue;
            }
            let cmd = taskledger_core::worker_manager::WorkerCommand::ExpirePoolErrors {
                worker_pool_id,
                before,
            };
            if let Err(e) = worker_manager
                .execute(Actor::system("worker-expiry"), cmd)
                .await
            {
                tracing::warn!(error = %e, "pool error expiry failed");
            }
        }
        // purge requests past their expiry (upstream's daily cleanup), a thousand at a time
        let now = Millis::now();
        while worker_manager
            .view()
            .read(|s| s.purges.values().any(|r| r.expires <= now))
        {
            let cmd = taskledger_core::worker_manager::WorkerCommand::ExpirePurgeRequests { now };
            match worker_manager
                .execute(Actor::system("worker-expiry"), cmd)
                .await
            {
                Ok(events) if !events.is_empty() => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purge request expiry failed");
                    break;
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// How far before the present every expiry scan starts, at the least.
const EXPIRY_LOOKBACK: i64 = 60 * 60 * 1000;

/// The loop both expiry reactors share: while this process writes `role`'s partition, every
/// `every`, `scan(floor, now)` lists what is due in `floor..=now` (earliest first, with its due
/// time) and `handle` removes each. Anything due before `floor` is gone: new expiries are never
/// more than `EXPIRY_LOOKBACK` in the past, and what a scan found but could not remove yet is
/// found again from its time.
async fn expire_every<T, Fut>(
    role: &WriterRole,
    every: Duration,
    scan: impl Fn(Millis, Millis) -> Result<Vec<(Millis, T)>, taskledger_projections::store::StoreError>,
    handle: impl Fn(T) -> Fut,
) where
    Fut: std::future::Future<Output = ()>,
{
    let mut floor = Millis(0);
    loop {
        if !writing(role).await {
            continue;
        }
        let now = Millis::now();
        let due = scan(floor, now).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "expiry scan failed");
            vec![]
        });
        // expiries may be up to 15 minutes in the past when written (and a writer's clock a
        // little behind): scan from an hour back at least
        floor = due
            .first()
            .map_or(now, |(at, _)| *at)
            .min(now.minus(EXPIRY_LOOKBACK));
        for (_, what) in due {
            handle(what).await;
        }
        tokio::time::sleep(every).await;
    }
}

/// Removes objects whose `expires` passed (and uploads never finished a day after they
/// started) as `ObjectExpired` events, then has `forget` delete their bytes. Bytes go only
/// after the event is durable: a crash in between leaves bytes no object names, never an
/// object without bytes.
pub async fn run_object_expiry<F, Fut>(
    object: taskledger_projections::ObjectEngine,
    every: Duration,
    forget: F,
) where
    F: Fn(String, [u8; 32]) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let scan = |floor, now| object.view().due(floor, now, 1000);
    expire_every(object.role(), every, scan, |name: String| async {
        // the bytes are per upload: keep its id's digest for after the object is gone
        let Ok(Some(stored)) = object.view().get(&name) else {
            return;
        };
        let cmd = taskledger_core::object::ObjectCommand::Expire { name: name.clone() };
        match object.execute(Actor::system("object-expiry"), cmd).await {
            Ok(events) if !events.is_empty() => forget(name, stored.upload_digest).await,
            Ok(_) => {}
            Err(e) => tracing::warn!(%name, error = %e, "object expiry failed"),
        }
    })
    .await
}

/// Removes secrets whose `expires` passed, as `SecretExpired` events (upstream: an hourly
/// cron; `get` and `list` stop showing a secret at its expiry either way). Every scan starts
/// at the index's beginning: `set` takes an expiry as far in the past as a caller likes, and
/// the index holds only secrets that still exist.
pub async fn run_secret_expiry(secrets: taskledger_projections::SecretsEngine, every: Duration) {
    let scan = |_floor, now| secrets.view().due(Millis(0), now, 1000);
    let secrets = &secrets;
    expire_every(secrets.role(), every, scan, |name: String| async move {
        let cmd = taskledger_core::secrets::SecretCommand::Expire { name: name.clone() };
        if let Err(e) = secrets.execute(Actor::system("secret-expiry"), cmd).await {
            tracing::warn!(%name, error = %e, "secret expiry failed");
        }
    })
    .await
}

/// Removes index entries and namespaces past their `expires`, as `IndexedTaskExpired` and
/// `NamespaceExpired` events (upstream: a daily cron; reads stop showing them at their expiry
/// either way). Every scan starts at the earliest expiry, as the index holds only what exists.
pub async fn run_index_expiry(index: taskledger_projections::IndexEngine, every: Duration) {
    use taskledger_core::index::IndexCommand;
    let scan = |_floor, now| {
        let view = index.view();
        let entries = view.entries_due(now, 1000)?.into_iter();
        let namespaces = view.namespaces_due(now, 1000)?.into_iter();
        let mut due: Vec<(Millis, IndexCommand)> = entries
            .map(|(at, path)| (at, IndexCommand::Expire { path }))
            .chain(
                namespaces.map(|(at, namespace)| (at, IndexCommand::ExpireNamespace { namespace })),
            )
            .collect();
        due.sort_by_key(|(at, _)| *at);
        Ok(due)
    };
    let index = &index;
    expire_every(index.role(), every, scan, |cmd: IndexCommand| async move {
        if let Err(e) = index.execute(Actor::system("index-expiry"), cmd).await {
            tracing::warn!(error = %e, "index expiry failed");
        }
    })
    .await
}

/// Removes tasks (once resolved), task groups and artifacts past their `expires`, as
/// `TaskExpired`, `TaskGroupExpired` and `ArtifactExpired` events, and then has `forget`
/// delete the stored bytes of what went (the events come first: a crash in between leaves
/// bytes nothing names, never a record without its bytes). Scans every `every` (upstream runs
/// its expiry crons daily).
pub async fn run_task_expiry<F, Fut>(engine: Engine, every: Duration, forget: F)
where
    F: Fn(Expiring) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let scan = |floor, now| engine.view().expiries_due(floor, now, 1000);
    expire_every(engine.role(), every, scan, |what: Expiring| async {
        let cmd = match &what {
            Expiring::Task(id) => QueueCommand::ExpireTask { task_id: *id },
            Expiring::TaskGroup(id) => QueueCommand::ExpireTaskGroup { task_group_id: *id },
            Expiring::Artifact(task_id, run_id, name) => QueueCommand::ExpireArtifact {
                task_id: *task_id,
                run_id: *run_id,
                name: name.clone(),
            },
        };
        if let Err(e) = engine.execute(Actor::system("expiry"), cmd).await {
            tracing::warn!(?what, error = %e, "expiry failed");
            return;
        }
        let view = engine.view();
        let gone = match &what {
            Expiring::Task(id) => matches!(view.task(id), Ok(None)),
            Expiring::Artifact(task, run, name) => {
                matches!(view.artifact(task, *run, name), Ok(None))
            }
            Expiring::TaskGroup(_) => false,
        };
        if gone {
            forget(what).await;
        }
    })
    .await
}
