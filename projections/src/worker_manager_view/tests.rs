use super::*;
use crate::{store, EmbeddedLog};
use taskledger_core::access::seal::SealKey;
use taskledger_core::envelope::Actor;
use taskledger_core::ids::Slug;
use taskledger_core::worker_manager::{PoolInput, Proof, WorkerKey, WorkerState};

fn key() -> WorkerKey {
    WorkerKey {
        worker_pool_id: "prov/wt".parse().unwrap(),
        worker_group: "g".into(),
        worker_id: "w".into(),
    }
}

async fn run(engine: &WorkerManagerEngine, cmd: WorkerCommand) -> Vec<Envelope<WorkerEvent>> {
    engine.execute(Actor::system("test"), cmd).await.unwrap()
}

/// A pool, a worker, a registration and two errors, then removal.
async fn scenario(engine: &WorkerManagerEngine, seal: &SealKey, secret: &str) {
    let pool = PoolInput {
        worker_pool_id: key().worker_pool_id,
        provider_id: "static".into(),
        description: "d".into(),
        config: serde_json::json!({}),
        owner: "o@example.com".into(),
        email_on_error: false,
    };
    run(engine, WorkerCommand::CreateWorkerPool(pool)).await;
    let create = WorkerCommand::CreateWorker {
        worker: key(),
        expires: Millis::now().plus(3_600_000),
        capacity: 2,
        static_secret: Some(seal.seal(&key().static_secret_owner(), secret, [1; 12])),
    };
    run(engine, create).await;
    let register = WorkerCommand::RegisterWorker {
        worker: key(),
        provider_id: "static".into(),
        proof: Some(Proof::new(seal.clone(), secret)),
        secret: seal.seal(&key().registration_secret_owner(), "r", [2; 12]),
    };
    assert_eq!(run(engine, register).await.len(), 1);
    for n in 0..2u8 {
        let report = WorkerCommand::ReportWorkerError {
            worker_pool_id: key().worker_pool_id,
            error_id: Slug([n; 16]),
            worker_group: "g".into(),
            worker_id: "w".into(),
            kind: "k".into(),
            title: "t".into(),
            description: "d".into(),
            extra: serde_json::Map::new(),
        };
        run(engine, report).await;
    }
    run(engine, WorkerCommand::RemoveWorker { worker: key() }).await;
}

#[tokio::test]
async fn commands_fold_persist_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let seal = SealKey::new([3; 32]);
    let secret = "staticsecretstaticsecretstaticsecretstatics";
    {
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(WorkerManagerView::open(db).unwrap());
        let engine = WorkerManagerEngine::start(view.clone(), log).await.unwrap();
        scenario(&engine, &seal, secret).await;
        // the pool's audit history, also under the client that acted
        let (history, _) = view.pool_history("prov/wt", None, 10).unwrap();
        assert_eq!(history[0].action_type, "created");
        assert_eq!(history[0].entity_type, "worker-pool");
        let actor = history[0].client_id.clone();
        assert_eq!(view.actor_history(&actor, None, 10).unwrap().0, history);
        // newest first, page by page
        let (page, next) = view.errors("prov/wt", None, 1, |_| true).unwrap();
        assert_eq!(page[0].error_id, Slug([1; 16]));
        let (rest, more) = view.errors("prov/wt", next, 1, |_| true).unwrap();
        assert_eq!(rest[0].error_id, Slug([0; 16]));
        assert!(more.is_none());
        // the recent ones, newest first; none of another pool, nor of a prefix of the id
        let ids = |errors: Vec<PoolError>| -> Vec<Slug> {
            errors.into_iter().map(|e| e.error_id).collect()
        };
        let long_ago = Millis(0);
        assert_eq!(
            ids(view.errors_since(["prov/wt"], long_ago).unwrap()),
            [Slug([1; 16]), Slug([0; 16])]
        );
        let future = Millis::now().plus(taskledger_core::time::HOUR);
        assert!(view.errors_since(["prov/wt"], future).unwrap().is_empty());
        assert!(view
            .errors_since(["other/pool", "prov"], long_ago)
            .unwrap()
            .is_empty());
        // the retention job drops the errors reported before its bound, and only those
        assert!(view.oldest_error("prov/wt").unwrap().is_some());
        run(
            &engine,
            WorkerCommand::ExpirePoolErrors {
                worker_pool_id: key().worker_pool_id,
                before: long_ago,
            },
        )
        .await;
        assert_eq!(
            view.errors("prov/wt", None, 10, |_| true).unwrap().0.len(),
            2
        );
        run(
            &engine,
            WorkerCommand::ExpirePoolErrors {
                worker_pool_id: key().worker_pool_id,
                before: future,
            },
        )
        .await;
        assert!(view
            .errors("prov/wt", None, 10, |_| true)
            .unwrap()
            .0
            .is_empty());
        assert_eq!(view.oldest_error("prov/wt").unwrap(), None);
    }
    // reopen once the writer task has dropped the database
    let mut opened = store::open(dir.path());
    for _ in 0..500 {
        if opened.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        opened = store::open(dir.path());
    }
    let db = opened.expect("the database reopens once the writer stopped");
    let view = WorkerManagerView::open(db.clone()).unwrap();
    let worker = view.read(|s| s.workers[&key()].clone());
    assert_eq!(worker.state, WorkerState::Stopped);
    assert_eq!(worker.capacity, 2);
    assert!(worker.secret.is_some());
    // the static secret never reaches the log in clear; re-applying changes nothing
    let log = EmbeddedLog::new(db);
    let records = log
        .read_sync(WORKER_MANAGER_TOPIC, WORKER_MANAGER_PARTITION, 0, 100)
        .unwrap();
    assert_eq!(records.len(), 8);
    for r in &records {
        assert!(!r
            .value
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()));
    }
    let envs: Vec<Envelope<WorkerEvent>> = records
        .iter()
        .map(|r| codec::decode(&r.value).unwrap())
        .collect();
    let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
    view.apply(&offsets, offsets.len() as u64, &envs).unwrap();
    // a rebuild folds the whole log in one batch, errors and their expiry alike: the
    // errors are gone there too
    let fresh = tempfile::tempdir().unwrap();
    let rebuilt = WorkerManagerView::open(store::open(fresh.path()).unwrap()).unwrap();
    rebuilt
        .apply(&offsets, offsets.len() as u64, &envs)
        .unwrap();
    assert!(rebuilt
        .errors("prov/wt", None, 10, |_| true)
        .unwrap()
        .0
        .is_empty());
    assert_eq!(rebuilt.read(|s| s.workers[&key()].clone()), worker);
    assert_eq!(view.read(|s| s.workers[&key()].clone()), worker);
}

/// A purge request is stored and found again on reopening; once expired it goes from the
/// state and from the disk.
#[tokio::test]
async fn purge_requests_persist_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let db = store::open(dir.path()).unwrap();
    let log = Arc::new(EmbeddedLog::new(db.clone()));
    let view = Arc::new(WorkerManagerView::open(db.clone()).unwrap());
    let engine = WorkerManagerEngine::start(view.clone(), log).await.unwrap();
    for cache_name in ["a", "b"] {
        let purge = WorkerCommand::PurgeCache {
            worker_pool_id: "prov/wt".into(),
            cache_name: cache_name.into(),
        };
        run(&engine, purge).await;
    }
    assert_eq!(
        WorkerManagerView::open(db.clone())
            .unwrap()
            .read(|s| s.purges.len()),
        2
    );
    let later = Millis::now().plus(2 * taskledger_core::time::DAY);
    let gone = run(&engine, WorkerCommand::ExpirePurgeRequests { now: later }).await;
    assert_eq!(gone.len(), 1);
    assert!(view.read(|s| s.purges.is_empty()));
    let mut rows = 0;
    scan_prefix(&db, keys::WM_PURGE_PREFIX, |_, _| {
        rows += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(rows, 0, "the expired requests' rows are deleted");
    assert!(WorkerManagerView::open(db)
        .unwrap()
        .read(|s| s.purges.is_empty()));
}
