//! Column families and key layouts: the only place keys are built. Integers are big-endian so
//! byte order is numeric order; strings are followed by a 0 byte where more follows.

use taskledger_core::ids::{Slug, TaskId};
use taskledger_core::time::Millis;

pub const CF_LOG: &str = "log";
pub const CF_META: &str = "meta";
pub const CF_STREAMS: &str = "streams";
pub const CF_TASKS: &str = "tasks";
pub const CF_GROUPS: &str = "groups";
pub const CF_GROUP_MEMBERS: &str = "group_members";
pub const CF_DEPENDENTS: &str = "dependents";
pub const CF_PENDING: &str = "pending";
pub const CF_CLAIMS: &str = "claims";
pub const CF_TIMERS: &str = "timers";
pub const CF_ARTIFACTS: &str = "artifacts";
pub const CF_WORKERS: &str = "workers";
pub const CF_TASK_QUEUES: &str = "task_queues";
/// The embedded log's hash chain: for each log key, SHA-256(previous hash, offset, record).
pub const CF_LOG_CHAIN: &str = "log_chain";
/// The embedded log's index by stream (record key): topic, partition, key, offset -> ().
pub const CF_LOG_INDEX: &str = "log_index";
/// The auth projection: clients, roles, stream sequences and the audit indexes.
pub const CF_AUTH: &str = "auth";
/// The worker-manager projection: pools, workers, stream sequences and pool errors.
pub const CF_WORKER_MANAGER: &str = "worker_manager";
/// The queue's expiry index: when each task and task group goes (`expiry`).
pub const CF_EXPIRIES: &str = "expiries";
/// The object projection: objects, stream sequences and the expiry index.
pub const CF_OBJECTS: &str = "objects";
/// The secrets projection: secrets (values sealed), stream sequences, the expiry index and
/// the audit rows.
pub const CF_SECRETS: &str = "secrets";
/// The index projection: entries, namespaces, stream sequences, the expiry indexes and the
/// last completion indexed.
pub const CF_INDEX: &str = "index";
/// The hooks projection: hooks, their last fires, stream sequences and the schedule index.
pub const CF_HOOKS: &str = "hooks";
/// The notify projection: the denylist, the email outbox, the duplicate check's window, the
/// email rate rows and stream sequences.
pub const CF_NOTIFY: &str = "notify";
/// The GitHub projection: deliveries taken, webhooks waiting for their job, installations,
/// builds and their listing index, stream sequences.
pub const CF_GITHUB: &str = "github";

pub const ALL_CFS: &[&str] = &[
    CF_LOG,
    CF_LOG_CHAIN,
    CF_LOG_INDEX,
    CF_META,
    CF_STREAMS,
    CF_TASKS,
    CF_GROUPS,
    CF_GROUP_MEMBERS,
    CF_DEPENDENTS,
    CF_PENDING,
    CF_CLAIMS,
    CF_TIMERS,
    CF_ARTIFACTS,
    CF_WORKERS,
    CF_TASK_QUEUES,
    CF_EXPIRIES,
    CF_AUTH,
    CF_WORKER_MANAGER,
    CF_OBJECTS,
    CF_SECRETS,
    CF_INDEX,
    CF_HOOKS,
    CF_NOTIFY,
    CF_GITHUB,
];

/// The projection column families (everything but the log), for digests and rebuilds.
pub const PROJECTION_CFS: &[&str] = &[
    CF_STREAMS,
    CF_TASKS,
    CF_GROUPS,
    CF_GROUP_MEMBERS,
    CF_DEPENDENTS,
    CF_PENDING,
    CF_CLAIMS,
    CF_TIMERS,
    CF_ARTIFACTS,
    CF_WORKERS,
    CF_TASK_QUEUES,
    CF_EXPIRIES,
    CF_AUTH,
    CF_WORKER_MANAGER,
    CF_OBJECTS,
    CF_SECRETS,
    CF_INDEX,
    CF_HOOKS,
    CF_NOTIFY,
    CF_GITHUB,
];

/// An empty key with room for `len` bytes: keys are built on every fold and append, and
/// growing a vector a few bytes at a time reallocates it each time.
fn key(len: usize) -> Vec<u8> {
    Vec::with_capacity(len)
}

fn with_str(mut out: Vec<u8>, s: &str) -> Vec<u8> {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out
}

/// `log`: topic, partition, offset.
pub fn log_key(topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut k = with_str(key(topic.len() + 13), topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn log_prefix(topic: &str, partition: u32) -> Vec<u8> {
    let mut k = with_str(Vec::new(), topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// Topic, partition and offset of a `log` (or `log_chain`) key.
pub fn parse_log_key(key: &[u8]) -> Option<(String, u32, u64)> {
    let nul = key.iter().position(|b| *b == 0)?;
    let topic = std::str::from_utf8(&key[..nul]).ok()?.to_string();
    let rest = key.get(nul + 1..)?;
    if rest.len() != 12 {
        return None;
    }
    let partition = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let offset = u64::from_be_bytes(rest[4..].try_into().ok()?);
    Some((topic, partition, offset))
}

/// `log_index`: the records of one stream in offset order.
pub fn log_index(topic: &str, partition: u32, stream: &str, offset: u64) -> Vec<u8> {
    let mut k = with_str(key(topic.len() + stream.len() + 14), topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k = with_str(k, stream);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn log_index_prefix(topic: &str, partition: u32, stream: &str) -> Vec<u8> {
    let mut k = with_str(key(topic.len() + stream.len() + 6), topic);
    k.extend_from_slice(&partition.to_be_bytes());
    with_str(k, stream)
}

pub fn offset_from_log_key(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `meta`: the next offset a consumer (a projection or a reactor) will read.
pub fn consumer_offset(consumer: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut k = with_str(b"offset/".to_vec(), consumer);
    k = with_str(k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// `meta`: the kept epoch index of a Kafka topic's partition (by the topic's Kafka name: a
/// server started with another topic prefix does not find it).
/// `meta`: the log the projections are folded from (see `store::log_identity`).
pub const LOG_IDENTITY: &[u8] = b"log-identity";

pub fn kafka_epochs(kafka_topic: &str, partition: u32) -> Vec<u8> {
    let mut k = kafka_epochs_of(kafka_topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

/// The prefix of every `kafka_epochs` key of one topic.
pub fn kafka_epochs_of(kafka_topic: &str) -> Vec<u8> {
    with_str(b"kafka-epochs/".to_vec(), kafka_topic)
}

pub fn task(id: &TaskId) -> Vec<u8> {
    id.0.to_vec()
}

pub fn pair(a: &Slug, b: &Slug) -> Vec<u8> {
    let mut k = key(32);
    k.extend_from_slice(&a.0);
    k.extend_from_slice(&b.0);
    k
}

pub fn second_of_pair(key: &[u8]) -> Option<Slug> {
    Some(Slug(key.get(16..32)?.try_into().ok()?))
}

/// `pending`: queue, priority rank, time pending, taskId, runId.
pub fn pending(queue: &str, rank: u8, at: Millis, task: &TaskId, run: u32) -> Vec<u8> {
    let mut k = with_str(key(queue.len() + 30), queue);
    k.push(rank);
    k.extend_from_slice(&(at.0 as u64).to_be_bytes());
    k.extend_from_slice(&task.0);
    k.extend_from_slice(&run.to_be_bytes());
    k
}

pub fn queue_prefix(queue: &str) -> Vec<u8> {
    with_str(Vec::new(), queue)
}

/// The taskId and runId at the end of a `pending` or `claims` key.
pub fn task_run_suffix(key: &[u8]) -> Option<(TaskId, u32)> {
    let n = key.len();
    let task: [u8; 16] = key.get(n.checked_sub(20)?..n - 4)?.try_into().ok()?;
    let run: [u8; 4] = key.get(n - 4..)?.try_into().ok()?;
    Some((Slug(task), u32::from_be_bytes(run)))
}

/// `claims`: queue, taskId, runId -> takenUntil.
pub fn claim(queue: &str, task: &TaskId, run: u32) -> Vec<u8> {
    let mut k = with_str(key(queue.len() + 21), queue);
    k.extend_from_slice(&task.0);
    k.extend_from_slice(&run.to_be_bytes());
    k
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TimerKind {
    Deadline = 1,
    ClaimExpiry = 2,
}

/// `timers`: time, kind, taskId, runId. Ordered by time, so the earliest is first.
pub fn timer(at: Millis, kind: TimerKind, task: &TaskId, run: u32) -> Vec<u8> {
    let mut k = key(29);
    k.extend_from_slice(&(at.0 as u64).to_be_bytes());
    k.push(kind as u8);
    k.extend_from_slice(&task.0);
    k.extend_from_slice(&run.to_be_bytes());
    k
}

pub fn parse_timer(key: &[u8]) -> Option<(Millis, TimerKind, TaskId, u32)> {
    if key.len() != 29 {
        return None;
    }
    let at = u64::from_be_bytes(key[0..8].try_into().ok()?) as i64;
    let kind = match key[8] {
        1 => TimerKind::Deadline,
        2 => TimerKind::ClaimExpiry,
        _ => return None,
    };
    let task = Slug(key[9..25].try_into().ok()?);
    let run = u32::from_be_bytes(key[25..29].try_into().ok()?);
    Some((Millis(at), kind, task, run))
}

/// What an `expiries` entry removes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Expiring {
    Task(TaskId),
    TaskGroup(TaskId),
    /// An artifact, at its own `expires` (at most its task's).
    Artifact(TaskId, u32, String),
}

/// `expiries`: time, kind, then the task or task-group id (and for an artifact its run and
/// name). Ordered by time, so the earliest is first.
pub fn expiry(at: Millis, what: &Expiring) -> Vec<u8> {
    let name_len = match what {
        Expiring::Artifact(_, _, name) => 4 + name.len(),
        Expiring::Task(_) | Expiring::TaskGroup(_) => 0,
    };
    let mut k = key(25 + name_len);
    k.extend_from_slice(&(at.0.max(0) as u64).to_be_bytes());
    match what {
        Expiring::Task(id) => {
            k.push(1);
            k.extend_from_slice(&id.0);
        }
        Expiring::TaskGroup(id) => {
            k.push(2);
            k.extend_from_slice(&id.0);
        }
        Expiring::Artifact(task, run, name) => {
            k.push(3);
            k.extend_from_slice(&task.0);
            k.extend_from_slice(&run.to_be_bytes());
            k.extend_from_slice(name.as_bytes());
        }
    }
    k
}

pub fn parse_expiry(key: &[u8]) -> Option<(Millis, Expiring)> {
    let at = Millis(u64::from_be_bytes(key.get(0..8)?.try_into().ok()?) as i64);
    let id = Slug(key.get(9..25)?.try_into().ok()?);
    let what = match key.get(8)? {
        1 if key.len() == 25 => Expiring::Task(id),
        2 if key.len() == 25 => Expiring::TaskGroup(id),
        3 => {
            let run = u32::from_be_bytes(key.get(25..29)?.try_into().ok()?);
            let name = std::str::from_utf8(key.get(29..)?).ok()?.to_string();
            Expiring::Artifact(id, run, name)
        }
        _ => return None,
    };
    Some((at, what))
}

/// `artifacts`: taskId, runId, name.
pub fn artifact(task: &TaskId, run: u32, name: &str) -> Vec<u8> {
    let mut k = key(20 + name.len());
    k.extend_from_slice(&task.0);
    k.extend_from_slice(&run.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The task and run of an `artifacts` key.
pub fn task_run_of_artifact(key: &[u8]) -> Option<(TaskId, u32)> {
    let task = Slug(key.get(..16)?.try_into().ok()?);
    let run = u32::from_be_bytes(key.get(16..20)?.try_into().ok()?);
    Some((task, run))
}

pub fn artifact_prefix(task: &TaskId, run: u32) -> Vec<u8> {
    let mut k = key(20);
    k.extend_from_slice(&task.0);
    k.extend_from_slice(&run.to_be_bytes());
    k
}

/// `workers`: queue, workerGroup, workerId.
pub fn worker(queue: &str, group: &str, id: &str) -> Vec<u8> {
    let k = with_str(key(queue.len() + group.len() + id.len() + 3), queue);
    let k = with_str(k, group);
    with_str(k, id)
}

pub fn task_queue(queue: &str) -> Vec<u8> {
    queue.as_bytes().to_vec()
}

/// `auth`: a client by id.
pub fn auth_client(id: &str) -> Vec<u8> {
    with_str(b"c".to_vec(), id)
}

/// `auth`: a role by id.
pub fn auth_role(id: &str) -> Vec<u8> {
    with_str(b"r".to_vec(), id)
}

/// `auth`: the last applied sequence of a stream.
pub fn auth_stream(stream: &str) -> Vec<u8> {
    with_str(b"s".to_vec(), stream)
}

/// Prefixes of the `auth` CF's kinds of rows.
pub const AUTH_CLIENT_PREFIX: &[u8] = b"c";
pub const AUTH_ROLE_PREFIX: &[u8] = b"r";
pub const AUTH_STREAM_PREFIX: &[u8] = b"s";

/// The id of an `auth_client`/`auth_role`/`auth_stream` key.
pub fn auth_id(key: &[u8]) -> Option<&str> {
    let body = key.get(1..key.len().checked_sub(1)?)?;
    std::str::from_utf8(body).ok()
}

/// `auth`: an audit entry of an entity (kind, id), in log order.
pub fn audit_entity(kind: &str, id: &str, offset: u64) -> Vec<u8> {
    let mut k = audit_entity_prefix(kind, id);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn audit_entity_prefix(kind: &str, id: &str) -> Vec<u8> {
    with_str(with_str(b"e".to_vec(), kind), id)
}

/// `auth`: an audit entry by the client that acted, in log order.
pub fn audit_actor(client_id: &str, offset: u64) -> Vec<u8> {
    let mut k = audit_actor_prefix(client_id);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn audit_actor_prefix(client_id: &str) -> Vec<u8> {
    with_str(b"a".to_vec(), client_id)
}

/// `worker_manager`: a pool by id.
pub fn wm_pool(id: &str) -> Vec<u8> {
    with_str(WM_POOL_PREFIX.to_vec(), id)
}

/// `worker_manager`: a worker by pool, group and id (so a pool's workers are contiguous).
pub fn wm_worker(pool: &str, group: &str, id: &str) -> Vec<u8> {
    with_str(
        with_str(with_str(WM_WORKER_PREFIX.to_vec(), pool), group),
        id,
    )
}

/// `worker_manager`: the last applied sequence of a stream.
pub fn wm_stream(stream: &str) -> Vec<u8> {
    with_str(WM_STREAM_PREFIX.to_vec(), stream)
}

/// `worker_manager`: an error of a pool, in log order.
pub fn wm_error(pool: &str, offset: u64) -> Vec<u8> {
    let mut k = wm_error_prefix(pool);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn wm_error_prefix(pool: &str) -> Vec<u8> {
    with_str(WM_ERROR_PREFIX.to_vec(), pool)
}

/// `worker_manager`: an audit entry of a worker pool, in log order.
pub fn wm_audit(pool: &str, offset: u64) -> Vec<u8> {
    let mut k = wm_audit_prefix(pool);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn wm_audit_prefix(pool: &str) -> Vec<u8> {
    with_str(WM_AUDIT_PREFIX.to_vec(), pool)
}

/// `worker_manager`: a worker-pool audit entry by the client that acted, in log order.
pub fn wm_audit_actor(client_id: &str, offset: u64) -> Vec<u8> {
    let mut k = wm_audit_actor_prefix(client_id);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn wm_audit_actor_prefix(client_id: &str) -> Vec<u8> {
    with_str(WM_AUDIT_ACTOR_PREFIX.to_vec(), client_id)
}

/// Prefixes of the `worker_manager` CF's kinds of rows.
pub const WM_POOL_PREFIX: &[u8] = b"p";
pub const WM_AUDIT_PREFIX: &[u8] = b"A";
pub const WM_AUDIT_ACTOR_PREFIX: &[u8] = b"C";
pub const WM_WORKER_PREFIX: &[u8] = b"w";
pub const WM_STREAM_PREFIX: &[u8] = b"s";
pub const WM_ERROR_PREFIX: &[u8] = b"e";
pub const WM_PURGE_PREFIX: &[u8] = b"u";

/// A purge-cache request: `u<pool>\0<cache name>\0`.
pub fn wm_purge(pool: &str, cache_name: &str) -> Vec<u8> {
    with_str(with_str(WM_PURGE_PREFIX.to_vec(), pool), cache_name)
}

/// `objects`: an object by name.
pub fn object(name: &str) -> Vec<u8> {
    with_str(OBJECT_PREFIX.to_vec(), name)
}

/// `objects`: the last applied sequence of a stream.
pub fn object_stream(stream: &str) -> Vec<u8> {
    with_str(OBJECT_STREAM_PREFIX.to_vec(), stream)
}

/// `objects`: expiry index, time then name (the earliest first).
pub fn object_expiry(at: Millis, name: &str) -> Vec<u8> {
    timed(OBJECT_EXPIRY_PREFIX, at, name)
}

/// Time and name of an `object_expiry` key.
pub fn parse_object_expiry(key: &[u8]) -> Option<(Millis, &str)> {
    parse_timed(OBJECT_EXPIRY_PREFIX, key)
}

/// `secrets`: a secret by name (names sort as their bytes: `list` walks these in order).
pub fn secret(name: &str) -> Vec<u8> {
    with_str(SECRET_PREFIX.to_vec(), name)
}

/// `secrets`: the last applied sequence of a stream.
pub fn secret_stream(stream: &str) -> Vec<u8> {
    with_str(SECRET_STREAM_PREFIX.to_vec(), stream)
}

/// `secrets`: expiry index, time then name (the earliest first).
pub fn secret_expiry(at: Millis, name: &str) -> Vec<u8> {
    timed(SECRET_EXPIRY_PREFIX, at, name)
}

/// Time and name of a `secret_expiry` key.
pub fn parse_secret_expiry(key: &[u8]) -> Option<(Millis, &str)> {
    parse_timed(SECRET_EXPIRY_PREFIX, key)
}

/// `secrets`: an audit entry of a secret, in log order.
pub fn secret_audit(name: &str, offset: u64) -> Vec<u8> {
    let mut k = secret_audit_prefix(name);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn secret_audit_prefix(name: &str) -> Vec<u8> {
    with_str(SECRET_AUDIT_PREFIX.to_vec(), name)
}

/// `secrets`: a secret's audit entry by the client that acted, in log order.
pub fn secret_audit_actor(client_id: &str, offset: u64) -> Vec<u8> {
    let mut k = secret_audit_actor_prefix(client_id);
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

pub fn secret_audit_actor_prefix(client_id: &str) -> Vec<u8> {
    with_str(SECRET_AUDIT_ACTOR_PREFIX.to_vec(), client_id)
}

/// Prefixes of the `secrets` CF's kinds of rows.
pub const SECRET_PREFIX: &[u8] = b"n";
pub const SECRET_STREAM_PREFIX: &[u8] = b"s";
pub const SECRET_EXPIRY_PREFIX: &[u8] = b"e";
pub const SECRET_AUDIT_PREFIX: &[u8] = b"A";
pub const SECRET_AUDIT_ACTOR_PREFIX: &[u8] = b"C";

/// `index`: the entry at `path`, under its namespace then its name (`listTasks` walks one
/// namespace's entries in name order).
pub fn index_entry(path: &str) -> Vec<u8> {
    let (namespace, name) = taskledger_core::index::split(path);
    with_str(index_entries_of(namespace), name)
}

/// `index`: the prefix of the entries directly in `namespace`.
pub fn index_entries_of(namespace: &str) -> Vec<u8> {
    with_str(INDEX_ENTRY_PREFIX.to_vec(), namespace)
}

/// `index`: a namespace, under its parent then its last part.
pub fn index_namespace(namespace: &str) -> Vec<u8> {
    let (parent, name) = taskledger_core::index::split(namespace);
    with_str(index_namespaces_of(parent), name)
}

/// `index`: the prefix of the namespaces directly in `parent`.
pub fn index_namespaces_of(parent: &str) -> Vec<u8> {
    with_str(INDEX_NAMESPACE_PREFIX.to_vec(), parent)
}

/// The name in a key that is `prefix`, the name and a 0 byte (a `secret` key, or one under
/// `index_entries_of` or `index_namespaces_of`); `None` for a key of another shape.
pub fn name_after<'k>(key: &'k [u8], prefix: &[u8]) -> Option<&'k str> {
    let rest = key.strip_prefix(prefix)?.strip_suffix(&[0])?;
    std::str::from_utf8(rest).ok()
}

/// `index`: the last applied sequence of a stream.
pub fn index_stream(stream: &str) -> Vec<u8> {
    with_str(INDEX_STREAM_PREFIX.to_vec(), stream)
}

/// `index`: the entries' expiry index, time then path.
pub fn index_entry_expiry(at: Millis, path: &str) -> Vec<u8> {
    timed(INDEX_ENTRY_EXPIRY_PREFIX, at, path)
}

/// `index`: the namespaces' expiry index, time then namespace.
pub fn index_namespace_expiry(at: Millis, namespace: &str) -> Vec<u8> {
    timed(INDEX_NAMESPACE_EXPIRY_PREFIX, at, namespace)
}

/// An expiry index key: `prefix`, the time (big-endian, so the earliest sorts first), the name.
fn timed(prefix: &[u8], at: Millis, name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&(at.0.max(0) as u64).to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// Time and path of an `index_entry_expiry` key.
pub fn parse_index_entry_expiry(key: &[u8]) -> Option<(Millis, &str)> {
    parse_timed(INDEX_ENTRY_EXPIRY_PREFIX, key)
}

/// Time and namespace of an `index_namespace_expiry` key.
pub fn parse_index_namespace_expiry(key: &[u8]) -> Option<(Millis, &str)> {
    parse_timed(INDEX_NAMESPACE_EXPIRY_PREFIX, key)
}

/// Time and name of a `timed` key under `prefix`.
fn parse_timed<'k>(prefix: &[u8], key: &'k [u8]) -> Option<(Millis, &'k str)> {
    let rest = key.strip_prefix(prefix)?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?) as i64;
    Some((Millis(at), std::str::from_utf8(&rest[8..]).ok()?))
}

/// Prefixes of the `index` CF's kinds of rows, and the key of the last completion indexed.
pub const INDEX_ENTRY_PREFIX: &[u8] = b"t";
pub const INDEX_NAMESPACE_PREFIX: &[u8] = b"n";
pub const INDEX_STREAM_PREFIX: &[u8] = b"s";
pub const INDEX_ENTRY_EXPIRY_PREFIX: &[u8] = b"e";
pub const INDEX_NAMESPACE_EXPIRY_PREFIX: &[u8] = b"x";
pub const INDEX_LAST_COMPLETION: &[u8] = b"c";

/// `hooks`: a hook, under its group then its id.
pub fn hook(group: &str, id: &str) -> Vec<u8> {
    with_str(hooks_of(group), id)
}

/// `hooks`: the prefix of the hooks of `group`.
pub fn hooks_of(group: &str) -> Vec<u8> {
    with_str(HOOK_PREFIX.to_vec(), group)
}

/// The group of a `hook` key; `None` past the hooks.
pub fn hook_group(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(HOOK_PREFIX)?;
    let end = rest.iter().position(|&b| b == 0)?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// `hooks`: a last fire of a hook, newest first (`u64::MAX - offset`).
pub fn hook_fire(group: &str, id: &str, offset: u64) -> Vec<u8> {
    let mut k = hook_fires_of(group, id);
    k.extend_from_slice(&(u64::MAX - offset).to_be_bytes());
    k
}

/// `hooks`: the prefix of a hook's last fires.
pub fn hook_fires_of(group: &str, id: &str) -> Vec<u8> {
    with_str(with_str(HOOK_FIRE_PREFIX.to_vec(), group), id)
}

/// `hooks`: the last applied sequence of a stream.
pub fn hook_stream(stream: &str) -> Vec<u8> {
    with_str(HOOK_STREAM_PREFIX.to_vec(), stream)
}

/// `hooks`: the schedule index, next fire time then hook (group, 0, id).
pub fn hook_schedule(at: Millis, group: &str, id: &str) -> Vec<u8> {
    let mut k = timed(HOOK_SCHEDULE_PREFIX, at, group);
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Time and hook (`<group>\0<id>`) of a `hook_schedule` key.
pub fn parse_hook_schedule(key: &[u8]) -> Option<(Millis, &str)> {
    parse_timed(HOOK_SCHEDULE_PREFIX, key)
}

/// Prefixes of the `hooks` CF's kinds of rows.
pub const HOOK_PREFIX: &[u8] = b"h";
pub const HOOK_FIRE_PREFIX: &[u8] = b"f";
pub const HOOK_STREAM_PREFIX: &[u8] = b"s";
pub const HOOK_SCHEDULE_PREFIX: &[u8] = b"d";

/// `notify`: a denylisted address, by kind then address.
pub fn notify_denied(channel: u8, address: &str) -> Vec<u8> {
    let mut k = key(2 + address.len());
    k.extend_from_slice(NOTIFY_DENIED_PREFIX);
    k.push(channel);
    k.extend_from_slice(address.as_bytes());
    k
}

/// `notify`: the email queued at log offset `offset`, waiting for delivery.
pub fn notify_outbox(offset: u64) -> Vec<u8> {
    let mut k = NOTIFY_OUTBOX_PREFIX.to_vec();
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// `notify`: the `n`th notification's digest (the duplicate check keeps the latest).
pub fn notify_sent(n: u64) -> Vec<u8> {
    let mut k = NOTIFY_SENT_PREFIX.to_vec();
    k.extend_from_slice(&n.to_be_bytes());
    k
}

/// `notify`: an email queued for `address` at `at` (log offset `offset`), for the rate limit.
pub fn notify_rate(address: &str, at: Millis, offset: u64) -> Vec<u8> {
    let mut k = notify_rate_of(address);
    k.extend_from_slice(&(at.0.max(0) as u64).to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// `notify`: the prefix of `notify_rate` rows of `address`.
pub fn notify_rate_of(address: &str) -> Vec<u8> {
    with_str(NOTIFY_RATE_PREFIX.to_vec(), address)
}

/// `notify`: the time index of the rate rows: time, log offset, then the address.
pub fn notify_rate_time(at: Millis, offset: u64, address: &str) -> Vec<u8> {
    let mut k = key(17 + address.len());
    k.extend_from_slice(NOTIFY_RATE_TIME_PREFIX);
    k.extend_from_slice(&(at.0.max(0) as u64).to_be_bytes());
    k.extend_from_slice(&offset.to_be_bytes());
    k.extend_from_slice(address.as_bytes());
    k
}

/// Time, offset and address of a `notify_rate_time` key; `None` past the index.
pub fn parse_notify_rate_time(key: &[u8]) -> Option<(Millis, u64, &str)> {
    let rest = key.strip_prefix(NOTIFY_RATE_TIME_PREFIX)?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let offset = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
    let address = std::str::from_utf8(rest.get(16..)?).ok()?;
    Some((Millis(at as i64), offset, address))
}

/// `notify`: the last applied sequence of a stream.
pub fn notify_stream(stream: &str) -> Vec<u8> {
    with_str(NOTIFY_STREAM_PREFIX.to_vec(), stream)
}

/// Prefixes of the `notify` CF's kinds of rows, and the key of the notification count.
pub const NOTIFY_DENIED_PREFIX: &[u8] = b"d";
pub const NOTIFY_OUTBOX_PREFIX: &[u8] = b"o";
pub const NOTIFY_SENT_PREFIX: &[u8] = b"h";
pub const NOTIFY_RATE_PREFIX: &[u8] = b"r";
pub const NOTIFY_RATE_TIME_PREFIX: &[u8] = b"t";
pub const NOTIFY_STREAM_PREFIX: &[u8] = b"s";
pub const NOTIFY_SENT_COUNT: &[u8] = b"c";

/// `github`: a delivery taken (its log offset).
pub fn github_delivery(event_id: &str) -> Vec<u8> {
    with_str(GITHUB_DELIVERY_PREFIX.to_vec(), event_id)
}

/// `github`: the webhook received at log offset `offset`, waiting for its job.
pub fn github_queued(offset: u64) -> Vec<u8> {
    let mut k = GITHUB_QUEUED_PREFIX.to_vec();
    k.extend_from_slice(&offset.to_be_bytes());
    k
}

/// `github`: an account's installation (the login in lower case: GitHub's logins are
/// case-insensitive).
pub fn github_installation(owner: &str) -> Vec<u8> {
    with_str(
        GITHUB_INSTALLATION_PREFIX.to_vec(),
        &owner.to_ascii_lowercase(),
    )
}

/// `github`: a build by its task group.
pub fn github_build(task_group_id: &[u8; 16]) -> Vec<u8> {
    let mut k = GITHUB_BUILD_PREFIX.to_vec();
    k.extend_from_slice(task_group_id);
    k
}

/// `github`: a build whose state is `pending` (the reporter's work list).
pub fn github_pending(task_group_id: &[u8; 16]) -> Vec<u8> {
    let mut k = GITHUB_PENDING_PREFIX.to_vec();
    k.extend_from_slice(task_group_id);
    k
}

/// `github`: the prefix of the listing index's rows of an organization (and repository),
/// both as routing keys spell them; everything with neither.
pub fn github_listing_prefix(organization: Option<&str>, repository: Option<&str>) -> Vec<u8> {
    let mut k = GITHUB_LISTING_PREFIX.to_vec();
    if let Some(o) = organization {
        k.extend_from_slice(o.as_bytes());
        k.push(0);
        if let Some(r) = repository {
            k.extend_from_slice(r.as_bytes());
            k.push(0);
        }
    }
    k
}

/// `github`: the listing index: organization, repository, creation time, task group.
pub fn github_listing(
    organization: &str,
    repository: &str,
    created: Millis,
    task_group_id: &[u8; 16],
) -> Vec<u8> {
    let mut k = github_listing_prefix(Some(organization), Some(repository));
    k.extend_from_slice(&(created.0.max(0) as u64).to_be_bytes());
    k.extend_from_slice(task_group_id);
    k
}

/// `github`: the last applied sequence of a stream.
pub fn github_stream(stream: &str) -> Vec<u8> {
    with_str(GITHUB_STREAM_PREFIX.to_vec(), stream)
}

/// Prefixes of the `github` CF's kinds of rows.
pub const GITHUB_DELIVERY_PREFIX: &[u8] = b"d";
pub const GITHUB_QUEUED_PREFIX: &[u8] = b"q";
pub const GITHUB_INSTALLATION_PREFIX: &[u8] = b"i";
pub const GITHUB_BUILD_PREFIX: &[u8] = b"b";
pub const GITHUB_LISTING_PREFIX: &[u8] = b"l";
pub const GITHUB_STREAM_PREFIX: &[u8] = b"s";
pub const GITHUB_PENDING_PREFIX: &[u8] = b"p";

/// Prefixes of the `objects` CF's kinds of rows.
pub const OBJECT_PREFIX: &[u8] = b"o";
pub const OBJECT_STREAM_PREFIX: &[u8] = b"s";
pub const OBJECT_EXPIRY_PREFIX: &[u8] = b"e";

/// The stream of a `wm_stream` key.
pub fn wm_stream_id(key: &[u8]) -> Option<&str> {
    auth_id(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_sort_by_time_and_parse_back() {
        let t = Slug([7; 16]);
        let kinds = [
            Expiring::Task(t),
            Expiring::TaskGroup(t),
            Expiring::Artifact(t, 3, "public/a b".into()),
        ];
        for what in &kinds {
            assert_eq!(
                parse_expiry(&expiry(Millis(9), what)),
                Some((Millis(9), what.clone()))
            );
            assert!(expiry(Millis(8), what) < expiry(Millis(9), &kinds[0]));
        }
    }

    #[test]
    fn keys_sort_and_parse() {
        let t = Slug([7; 16]);
        assert!(pending("q/a", 0, Millis(5), &t, 0) < pending("q/a", 1, Millis(1), &t, 0));
        assert!(pending("q/a", 1, Millis(1), &t, 0) < pending("q/a", 1, Millis(2), &t, 0));
        assert_eq!(
            task_run_suffix(&pending("q/a", 3, Millis(9), &t, 4)),
            Some((t, 4))
        );
        let k = timer(Millis(77), TimerKind::ClaimExpiry, &t, 2);
        assert_eq!(
            parse_timer(&k),
            Some((Millis(77), TimerKind::ClaimExpiry, t, 2))
        );
        assert!(
            timer(Millis(1), TimerKind::ClaimExpiry, &t, 0)
                < timer(Millis(2), TimerKind::Deadline, &t, 0)
        );
        assert_eq!(offset_from_log_key(&log_key("x", 0, 42)), Some(42));
    }

    /// The keys built into pre-sized vectors keep their layout (it is on disk) and fit
    /// their room exactly, so none grew while being built.
    #[test]
    fn presized_keys_keep_their_bytes_and_fit() {
        let t = Slug([7; 16]);
        let u = Slug([9; 16]);
        let cat = |parts: &[&[u8]]| parts.concat();
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (
                log_key("tp", 1, 5),
                cat(&[b"tp\0", &1u32.to_be_bytes(), &5u64.to_be_bytes()]),
            ),
            (
                log_index("tp", 1, "task/x", 5),
                cat(&[
                    b"tp\0",
                    &1u32.to_be_bytes(),
                    b"task/x\0",
                    &5u64.to_be_bytes(),
                ]),
            ),
            (
                log_index_prefix("tp", 1, "task/x"),
                cat(&[b"tp\0", &1u32.to_be_bytes(), b"task/x\0"]),
            ),
            (pair(&t, &u), cat(&[&t.0, &u.0])),
            (
                pending("q/a", 2, Millis(3), &t, 4),
                cat(&[
                    b"q/a\0",
                    &[2],
                    &3u64.to_be_bytes(),
                    &t.0,
                    &4u32.to_be_bytes(),
                ]),
            ),
            (
                claim("q/a", &t, 4),
                cat(&[b"q/a\0", &t.0, &4u32.to_be_bytes()]),
            ),
            (
                timer(Millis(3), TimerKind::Deadline, &t, 4),
                cat(&[&3u64.to_be_bytes(), &[1], &t.0, &4u32.to_be_bytes()]),
            ),
            (
                expiry(Millis(3), &Expiring::Task(t)),
                cat(&[&3u64.to_be_bytes(), &[1], &t.0]),
            ),
            (
                expiry(Millis(3), &Expiring::Artifact(t, 4, "public/x".into())),
                cat(&[
                    &3u64.to_be_bytes(),
                    &[3],
                    &t.0,
                    &4u32.to_be_bytes(),
                    b"public/x",
                ]),
            ),
            (
                artifact(&t, 4, "public/x"),
                cat(&[&t.0, &4u32.to_be_bytes(), b"public/x"]),
            ),
            (artifact_prefix(&t, 4), cat(&[&t.0, &4u32.to_be_bytes()])),
            (worker("q/a", "g", "w"), b"q/a\0g\0w\0".to_vec()),
        ];
        for (i, (built, expected)) in cases.iter().enumerate() {
            assert_eq!(built, expected, "case {i}");
            assert_eq!(built.capacity(), built.len(), "case {i} grew");
        }
    }
}
