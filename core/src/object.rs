//! The object service's domain: named, immutable blobs with an owner project, an expiry and
//! content hashes, uploaded once under a caller-chosen `uploadId`.
//!
//! An object is an aggregate on the stream `object/<name>`: `UploadStarted` locks in its
//! project, expiry and upload id (the first `createUpload`), `HashesAdded` records hashes a
//! later call supplies, `UploadFinished` makes it downloadable and immutable, `ObjectExpired`
//! removes it. `decide` holds every rule; `apply` only moves state.
//!
//! **Invariant:** an upload id is a capability (whoever knows it may upload the object), so it
//! enters an event only as its SHA-256 digest; a presented id is compared by digest.

use crate::queue::DRIFT_MS;
use crate::time::{Millis, DAY};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Topic of the object service's events.
pub const OBJECT_TOPIC: &str = "taskledger.object";

/// Hash algorithms the service accepts (hex digests), as Taskcluster's object service.
pub const ACCEPTED_HASHES: &[&str] = &["sha256", "sha512"];

/// The stream of one object.
pub fn stream_id(name: &str) -> String {
    format!("object/{name}")
}

/// SHA-256 of an upload id: what events and the projection keep instead of the id.
pub fn upload_digest(upload_id: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, upload_id.as_bytes());
    d.as_ref().try_into().unwrap_or([0; 32])
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum ObjectEvent {
    UploadStarted {
        name: String,
        project_id: String,
        upload_digest: [u8; 32],
        expires: Millis,
        hashes: BTreeMap<String, String>,
    },
    /// A later call supplied hashes the object lacked, or the content type of its data.
    UploadUpdated {
        name: String,
        hashes: BTreeMap<String, String>,
        content_type: Option<String>,
    },
    UploadFinished {
        name: String,
    },
    ObjectExpired {
        name: String,
    },
}

impl ObjectEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            ObjectEvent::UploadStarted { .. } => "UploadStarted",
            ObjectEvent::UploadUpdated { .. } => "UploadUpdated",
            ObjectEvent::UploadFinished { .. } => "UploadFinished",
            ObjectEvent::ObjectExpired { .. } => "ObjectExpired",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            ObjectEvent::UploadStarted { name, .. }
            | ObjectEvent::UploadUpdated { name, .. }
            | ObjectEvent::UploadFinished { name }
            | ObjectEvent::ObjectExpired { name } => name,
        }
    }
}

/// An object as the projection keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Object {
    pub name: String,
    pub project_id: String,
    pub upload_digest: [u8; 32],
    pub expires: Millis,
    pub hashes: BTreeMap<String, String>,
    /// The content type the uploader declared with its upload method, if any.
    pub content_type: Option<String>,
    /// When `finishUpload` made it downloadable; `None` while uploading.
    pub finished: Option<Millis>,
    pub created: Millis,
}

impl Object {
    /// When the expiry reactor removes it: at `expires`, or a day after the upload started
    /// when it never finished.
    pub fn due(&self) -> Millis {
        match self.finished {
            Some(_) => self.expires,
            None => self.expires.min(self.created.plus(DAY)),
        }
    }
}

#[derive(Clone, Debug)]
pub enum ObjectCommand {
    /// `createUpload`: starts the upload, or repeats it with the same id (more hashes allowed).
    CreateUpload {
        name: String,
        project_id: String,
        upload_id: String,
        expires: Millis,
        hashes: BTreeMap<String, String>,
        /// The content type of a proposed upload method, if any.
        content_type: Option<String>,
    },
    /// `finishUpload`: the bytes are in place.
    FinishUpload {
        name: String,
        project_id: String,
        upload_id: String,
        hashes: BTreeMap<String, String>,
    },
    /// The expiry reactor: removes an object whose `expires` passed.
    Expire { name: String },
}

impl ObjectCommand {
    pub fn name(&self) -> &str {
        match self {
            ObjectCommand::CreateUpload { name, .. }
            | ObjectCommand::FinishUpload { name, .. }
            | ObjectCommand::Expire { name } => name,
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

/// `sha256` and `sha512` must be lower-case hex of their length; other algorithms are kept as
/// given (Taskcluster's schema allows them) but no client relies on them.
fn check_hashes(hashes: &BTreeMap<String, String>) -> Result<(), ObjectError> {
    for (algorithm, value) in hashes {
        let len = match algorithm.as_str() {
            "sha256" => 64,
            "sha512" => 128,
            _ => continue,
        };
        let lower_hex = value
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if value.len() != len || !lower_hex {
            return Err(ObjectError::Input(format!(
                "hashes.{algorithm} must match ^[a-z0-9]{{{len}}}$"
            )));
        }
    }
    Ok(())
}

/// The hashes of `new` that `known` lacks; an algorithm known with another value conflicts.
fn added_hashes(
    known: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ObjectError> {
    let mut added = BTreeMap::new();
    for (algorithm, value) in new {
        match known.get(algorithm) {
            Some(v) if v == value => {}
            Some(_) => {
                return Err(ObjectError::Conflict(format!(
                    "Object already has a different `{algorithm}` hash"
                )))
            }
            None => {
                added.insert(algorithm.clone(), value.clone());
            }
        }
    }
    Ok(added)
}

/// The object `current` (if any) answers `command` at `now` with these events.
pub fn decide(
    current: Option<&Object>,
    command: &ObjectCommand,
    now: Millis,
) -> Result<Vec<ObjectEvent>, ObjectError> {
    match command {
        ObjectCommand::CreateUpload {
            name,
            project_id,
            upload_id,
            expires,
            hashes,
            content_type,
        } => {
            check_hashes(hashes)?;
            let Some(object) = current else {
                // the queue accepts artifact expiries this far in the past, and starts their
                // uploads: the same tolerance here
                if *expires < now.minus(DRIFT_MS) {
                    return Err(ObjectError::Input("`expires` must be in the future".into()));
                }
                let mut events = vec![ObjectEvent::UploadStarted {
                    name: name.clone(),
                    project_id: project_id.clone(),
                    upload_digest: upload_digest(upload_id),
                    expires: *expires,
                    hashes: hashes.clone(),
                }];
                if content_type.is_some() {
                    events.push(ObjectEvent::UploadUpdated {
                        name: name.clone(),
                        hashes: BTreeMap::new(),
                        content_type: content_type.clone(),
                    });
                }
                return Ok(events);
            };
            if object.upload_digest != upload_digest(upload_id) {
                return Err(ObjectError::Conflict(
                    "Object already exists with a different uploadId".into(),
                ));
            }
            if object.finished.is_some() {
                return Err(ObjectError::Conflict("Upload already finished".into()));
            }
            if object.project_id != *project_id || object.expires != *expires {
                return Err(ObjectError::Conflict(
                    "Object already exists with a different projectId or expires".into(),
                ));
            }
            let added = added_hashes(&object.hashes, hashes)?;
            let new_type = content_type.is_some() && *content_type != object.content_type;
            Ok(if added.is_empty() && !new_type {
                vec![]
            } else {
                vec![ObjectEvent::UploadUpdated {
                    name: name.clone(),
                    hashes: added,
                    content_type: if new_type { content_type.clone() } else { None },
                }]
            })
        }
        ObjectCommand::FinishUpload {
            name,
            project_id,
            upload_id,
            hashes,
        } => {
            check_hashes(hashes)?;
            // upstream's texts, which name the object
            let object = current
                .ok_or_else(|| ObjectError::NotFound(format!("Object \"{name}\" not found")))?;
            if object.project_id != *project_id {
                return Err(ObjectError::Input(format!(
                    "Object \"{name}\" does not have projectId {project_id}"
                )));
            }
            if object.finished.is_some() {
                // idempotent (whatever the upload id), but hashes are fixed once finished
                for (algorithm, value) in hashes {
                    match object.hashes.get(algorithm) {
                        Some(v) if v == value => {}
                        Some(_) => return Err(ObjectError::Conflict(format!(
                            "Object \"{name}\" is already finished, but with a different hash for algorithm {algorithm}"
                        ))),
                        None => return Err(ObjectError::Conflict(format!(
                            "Object \"{name}\" is already finished, but without hash algorithm {algorithm}"
                        ))),
                    }
                }
                return Ok(vec![]);
            }
            let added = added_hashes(&object.hashes, hashes)?;
            if object.upload_digest != upload_digest(upload_id) {
                return Err(ObjectError::Conflict(format!(
                    "Object \"{name}\" does not have uploadId {upload_id}"
                )));
            }
            let mut events = Vec::new();
            if !added.is_empty() {
                events.push(ObjectEvent::UploadUpdated {
                    name: name.clone(),
                    hashes: added,
                    content_type: None,
                });
            }
            events.push(ObjectEvent::UploadFinished { name: name.clone() });
            Ok(events)
        }
        ObjectCommand::Expire { name } => Ok(match current {
            Some(o) if o.due() <= now => vec![ObjectEvent::ObjectExpired { name: name.clone() }],
            _ => vec![],
        }),
    }
}

/// Moves an object by one of its events at `at`.
pub fn apply(current: Option<Object>, event: &ObjectEvent, at: Millis) -> Option<Object> {
    match event {
        ObjectEvent::UploadStarted {
            name,
            project_id,
            upload_digest,
            expires,
            hashes,
        } => Some(Object {
            name: name.clone(),
            project_id: project_id.clone(),
            upload_digest: *upload_digest,
            expires: *expires,
            hashes: hashes.clone(),
            content_type: None,
            finished: None,
            created: at,
        }),
        ObjectEvent::UploadUpdated {
            hashes,
            content_type,
            ..
        } => current.map(|mut o| {
            o.hashes.extend(hashes.clone());
            if content_type.is_some() {
                o.content_type = content_type.clone();
            }
            o
        }),
        ObjectEvent::UploadFinished { .. } => current.map(|mut o| {
            o.finished = Some(at);
            o
        }),
        ObjectEvent::ObjectExpired { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = Millis(1_700_000_000_000);
    const SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn hashes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect()
    }

    fn create(upload_id: &str, h: &[(&str, &str)]) -> ObjectCommand {
        ObjectCommand::CreateUpload {
            name: "t/x/0/public/a".into(),
            project_id: "p".into(),
            upload_id: upload_id.into(),
            expires: NOW.plus(1000),
            hashes: hashes(h),
            content_type: None,
        }
    }

    fn finish(upload_id: &str, h: &[(&str, &str)]) -> ObjectCommand {
        ObjectCommand::FinishUpload {
            name: "t/x/0/public/a".into(),
            project_id: "p".into(),
            upload_id: upload_id.into(),
            hashes: hashes(h),
        }
    }

    /// Decides and applies `commands` in order from nothing; the last result and the state.
    fn run(commands: &[ObjectCommand]) -> (Result<Vec<ObjectEvent>, ObjectError>, Option<Object>) {
        let mut state = None;
        let mut last = Ok(vec![]);
        for c in commands {
            last = decide(state.as_ref(), c, NOW);
            for e in last.iter().flatten() {
                state = apply(state, e, NOW);
            }
        }
        (last, state)
    }

    #[test]
    fn an_upload_starts_repeats_and_finishes_once() {
        let (last, state) = run(&[create("u1", &[]), create("u1", &[("sha256", SHA256)])]);
        assert!(matches!(
            &last.unwrap()[..],
            [ObjectEvent::UploadUpdated { .. }]
        ));
        let state = state.unwrap();
        assert_eq!(state.hashes["sha256"], SHA256);
        assert_eq!(state.upload_digest, upload_digest("u1"));
        assert_eq!(state.finished, None);

        let (last, state) = run(&[create("u1", &[]), finish("u1", &[("sha256", SHA256)])]);
        assert!(matches!(
            &last.unwrap()[..],
            [
                ObjectEvent::UploadUpdated { .. },
                ObjectEvent::UploadFinished { .. }
            ]
        ));
        assert_eq!(state.unwrap().finished, Some(NOW));
        // finishing again is idempotent; with another id, or after it, creating conflicts
        let base = [create("u1", &[]), finish("u1", &[])];
        let again = |c: ObjectCommand| run(&[base[0].clone(), base[1].clone(), c]).0;
        assert_eq!(again(finish("u1", &[])), Ok(vec![]));
        assert_eq!(again(finish("u2", &[])), Ok(vec![]));
        assert!(matches!(
            again(create("u1", &[])),
            Err(ObjectError::Conflict(_))
        ));
        assert!(matches!(
            again(finish("u1", &[("sha256", SHA256)])),
            Err(ObjectError::Conflict(_))
        ));
    }

    #[test]
    fn bad_input_and_conflicts_change_nothing() {
        let other = "0".repeat(64);
        let cases = [
            (vec![create("u1", &[("sha512", "00")])], "input"),
            (
                vec![create("u1", &[("sha256", &SHA256.to_uppercase())])],
                "input",
            ),
            (vec![create("u1", &[]), finish("u2", &[])], "conflict"),
            (vec![finish("u1", &[])], "not found"),
            (vec![create("u1", &[]), create("u2", &[])], "conflict"),
            (
                vec![
                    create("u1", &[("sha256", SHA256)]),
                    finish("u1", &[("sha256", &other)]),
                ],
                "conflict",
            ),
        ];
        for (commands, kind) in cases {
            let before = run(&commands[..commands.len() - 1]).1;
            let (last, after) = run(&commands);
            let got = match last {
                Err(ObjectError::Input(_)) => "input",
                Err(ObjectError::Conflict(_)) => "conflict",
                Err(ObjectError::NotFound(_)) => "not found",
                Ok(_) => "ok",
            };
            assert_eq!(got, kind, "{commands:?}");
            assert_eq!(before, after);
        }
        let mut past = create("u1", &[]);
        if let ObjectCommand::CreateUpload { expires, .. } = &mut past {
            *expires = NOW.minus(DRIFT_MS + 1);
        }
        assert!(matches!(run(&[past]).0, Err(ObjectError::Input(_))));
    }

    #[test]
    fn objects_expire_only_once_due() {
        // an upload never finished goes a day after it started, even when `expires` is later
        let mut long = create("u1", &[]);
        if let ObjectCommand::CreateUpload { expires, .. } = &mut long {
            *expires = NOW.plus(10 * DAY);
        }
        let unfinished = run(&[long.clone()]).1.unwrap();
        assert_eq!(unfinished.due(), NOW.plus(DAY));
        let finished = run(&[long, finish("u1", &[])]).1.unwrap();
        assert_eq!(finished.due(), NOW.plus(10 * DAY));

        let expire = ObjectCommand::Expire {
            name: "t/x/0/public/a".into(),
        };
        let (_, state) = run(&[create("u1", &[])]);
        assert_eq!(decide(state.as_ref(), &expire, NOW), Ok(vec![]));
        let later = decide(state.as_ref(), &expire, NOW.plus(1000)).unwrap();
        assert!(apply(state, &later[0], NOW).is_none());
        assert_eq!(decide(None, &expire, NOW.plus(1000)), Ok(vec![]));
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let events = vec![
            ObjectEvent::UploadStarted {
                name: "t/x/0/public/a".into(),
                project_id: "p".into(),
                upload_digest: [7; 32],
                expires: NOW,
                hashes: hashes(&[("sha256", SHA256)]),
            },
            ObjectEvent::UploadUpdated {
                name: "t/x/0/public/a".into(),
                hashes: BTreeMap::new(),
                content_type: Some("text/plain".into()),
            },
            ObjectEvent::UploadFinished {
                name: "t/x/0/public/a".into(),
            },
            ObjectEvent::ObjectExpired {
                name: "t/x/0/public/a".into(),
            },
        ];
        crate::codec::assert_golden_events(
            &stream_id("t/x/0/public/a"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/object/events_v1.hex"
            ),
        );
    }
}
