//! The index service's domain: dotted names (`a.b.c`) that point at a task, written by
//! `insertTask` and by the completion of a task that carries `index.<path>` routes, removed by
//! `deleteTask` and by the expiry reactor.
//!
//! An entry lives at its full path, split at the last dot into a namespace (`a.b`) and a name
//! (`c`). Writing an entry also creates or extends the namespaces above it (`a`, `a.b`), which
//! are derived state: `apply` moves them, no event names them except their expiry.
//!
//! **Rank rule** (reference/index.md §1): a write replaces the entry at its path only when the
//! entry's rank is at most the new one (equal ranks: the newer wins); otherwise nothing is
//! written and the caller is answered with the entry that stays. An entry past its `expires`
//! counts as absent here, as it does for every read (upstream compares against it until its
//! daily sweep removes it; no reader could see it meanwhile).
//!
//! **Invariant:** a completion is indexed at most once. Its events carry the queue log's offset
//! of the `RunResolved` they answer, the projection keeps the highest, and `decide` writes
//! nothing for a completion at or below it, so a reactor that reads the queue log again after
//! a crash repeats no write. (A completion the rank rule turned away on every path wrote
//! nothing, so a re-read decides it again, against the index as it is then.)

use crate::ids::TaskId;
use crate::time::{Millis, DAY};
use serde::{Deserialize, Serialize};

/// Topic of the index service's events.
pub const INDEX_TOPIC: &str = "taskledger.index";

/// Ranks are Postgres `integer`s upstream: a rank outside this range could not be stored.
pub const RANK_RANGE: std::ops::RangeInclusive<i64> = (i32::MIN as i64)..=(i32::MAX as i64);

/// Upstream's pattern of an index path (and of a namespace): dot-separated, no empty part.
pub const PATH_RE: &str = r"^([a-zA-Z0-9_!~*'()%-]+\.)*[a-zA-Z0-9_!~*'()%-]+$";

/// Whether `path` matches `PATH_RE`.
pub fn valid_path(path: &str) -> bool {
    let part_ok = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_!~*'()%-".contains(&b))
    };
    path.split('.').all(part_ok)
}

/// A path split at its last dot: (namespace, name); a path without a dot has namespace `""`.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('.').unwrap_or(("", path))
}

/// The namespaces an entry at `path` lives under, outermost first: `a.b.c` gives `a`, `a.b`.
pub fn namespaces_above(path: &str) -> impl Iterator<Item = &str> {
    let (namespace, _) = split(path);
    namespace
        .match_indices('.')
        .map(move |(i, _)| &namespace[..i])
        .chain((!namespace.is_empty()).then_some(namespace))
}

/// A namespace's expiry for an entry that expires at `expires`: the start of the next day
/// (UTC), as upstream rounds it.
pub fn namespace_expiry(expires: Millis) -> Millis {
    Millis((expires.0.div_euclid(DAY) + 1) * DAY)
}

/// The stream of one index path's writes, deletion and expiry.
pub fn stream_id(path: &str) -> String {
    format!("index/{path}")
}

/// The stream of a namespace's expiry.
pub fn namespace_stream_id(namespace: &str) -> String {
    format!("index-namespace/{namespace}")
}

/// The stream of the entries the route indexer writes.
pub const ROUTES_STREAM: &str = "index-routes";

/// A completed run, as the route indexer indexes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The queue log offset of its `RunResolved`.
    pub offset: u64,
    pub task_id: TaskId,
    /// Its task's `index.` routes as paths (`route_paths`).
    pub paths: Vec<String>,
    /// The rank, data and expiry of its task's `extra.index` (`completion_fields`).
    pub rank: i64,
    pub data: String,
    pub expires: Millis,
}

/// An entry as the projection keeps it and the API shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct IndexedTask {
    /// The full path.
    pub path: String,
    pub task_id: TaskId,
    pub rank: i64,
    /// A JSON object's text.
    pub data: String,
    pub expires: Millis,
}

impl IndexedTask {
    /// Whether reads see it at `now` (upstream: `expires > now`).
    pub fn visible(&self, now: Millis) -> bool {
        self.expires > now
    }
}

/// A namespace as the projection keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Namespace {
    /// The full dotted name.
    pub namespace: String,
    pub expires: Millis,
}

impl Namespace {
    pub fn visible(&self, now: Millis) -> bool {
        self.expires > now
    }
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum IndexEvent {
    /// An entry written at `path` (created or replaced), its namespaces created or extended.
    /// `completion`: the queue log offset of the `RunResolved` it indexes, if that wrote it.
    TaskIndexed {
        entry: IndexedTask,
        completion: Option<u64>,
    },
    /// `deleteTask` of an entry that existed.
    IndexedTaskDeleted { path: String },
    /// The expiry reactor removed an entry past its `expires`.
    IndexedTaskExpired { path: String },
    /// The expiry reactor removed a namespace past its `expires`.
    NamespaceExpired { namespace: String },
}

impl IndexEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            IndexEvent::TaskIndexed { .. } => "TaskIndexed",
            IndexEvent::IndexedTaskDeleted { .. } => "IndexedTaskDeleted",
            IndexEvent::IndexedTaskExpired { .. } => "IndexedTaskExpired",
            IndexEvent::NamespaceExpired { .. } => "NamespaceExpired",
        }
    }
}

#[derive(Clone, Debug)]
pub enum IndexCommand {
    /// `insertTask`.
    Insert(IndexedTask),
    /// `deleteTask`.
    Delete { path: String },
    /// The route indexer: runs that completed, in the queue log's order.
    IndexCompletions(Vec<Completion>),
    /// The expiry reactor: removes the entry if its `expires` has passed.
    Expire { path: String },
    /// The expiry reactor: removes the namespace if its `expires` has passed.
    ExpireNamespace { namespace: String },
}

impl IndexCommand {
    /// The entries `decide` needs to see.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            IndexCommand::Insert(entry) => vec![entry.path.as_str()],
            IndexCommand::Delete { path } | IndexCommand::Expire { path } => vec![path.as_str()],
            IndexCommand::IndexCompletions(completions) => completions
                .iter()
                .flat_map(|c| c.paths.iter().map(String::as_str))
                .collect(),
            IndexCommand::ExpireNamespace { .. } => vec![],
        }
    }

    /// The stream its events go to.
    pub fn stream(&self) -> String {
        match self {
            IndexCommand::Insert(entry) => stream_id(&entry.path),
            IndexCommand::Delete { path } | IndexCommand::Expire { path } => stream_id(path),
            IndexCommand::IndexCompletions(_) => ROUTES_STREAM.to_string(),
            IndexCommand::ExpireNamespace { namespace } => namespace_stream_id(namespace),
        }
    }
}

/// What `decide` reads of the projection.
pub trait IndexState {
    /// The entry stored at `path`, expired or not.
    fn entry(&self, path: &str) -> Option<IndexedTask>;
    fn namespace(&self, namespace: &str) -> Option<Namespace>;
    /// The highest completion offset indexed so far, if any.
    fn last_completion(&self) -> Option<u64>;
}

/// The index service refuses nothing its gateway let through; the type keeps the engine's
/// shape (`single::Service`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    #[error("{0}")]
    Input(String),
}

/// Whether `new` may replace `old`, the entry at its path, at `now` (the rank rule).
fn replaces(old: Option<&IndexedTask>, new: &IndexedTask, now: Millis) -> bool {
    match old {
        Some(old) if old.visible(now) => old.rank <= new.rank,
        _ => true,
    }
}

/// The entries `completions` write, each path of each completion (once) in order, against
/// `state` and the entries written before it in the same command.
fn index_completions(
    state: &impl IndexState,
    completions: &[Completion],
    now: Millis,
) -> Vec<IndexEvent> {
    debug_assert!(
        completions.windows(2).all(|w| w[0].offset < w[1].offset),
        "completions come in the queue log's order"
    );
    let last = state.last_completion();
    let mut written: std::collections::HashMap<&str, IndexedTask> = Default::default();
    let mut events = Vec::new();
    for c in completions
        .iter()
        .filter(|c| last.is_none_or(|l| l < c.offset))
    {
        let mut seen = std::collections::HashSet::new();
        for path in c.paths.iter().filter(|p| seen.insert(p.as_str())) {
            let entry = IndexedTask {
                path: path.clone(),
                task_id: c.task_id,
                rank: c.rank,
                data: c.data.clone(),
                expires: c.expires,
            };
            let old = written
                .get(path.as_str())
                .cloned()
                .or_else(|| state.entry(path));
            if replaces(old.as_ref(), &entry, now) {
                written.insert(path.as_str(), entry.clone());
                events.push(IndexEvent::TaskIndexed {
                    entry,
                    completion: Some(c.offset),
                });
            }
        }
    }
    events
}

/// `command`'s events against `state` at `now`.
pub fn decide(
    state: &impl IndexState,
    command: &IndexCommand,
    now: Millis,
) -> Result<Vec<IndexEvent>, IndexError> {
    Ok(match command {
        IndexCommand::Insert(entry) => {
            if replaces(state.entry(&entry.path).as_ref(), entry, now) {
                vec![IndexEvent::TaskIndexed {
                    entry: entry.clone(),
                    completion: None,
                }]
            } else {
                vec![]
            }
        }
        IndexCommand::Delete { path } => match state.entry(path) {
            Some(_) => vec![IndexEvent::IndexedTaskDeleted { path: path.clone() }],
            None => vec![],
        },
        IndexCommand::IndexCompletions(completions) => index_completions(state, completions, now),
        IndexCommand::Expire { path } => match state.entry(path) {
            Some(e) if e.expires < now => {
                vec![IndexEvent::IndexedTaskExpired { path: path.clone() }]
            }
            _ => vec![],
        },
        IndexCommand::ExpireNamespace { namespace } => match state.namespace(namespace) {
            Some(n) if n.expires < now => vec![IndexEvent::NamespaceExpired {
                namespace: namespace.clone(),
            }],
            _ => vec![],
        },
    })
}

/// `extra.index` of a completed task, read as upstream's indexer reads it: `rank` (a number,
/// default 0), `data` (an object, default `{}`), `expires` (a date, default the task's). `None`
/// when the task is not to be indexed (a field of the wrong type, a rank no integer column
/// holds, a date that does not parse).
pub fn completion_fields(
    extra: &serde_json::Value,
    task_expires: Millis,
) -> Option<(i64, String, Millis)> {
    let index = extra.get("index");
    let field = |name: &str| index.and_then(|i| i.get(name));
    let rank = match field("rank") {
        None => 0,
        Some(v) => rank_of(v)?,
    };
    let data = match field("data") {
        None => "{}".to_string(),
        Some(v) if v.is_object() => v.to_string(),
        Some(_) => return None,
    };
    let expires = match field("expires") {
        None => task_expires,
        Some(serde_json::Value::String(s)) => Millis::parse_rfc3339(s)?,
        Some(_) => return None,
    };
    Some((rank, data, expires))
}

/// A JSON number as a rank: an integer (`5` or `5.0`) in `RANK_RANGE`.
pub fn rank_of(v: &serde_json::Value) -> Option<i64> {
    let n = v.as_f64()?;
    let whole = n.fract() == 0.0 && RANK_RANGE.contains(&(n as i64));
    whole.then_some(n as i64)
}

/// The paths of a task's `index.` routes that are valid index paths, each once, in order.
pub fn route_paths(routes: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    routes
        .iter()
        .filter_map(|r| r.strip_prefix("index."))
        .filter(|p| valid_path(p) && seen.insert(*p))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Slug;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem {
        entries: HashMap<String, IndexedTask>,
        namespaces: HashMap<String, Namespace>,
        last: Option<u64>,
    }

    impl IndexState for Mem {
        fn entry(&self, path: &str) -> Option<IndexedTask> {
            self.entries.get(path).cloned()
        }
        fn namespace(&self, namespace: &str) -> Option<Namespace> {
            self.namespaces.get(namespace).cloned()
        }
        fn last_completion(&self) -> Option<u64> {
            self.last
        }
    }

    impl Mem {
        /// The fold the projection does, in memory.
        fn apply(&mut self, event: &IndexEvent) {
            match event {
                IndexEvent::TaskIndexed { entry, completion } => {
                    for ns in namespaces_above(&entry.path) {
                        let expires = namespace_expiry(entry.expires);
                        let n = self.namespaces.entry(ns.into()).or_insert(Namespace {
                            namespace: ns.into(),
                            expires,
                        });
                        n.expires = n.expires.max(expires);
                    }
                    self.entries.insert(entry.path.clone(), entry.clone());
                    if let Some(c) = completion {
                        self.last = Some(self.last.map_or(*c, |l| l.max(*c)));
                    }
                }
                IndexEvent::IndexedTaskDeleted { path }
                | IndexEvent::IndexedTaskExpired { path } => {
                    self.entries.remove(path);
                }
                IndexEvent::NamespaceExpired { namespace } => {
                    self.namespaces.remove(namespace);
                }
            }
        }
        fn run(&mut self, command: &IndexCommand, now: Millis) -> Vec<IndexEvent> {
            let events = decide(&*self, command, now).unwrap();
            for e in &events {
                self.apply(e);
            }
            events
        }
    }

    fn entry(path: &str, rank: i64, expires: Millis) -> IndexedTask {
        IndexedTask {
            path: path.into(),
            task_id: Slug([rank as u8; 16]),
            rank,
            data: "{}".into(),
            expires,
        }
    }

    #[test]
    fn paths_split_at_the_last_dot_and_follow_upstreams_pattern() {
        assert_eq!(split("a.b.c"), ("a.b", "c"));
        assert_eq!(split("top"), ("", "top"));
        assert_eq!(namespaces_above("a.b.c").collect::<Vec<_>>(), ["a", "a.b"]);
        assert_eq!(namespaces_above("top").count(), 0);
        for ok in ["a", "a.b", "x_1.(y)!~*'%-"] {
            assert!(valid_path(ok), "{ok}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a/b", "a b", "ä"] {
            assert!(!valid_path(bad), "{bad}");
        }
    }

    #[test]
    fn namespaces_expire_at_the_start_of_the_next_utc_day() {
        let t = Millis::parse_rfc3339("2026-12-07T13:45:00.000Z").unwrap();
        let next = Millis::parse_rfc3339("2026-12-08T00:00:00.000Z").unwrap();
        assert_eq!(namespace_expiry(t), next);
        // midnight itself rounds up a whole day, as upstream's "date + 1 day"
        assert_eq!(namespace_expiry(next), next.plus(DAY));
    }

    #[test]
    fn the_rank_rule_keeps_a_higher_rank_and_lets_an_equal_one_replace() {
        let now = Millis(1_000_000);
        let later = now.plus(DAY);
        let mut m = Mem::default();
        assert_eq!(
            m.run(&IndexCommand::Insert(entry("a.b", 5, later)), now)
                .len(),
            1
        );
        // lower: kept out
        assert!(m
            .run(&IndexCommand::Insert(entry("a.b", 4, later)), now)
            .is_empty());
        assert_eq!(m.entry("a.b").unwrap().rank, 5);
        // equal: the newer wins
        let mut same = entry("a.b", 5, later);
        same.data = r#"{"v":2}"#.into();
        assert_eq!(m.run(&IndexCommand::Insert(same.clone()), now).len(), 1);
        assert_eq!(m.entry("a.b").unwrap(), same);
        // an expired entry does not stand in the way
        let mut old = Mem::default();
        old.run(&IndexCommand::Insert(entry("a.b", 9, now.plus(10))), now);
        assert_eq!(
            old.run(&IndexCommand::Insert(entry("a.b", 1, later)), now.plus(11))
                .len(),
            1
        );
    }

    #[test]
    fn namespaces_are_created_and_only_ever_extended() {
        let now = Millis(0);
        let mut m = Mem::default();
        m.run(
            &IndexCommand::Insert(entry("a.b.c", 1, Millis(3 * DAY + 5))),
            now,
        );
        m.run(&IndexCommand::Insert(entry("a.x", 1, Millis(DAY + 5))), now);
        assert_eq!(m.namespace("a").unwrap().expires, Millis(4 * DAY));
        assert_eq!(m.namespace("a.b").unwrap().expires, Millis(4 * DAY));
        assert!(m.namespace("a.b.c").is_none());
        // expiry takes only what has passed
        let expire = IndexCommand::ExpireNamespace {
            namespace: "a.b".into(),
        };
        assert!(decide(&m, &expire, Millis(4 * DAY)).unwrap().is_empty());
        assert_eq!(m.run(&expire, Millis(4 * DAY + 1)).len(), 1);
        assert!(m.namespace("a.b").is_none());
    }

    #[test]
    fn a_completion_is_indexed_once_on_every_path_the_rank_rule_allows() {
        let now = Millis(0);
        let later = now.plus(DAY);
        let mut m = Mem::default();
        m.run(&IndexCommand::Insert(entry("p.high", 100, later)), now);
        let completion = |offset, rank, paths: &[&str]| Completion {
            offset,
            task_id: Slug([offset as u8; 16]),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            rank,
            data: "{}".into(),
            expires: later,
        };
        let indexed = |events: &[IndexEvent]| -> Vec<(String, u64)> {
            events
                .iter()
                .map(|e| {
                    let IndexEvent::TaskIndexed { entry, completion } = e else {
                        panic!("{e:?}")
                    };
                    (entry.path.clone(), completion.unwrap())
                })
                .collect()
        };
        let first = completion(40, 10, &["p.latest", "p.high", "p.latest"]);
        let events = m.run(&IndexCommand::IndexCompletions(vec![first.clone()]), now);
        assert_eq!(indexed(&events), [("p.latest".to_string(), 40)]);
        assert_eq!(m.last_completion(), Some(40));
        // read again after a crash: nothing more
        let again = IndexCommand::IndexCompletions(vec![completion(12, 50, &["p.x"]), first]);
        assert!(m.run(&again, now).is_empty());
        // several in one command: each sees what the ones before it wrote
        let batch = IndexCommand::IndexCompletions(vec![
            completion(41, 10, &["p.latest", "p.y"]),
            completion(42, 3, &["p.latest", "p.y"]),
            completion(43, 10, &["p.y"]),
        ]);
        assert_eq!(
            indexed(&m.run(&batch, now)),
            [
                ("p.latest".to_string(), 41),
                ("p.y".to_string(), 41),
                ("p.y".to_string(), 43)
            ]
        );
        assert_eq!(m.entry("p.latest").unwrap().task_id, Slug([41; 16]));
        assert_eq!(m.entry("p.y").unwrap().task_id, Slug([43; 16]));
        assert_eq!(m.last_completion(), Some(43));
    }

    #[test]
    fn delete_and_expire_write_only_for_what_is_there() {
        let now = Millis(100);
        let mut m = Mem::default();
        let delete = IndexCommand::Delete { path: "a.b".into() };
        assert!(m.run(&delete, now).is_empty());
        m.run(&IndexCommand::Insert(entry("a.b", 1, now.plus(5))), now);
        let expire = IndexCommand::Expire { path: "a.b".into() };
        assert!(m.run(&expire, now.plus(5)).is_empty());
        assert_eq!(m.run(&delete, now).len(), 1);
        assert!(m.entry("a.b").is_none());
    }

    #[test]
    fn extra_index_is_read_as_upstreams_indexer_reads_it() {
        let expires = Millis(1_000);
        let read = |extra: serde_json::Value| completion_fields(&extra, expires);
        assert_eq!(
            read(serde_json::json!({})),
            Some((0, "{}".to_string(), expires))
        );
        assert_eq!(
            read(serde_json::json!({"index": {"rank": 17.0, "data": {"k": 1},
                "expires": "2030-01-01T00:00:00.000Z"}})),
            Some((
                17,
                r#"{"k":1}"#.to_string(),
                Millis::parse_rfc3339("2030-01-01T00:00:00.000Z").unwrap()
            ))
        );
        for bad in [
            serde_json::json!({"index": {"rank": "1"}}),
            serde_json::json!({"index": {"rank": 1.5}}),
            serde_json::json!({"index": {"rank": 3e10}}),
            serde_json::json!({"index": {"data": [1]}}),
            serde_json::json!({"index": {"expires": "soon"}}),
        ] {
            assert_eq!(read(bad.clone()), None, "{bad}");
        }
        let routes = [
            "index.a.b",
            "other",
            "index.a.b",
            "index.bad..path",
            "index.c",
        ]
        .map(String::from);
        assert_eq!(route_paths(&routes), ["a.b", "c"]);
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let entry = IndexedTask {
            path: "project.v1.latest".into(),
            task_id: Slug([4; 16]),
            rank: 1_700_000_000,
            data: r#"{"rev":"abc"}"#.into(),
            expires: Millis(1_800_000_000_000),
        };
        let events = vec![
            IndexEvent::TaskIndexed {
                entry: entry.clone(),
                completion: None,
            },
            IndexEvent::TaskIndexed {
                entry,
                completion: Some(42),
            },
            IndexEvent::IndexedTaskDeleted {
                path: "project.v1.latest".into(),
            },
            IndexEvent::IndexedTaskExpired {
                path: "project.v1.latest".into(),
            },
            IndexEvent::NamespaceExpired {
                namespace: "project.v1".into(),
            },
        ];
        crate::codec::assert_golden_events(
            &stream_id("project.v1.latest"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/index/events_v1.hex"
            ),
        );
    }
}
