//! given(events).when(command).then(events or error), for every worker-manager rule.

use super::*;
use crate::time::HOUR;
use serde_json::json;

const NOW: Millis = Millis(1_700_000_000_000);
const STATIC_SECRET: &str = "staticsecretstaticsecretstaticsecretstatics";
const KEY: [u8; 32] = [4; 32];

fn pool_id() -> WorkerPoolId {
    "prov/wt".parse().unwrap()
}

fn key() -> WorkerKey {
    WorkerKey {
        worker_pool_id: pool_id(),
        worker_group: "g".into(),
        worker_id: "w".into(),
    }
}

fn seal_key() -> SealKey {
    SealKey::new(KEY)
}

fn sealed_static(secret: &str) -> Sealed {
    seal_key().seal(&key().static_secret_owner(), secret, [1; 12])
}

fn sealed_registration(secret: &str) -> Sealed {
    seal_key().seal(&key().registration_secret_owner(), secret, [2; 12])
}

fn pool_input(provider: &str, config: serde_json::Value) -> PoolInput {
    PoolInput {
        worker_pool_id: pool_id(),
        provider_id: provider.into(),
        description: "d".into(),
        config,
        owner: "o@example.com".into(),
        email_on_error: false,
    }
}

fn pool_created(config: &str) -> WorkerEvent {
    WorkerEvent::WorkerPoolCreated {
        worker_pool_id: pool_id(),
        provider_id: "static".into(),
        description: "d".into(),
        config: config.into(),
        owner: "o@example.com".into(),
        email_on_error: false,
    }
}

fn worker_created() -> WorkerEvent {
    WorkerEvent::WorkerCreated {
        worker: key(),
        provider_id: "static".into(),
        capacity: 1,
        expires: NOW.plus(24 * HOUR),
        static_secret: sealed_static(STATIC_SECRET),
    }
}

fn register(provider: &str, secret: Option<&str>) -> WorkerCommand {
    WorkerCommand::RegisterWorker {
        worker: key(),
        provider_id: provider.into(),
        proof: secret.map(|s| Proof::new(seal_key(), s)),
        secret: sealed_registration("registration"),
    }
}

fn registered(expires: Millis) -> WorkerEvent {
    WorkerEvent::WorkerRegistered {
        worker: key(),
        expires,
        secret: sealed_registration("registration"),
    }
}

/// The state after `events`, all at `NOW`.
fn given(events: &[WorkerEvent]) -> WorkerManagerState {
    let mut state = WorkerManagerState::default();
    for e in events {
        state.apply(e, NOW);
    }
    state
}

/// Decides `cmd` at `NOW` and compares with `expected`.
fn check(events: &[WorkerEvent], cmd: WorkerCommand, expected: Result<Vec<WorkerEvent>, E>) {
    assert_eq!(given(events).decide(&cmd, NOW), expected);
}

type E = WorkerManagerError;

fn input(m: &str) -> Result<Vec<WorkerEvent>, E> {
    Err(E::Input(m.into()))
}

fn not_found(m: &str) -> Result<Vec<WorkerEvent>, E> {
    Err(E::NotFound(m.into()))
}

#[test]
fn pools_are_created_once_and_deleted_by_switching_to_the_null_provider() {
    let create = |p: &str, c| WorkerCommand::CreateWorkerPool(pool_input(p, c));
    check(
        &[],
        create("static", json!({})),
        Ok(vec![pool_created("{}")]),
    );
    check(&[], create("aws", json!({})), input("Invalid Provider"));
    let bad = given(&[]).decide(&create("static", json!({"minCapacity": 1})), NOW);
    assert!(matches!(
        bad,
        Err(E::InvalidConfig {
            provider_type: "static",
            ..
        })
    ));
    // the same definition again changes nothing (idempotent, as upstream); another conflicts
    check(
        &[pool_created("{}")],
        create("static", json!({})),
        Ok(vec![]),
    );
    let mut other = pool_input("static", json!({}));
    other.description = "another".into();
    check(
        &[pool_created("{}")],
        WorkerCommand::CreateWorkerPool(other),
        Err(E::Conflict("Worker pool already exists".into())),
    );
    check(
        &[pool_created("{}")],
        create("static", json!({ "workerConfig": {} })),
        Err(E::Conflict("Worker pool already exists".into())),
    );
    let delete = || WorkerCommand::DeleteWorkerPool {
        worker_pool_id: pool_id(),
    };
    let deleted = WorkerEvent::WorkerPoolUpdated {
        worker_pool_id: pool_id(),
        provider_id: NULL_PROVIDER.into(),
        previous_provider_ids: vec!["static".into()],
        description: "d".into(),
        config: "{}".into(),
        owner: "o@example.com".into(),
        email_on_error: false,
    };
    check(&[pool_created("{}")], delete(), Ok(vec![deleted.clone()]));
    check(&[pool_created("{}"), deleted.clone()], delete(), Ok(vec![]));
    check(&[], delete(), not_found("Worker pool does not exist"));
    // back to static: it leaves the previous providers, null-provider joins them
    let revived = given(&[pool_created("{}"), deleted]).decide(
        &WorkerCommand::UpdateWorkerPool(pool_input("static", json!({}))),
        NOW,
    );
    match revived.unwrap().as_slice() {
        [WorkerEvent::WorkerPoolUpdated {
            previous_provider_ids,
            ..
        }] => assert_eq!(previous_provider_ids, &vec![NULL_PROVIDER.to_string()]),
        other => panic!("{other:?}"),
    }
    check(
        &[],
        WorkerCommand::UpdateWorkerPool(pool_input("static", json!({}))),
        not_found("Worker pool does not exist"),
    );
}

fn create_worker(capacity: u32, secret: Option<&str>, expires: Millis) -> WorkerCommand {
    WorkerCommand::CreateWorker {
        worker: key(),
        expires,
        capacity,
        static_secret: secret.map(sealed_static),
    }
}

#[test]
fn static_workers_are_created_running_and_recreated_idempotently() {
    let later = NOW.plus(24 * HOUR);
    check(
        &[],
        create_worker(1, Some(STATIC_SECRET), later),
        not_found("Worker pool prov/wt does not exist"),
    );
    let pool = [pool_created("{}")];
    check(
        &pool,
        create_worker(1, Some(STATIC_SECRET), NOW.minus(1)),
        input("worker.expires must be in the future"),
    );
    check(
        &pool,
        create_worker(1, None, later),
        input("no worker staticSecret provided"),
    );
    check(
        &pool,
        create_worker(1, Some(STATIC_SECRET), later),
        Ok(vec![worker_created()]),
    );
    let s = given(&[pool_created("{}"), worker_created()]);
    assert_eq!(s.workers[&key()].state, WorkerState::Running);
    assert_eq!(s.pool_counts(&pool_id()).current_capacity, 1);
    // same pool, provider, state and capacity: nothing to do (the secret is not compared)
    check(
        &[pool_created("{}"), worker_created()],
        create_worker(1, Some("other"), later),
        Ok(vec![]),
    );
    check(
        &[pool_created("{}"), worker_created()],
        create_worker(2, Some(STATIC_SECRET), later),
        Err(E::Conflict("Worker already exists".into())),
    );
}

#[test]
fn update_keeps_the_secret_when_none_is_given_and_remove_stops() {
    let update = WorkerCommand::UpdateWorker {
        worker: key(),
        expires: NOW.minus(5),
        capacity: 3,
        static_secret: None,
    };
    check(
        &[pool_created("{}")],
        update.clone(),
        not_found("Worker prov/wt/g/w does not exist"),
    );
    check(
        &[pool_created("{}"), worker_created()],
        update,
        Ok(vec![WorkerEvent::WorkerUpdated {
            worker: key(),
            capacity: 3,
            expires: NOW.minus(5),
            static_secret: sealed_static(STATIC_SECRET),
        }]),
    );
    let remove = || WorkerCommand::RemoveWorker { worker: key() };
    let removed = WorkerEvent::WorkerRemoved { worker: key() };
    check(&[], remove(), not_found("Worker not found"));
    check(
        &[pool_created("{}"), worker_created()],
        remove(),
        Ok(vec![removed.clone()]),
    );
    let s = given(&[pool_created("{}"), worker_created(), removed.clone()]);
    assert_eq!(
        s.workers[&key()].should_terminate(),
        (true, "worker was removed")
    );
    assert_eq!(s.pool_counts(&pool_id()).current_capacity, 0);
    assert_eq!(
        given(&[pool_created("{}"), worker_created()]).workers[&key()].should_terminate(),
        (false, "none")
    );
    check(
        &[pool_created("{}"), worker_created(), removed],
        remove(),
        Ok(vec![]),
    );
}

#[test]
fn registration_checks_in_upstream_order() {
    let base = [pool_created("{}"), worker_created()];
    check(
        &[],
        register("static", Some(STATIC_SECRET)),
        not_found("Worker pool prov/wt does not exist"),
    );
    check(
        &base,
        register("google", Some(STATIC_SECRET)),
        not_found("Provider google does not exist"),
    );
    check(
        &base,
        register(NULL_PROVIDER, Some(STATIC_SECRET)),
        input("Worker pool prov/wt not associated with provider null-provider"),
    );
    check(
        &base[..1],
        register("static", Some(STATIC_SECRET)),
        not_found("Worker g/w in worker pool prov/wt does not exist"),
    );
    let expired = WorkerEvent::WorkerUpdated {
        worker: key(),
        capacity: 1,
        expires: NOW.minus(1),
        static_secret: sealed_static(STATIC_SECRET),
    };
    check(
        &[base[0].clone(), base[1].clone(), expired],
        register("static", Some(STATIC_SECRET)),
        input("Worker g/w has expired"),
    );
    check(
        &base,
        register("static", None),
        input("missing staticSecret in workerIdentityProof"),
    );
    check(
        &base,
        register("static", Some("wrong")),
        input("bad staticSecret in workerIdentityProof"),
    );
    check(
        &base,
        register("static", Some(STATIC_SECRET)),
        Ok(vec![registered(NOW.plus(96 * HOUR))]),
    );
    // the pool's lifecycle sets the credentials' lifetime
    let short = r#"{"lifecycle":{"reregistrationTimeout":60}}"#;
    check(
        &[pool_created(short), worker_created()],
        register("static", Some(STATIC_SECRET)),
        Ok(vec![registered(NOW.plus(60_000))]),
    );
    let removed = WorkerEvent::WorkerRemoved { worker: key() };
    check(
        &[base[0].clone(), base[1].clone(), removed],
        register("static", Some(STATIC_SECRET)),
        input("worker is not running"),
    );
}

#[test]
fn workers_of_a_previous_provider_still_register() {
    let deleted = given(&[pool_created("{}"), worker_created()])
        .decide(
            &WorkerCommand::DeleteWorkerPool {
                worker_pool_id: pool_id(),
            },
            NOW,
        )
        .unwrap();
    let mut events = vec![pool_created("{}"), worker_created()];
    events.extend(deleted);
    check(
        &events,
        register("static", Some(STATIC_SECRET)),
        Ok(vec![registered(NOW.plus(96 * HOUR))]),
    );
}

#[test]
fn reregistration_needs_the_latest_secret() {
    let reregister = |secret: &str| WorkerCommand::ReregisterWorker {
        worker: key(),
        proof: Proof::new(seal_key(), secret),
        secret: sealed_registration("registration"),
    };
    let refused = input("Could not generate credentials for this secret");
    let base = vec![pool_created("{}"), worker_created()];
    check(&[], reregister("registration"), refused.clone());
    // not registered yet: no secret to compare with
    check(&base, reregister("registration"), refused.clone());
    let mut reg = base.clone();
    reg.push(registered(NOW.plus(HOUR)));
    check(&reg, reregister("nope"), refused);
    check(
        &reg,
        reregister("registration"),
        Ok(vec![registered(NOW.plus(96 * HOUR))]),
    );
    reg.push(WorkerEvent::WorkerRemoved { worker: key() });
    check(
        &reg,
        reregister("registration"),
        input("Worker g/w is not running"),
    );
}

#[test]
fn errors_merge_the_worker_into_extra() {
    let report = || WorkerCommand::ReportWorkerError {
        worker_pool_id: pool_id(),
        error_id: Slug([9; 16]),
        worker_group: "g".into(),
        worker_id: "w".into(),
        kind: "boot-failure".into(),
        title: "t".into(),
        description: "d".into(),
        extra: json!({"disk": "full", "workerId": "spoofed"})
            .as_object()
            .cloned()
            .unwrap(),
    };
    check(&[], report(), not_found("Worker pool does not exist"));
    let events = given(&[pool_created("{}")]).decide(&report(), NOW).unwrap();
    let row = PoolError::from_event(&events[0], NOW).unwrap();
    let extra: serde_json::Value = serde_json::from_str(&row.extra).unwrap();
    assert_eq!(
        extra,
        json!({"disk": "full", "workerGroup": "g", "workerId": "w"})
    );
    assert_eq!(row.reported, NOW);
    assert_eq!(events[0].stream_id(), "worker-pool/prov/wt");
}

#[test]
fn credentials_name_the_worker() {
    assert_eq!(key().client_id("static"), "worker/static/prov/wt/g/w");
    let scopes = key().credential_scopes();
    assert_eq!(scopes.len(), 10);
    assert!(scopes.contains(&"queue:claim-work:prov/wt".to_string()));
    assert!(scopes.contains(&"worker-manager:reregister-worker:prov/wt/g/w".to_string()));
    assert_eq!(
        format!("{:?}", Proof::new(seal_key(), "x")),
        "Proof([redacted])"
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn command(i: u8, capacity: u32) -> WorkerCommand {
        let later = NOW.plus(HOUR);
        match i % 7 {
            0 => WorkerCommand::CreateWorkerPool(pool_input("static", json!({}))),
            1 => WorkerCommand::DeleteWorkerPool {
                worker_pool_id: pool_id(),
            },
            2 => create_worker(capacity, Some(STATIC_SECRET), later),
            3 => WorkerCommand::RemoveWorker { worker: key() },
            4 => register("static", Some(STATIC_SECRET)),
            5 => WorkerCommand::UpdateWorker {
                worker: key(),
                expires: later,
                capacity,
                static_secret: None,
            },
            _ => WorkerCommand::UpdateWorkerPool(pool_input("static", json!({}))),
        }
    }

    proptest! {
        /// Whatever the order: workers belong to existing pools, a stopped worker stays
        /// stopped, and folding the decided events again gives the same state.
        #[test]
        fn invariants_hold(cmds in proptest::collection::vec((0u8..7, 1u32..3), 0..24)) {
            let mut state = WorkerManagerState::default();
            let mut log = Vec::new();
            let mut stopped = false;
            for (i, capacity) in cmds {
                if let Ok(events) = state.decide(&command(i, capacity), NOW) {
                    for e in &events {
                        state.apply(e, NOW);
                    }
                    log.extend(events);
                }
                for w in state.workers.values() {
                    prop_assert!(state.pools.contains_key(&w.key.worker_pool_id));
                }
                let now_stopped = state
                    .workers
                    .get(&key())
                    .is_some_and(|w| w.state == WorkerState::Stopped);
                prop_assert!(!stopped || now_stopped);
                stopped = now_stopped;
            }
            let replayed = given(&log);
            prop_assert_eq!(&replayed.pools, &state.pools);
            prop_assert_eq!(&replayed.workers, &state.workers);
        }
    }
}

/// Pins the V1 wire bytes of every worker-manager event (regenerate with UPDATE_EXPECT=1
/// only when adding a variant; a changed file for an existing variant is a broken log).
#[test]
fn golden_worker_manager_events_v1() {
    let events = vec![
        pool_created(r#"{"workerConfig":{}}"#),
        WorkerEvent::WorkerPoolUpdated {
            worker_pool_id: pool_id(),
            provider_id: NULL_PROVIDER.into(),
            previous_provider_ids: vec!["static".into()],
            description: "d".into(),
            config: "{}".into(),
            owner: "o".into(),
            email_on_error: true,
        },
        WorkerEvent::WorkerCreated {
            worker: key(),
            provider_id: "static".into(),
            capacity: 2,
            expires: NOW,
            static_secret: Sealed {
                nonce: [7; 12],
                ciphertext: vec![1, 2, 3],
            },
        },
        WorkerEvent::WorkerUpdated {
            worker: key(),
            capacity: 1,
            expires: NOW,
            static_secret: Sealed {
                nonce: [8; 12],
                ciphertext: vec![4],
            },
        },
        WorkerEvent::WorkerRemoved { worker: key() },
        WorkerEvent::WorkerRegistered {
            worker: key(),
            expires: NOW,
            secret: Sealed {
                nonce: [9; 12],
                ciphertext: vec![5, 6],
            },
        },
        WorkerEvent::WorkerErrorReported {
            worker_pool_id: pool_id(),
            error_id: Slug([3; 16]),
            worker_group: "g".into(),
            worker_id: "w".into(),
            kind: "k".into(),
            title: "t".into(),
            description: "d".into(),
            extra: "{}".into(),
            launch_config_id: None,
        },
        WorkerEvent::WorkerExpired { worker: key() },
        WorkerEvent::PoolErrorsExpired {
            worker_pool_id: pool_id(),
            before: NOW,
        },
        WorkerEvent::CachePurgeRequested {
            worker_pool_id: "prov/wt".into(),
            cache_name: "cargo".into(),
            before: NOW,
            expires: NOW.plus(crate::time::DAY),
        },
        WorkerEvent::PurgeRequestsExpired {
            requests: vec![("prov/wt".into(), "cargo".into())],
        },
    ];
    crate::codec::assert_golden_events(
        "worker-pool/prov/wt",
        events,
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/golden/worker_manager/events_v1.hex"
        ),
    );
}

/// The expiry job removes a worker once it has passed its `expires`, whatever its state,
/// and nothing before.
#[test]
fn workers_expire_after_their_expires() {
    let events = [pool_created("{}"), worker_created()];
    let s = given(&events);
    let expires = s.workers[&key()].expires;
    let expire = || WorkerCommand::ExpireWorker { worker: key() };
    assert_eq!(s.decide(&expire(), expires), Ok(vec![]));
    assert!(s.expired_workers(expires).is_empty());
    let later = Millis(expires.0 + 1);
    assert_eq!(s.expired_workers(later), [key()]);
    let decided = s.decide(&expire(), later).unwrap();
    assert_eq!(decided, [WorkerEvent::WorkerExpired { worker: key() }]);
    let mut gone = s.clone();
    gone.apply(&decided[0], later);
    assert!(!gone.workers.contains_key(&key()));
    assert_eq!(gone.decide(&expire(), later), Ok(vec![]));
}

/// The expiry job's error retention: one event for an existing pool, none for another.
#[test]
fn pool_errors_expire_by_pool() {
    let s = given(&[pool_created("{}")]);
    let expire = |worker_pool_id| WorkerCommand::ExpirePoolErrors {
        worker_pool_id,
        before: NOW,
    };
    assert_eq!(
        s.decide(&expire(pool_id()), NOW),
        Ok(vec![WorkerEvent::PoolErrorsExpired {
            worker_pool_id: pool_id(),
            before: NOW,
        }])
    );
    assert_eq!(
        s.decide(&expire("other/pool".parse().unwrap()), NOW),
        Ok(vec![])
    );
}

/// purgeCache records a request per (pool, cache name); a repeat moves `before` forward and
/// keeps one request.
#[test]
fn a_purge_request_is_kept_per_pool_and_cache_and_moves_forward() {
    let mut s = WorkerManagerState::default();
    let purge = || WorkerCommand::PurgeCache {
        worker_pool_id: "prov/wt".into(),
        cache_name: "cargo".into(),
    };
    for at in [NOW, NOW.plus(1000)] {
        let events = s.decide(&purge(), at).unwrap();
        assert_eq!(
            events,
            [WorkerEvent::CachePurgeRequested {
                worker_pool_id: "prov/wt".into(),
                cache_name: "cargo".into(),
                before: at,
                expires: at.plus(crate::time::DAY),
            }]
        );
        events.iter().for_each(|e| s.apply(e, at));
    }
    assert_eq!(s.purges.len(), 1);
    let r = &s.purges[&("prov/wt".to_string(), "cargo".to_string())];
    assert_eq!(r.before, NOW.plus(1000));

    // it goes once past its expiry, a day after the last request
    let expire = |now| WorkerCommand::ExpirePurgeRequests { now };
    let expires = NOW.plus(1000 + crate::time::DAY);
    assert_eq!(s.decide(&expire(expires.plus(-1)), expires).unwrap(), []);
    let gone = s.decide(&expire(expires), expires).unwrap();
    assert_eq!(
        gone,
        [WorkerEvent::PurgeRequestsExpired {
            requests: vec![("prov/wt".into(), "cargo".into())]
        }]
    );
    gone.iter().for_each(|e| s.apply(e, expires));
    assert!(s.purges.is_empty());

    // long cache names: an event holds about 256 KiB of keys, and always one
    for n in 0..5 {
        let long = WorkerCommand::PurgeCache {
            worker_pool_id: "prov/wt".into(),
            cache_name: format!("{n}{}", "x".repeat(100_000)),
        };
        let events = s.decide(&long, NOW).unwrap();
        events.iter().for_each(|e| s.apply(e, NOW));
    }
    let mut sizes = vec![];
    while let [WorkerEvent::PurgeRequestsExpired { requests }] =
        &s.decide(&expire(expires), expires).unwrap()[..]
    {
        sizes.push(requests.len());
        let event = WorkerEvent::PurgeRequestsExpired {
            requests: requests.clone(),
        };
        s.apply(&event, expires);
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert!(s.purges.is_empty());
}
