//! The secrets service's domain: named JSON values with an expiry, written and removed by
//! callers, removed by the expiry reactor once expired.
//!
//! A secret is an aggregate on the stream `secret/<name>`. `SecretWritten` creates or replaces
//! it (there is no version check: the last write wins, as upstream), `SecretRemoved` records a
//! `remove` (whether or not the secret existed, as upstream's audit does), `SecretExpired` the
//! reactor's removal. `decide` holds the rules; `apply` only moves state.
//!
//! **Invariant:** a value enters an event, and the projection, only sealed (AES-256-GCM, bound
//! to the secret's name by `seal_owner`): the log, an audit dump and `events tail` hold no
//! value in clear, and a sealed value cannot be moved to another name.

use crate::access::seal::Sealed;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// Topic of the secrets service's events.
pub const SECRETS_TOPIC: &str = "taskledger.secrets";

/// The stream of one secret.
pub fn stream_id(name: &str) -> String {
    format!("secret/{name}")
}

/// What a secret's value is sealed for (the associated data of its encryption): the name
/// behind a NUL, which neither a name nor a clientId (the owner of a sealed access token) can
/// hold, so no sealed value opens as another's.
pub fn seal_owner(name: &str) -> String {
    format!("secret\0{name}")
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum SecretEvent {
    /// `set`: the value (its JSON text, sealed) and expiry, created or replaced.
    SecretWritten {
        name: String,
        value: Sealed,
        expires: Millis,
    },
    /// `remove`.
    SecretRemoved { name: String },
    /// The expiry reactor removed a secret whose `expires` had passed.
    SecretExpired { name: String },
}

impl SecretEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            SecretEvent::SecretWritten { .. } => "SecretWritten",
            SecretEvent::SecretRemoved { .. } => "SecretRemoved",
            SecretEvent::SecretExpired { .. } => "SecretExpired",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            SecretEvent::SecretWritten { name, .. }
            | SecretEvent::SecretRemoved { name }
            | SecretEvent::SecretExpired { name } => name,
        }
    }

    /// The audit action upstream records for it, given whether the secret existed before.
    pub fn action_type(&self, existed: bool) -> &'static str {
        match self {
            SecretEvent::SecretWritten { .. } if existed => "updated",
            SecretEvent::SecretWritten { .. } => "created",
            SecretEvent::SecretRemoved { .. } => "deleted",
            SecretEvent::SecretExpired { .. } => "expired",
        }
    }
}

/// A secret as the projection keeps it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Secret {
    pub name: String,
    pub value: Sealed,
    pub expires: Millis,
    /// When it was first written (a later `set` keeps it).
    pub created: Millis,
    pub updated: Millis,
}

impl Secret {
    /// Whether `get` and `list` still see it at `now` (upstream: `expires >= now`).
    pub fn visible(&self, now: Millis) -> bool {
        self.expires >= now
    }
}

#[derive(Clone, Debug)]
pub enum SecretCommand {
    /// `set`: the value already sealed for the name (`seal_owner`).
    Set {
        name: String,
        value: Sealed,
        expires: Millis,
    },
    /// `remove`.
    Remove { name: String },
    /// The expiry reactor: removes the secret if its `expires` has passed.
    Expire { name: String },
}

impl SecretCommand {
    pub fn name(&self) -> &str {
        match self {
            SecretCommand::Set { name, .. }
            | SecretCommand::Remove { name }
            | SecretCommand::Expire { name } => name,
        }
    }
}

/// The secrets service refuses nothing its gateway let through; the type keeps the engine's
/// shape (`single::Service`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("{0}")]
    Input(String),
}

/// The secret `current` (if any) answers `command` at `now` with these events.
pub fn decide(
    current: Option<&Secret>,
    command: &SecretCommand,
    now: Millis,
) -> Result<Vec<SecretEvent>, SecretError> {
    Ok(match command {
        SecretCommand::Set {
            name,
            value,
            expires,
        } => vec![SecretEvent::SecretWritten {
            name: name.clone(),
            value: value.clone(),
            expires: *expires,
        }],
        SecretCommand::Remove { name } => vec![SecretEvent::SecretRemoved { name: name.clone() }],
        SecretCommand::Expire { name } => match current {
            Some(s) if s.expires < now => vec![SecretEvent::SecretExpired { name: name.clone() }],
            _ => vec![],
        },
    })
}

/// Moves a secret by one of its events at `at`.
pub fn apply(current: Option<Secret>, event: &SecretEvent, at: Millis) -> Option<Secret> {
    match event {
        SecretEvent::SecretWritten {
            name,
            value,
            expires,
        } => Some(Secret {
            name: name.clone(),
            value: value.clone(),
            expires: *expires,
            created: current.map_or(at, |s| s.created),
            updated: at,
        }),
        SecretEvent::SecretRemoved { .. } | SecretEvent::SecretExpired { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::seal::SealKey;
    use crate::time::HOUR;

    fn sealed(name: &str, value: &str) -> Sealed {
        SealKey::new([3; 32]).seal(&seal_owner(name), value, [5; 12])
    }

    fn set(name: &str, value: &str, expires: Millis) -> SecretCommand {
        SecretCommand::Set {
            name: name.into(),
            value: sealed(name, value),
            expires,
        }
    }

    fn run(current: Option<Secret>, command: &SecretCommand, now: Millis) -> Option<Secret> {
        let events = decide(current.as_ref(), command, now).unwrap();
        events
            .iter()
            .fold(current, |state, event| apply(state, event, now))
    }

    #[test]
    fn set_creates_then_replaces_keeping_the_creation_time() {
        let t0 = Millis(1_000_000);
        let first = run(None, &set("project/a", r#"{"x":1}"#, t0.plus(HOUR)), t0).unwrap();
        assert_eq!((first.created, first.updated), (t0, t0));
        let t1 = t0.plus(10);
        let events = decide(
            Some(&first),
            &set("project/a", r#"{"x":2}"#, t1.plus(HOUR)),
            t1,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].action_type(true), "updated");
        let second = run(
            Some(first),
            &set("project/a", r#"{"x":2}"#, t1.plus(HOUR)),
            t1,
        )
        .unwrap();
        assert_eq!((second.created, second.updated), (t0, t1));
        assert_eq!(second.expires, t1.plus(HOUR));
        assert_eq!(
            SealKey::new([3; 32]).open(&seal_owner("project/a"), &second.value),
            Some(r#"{"x":2}"#.to_string())
        );
    }

    #[test]
    fn remove_is_recorded_whether_or_not_the_secret_exists() {
        let now = Millis(5_000);
        let remove = SecretCommand::Remove {
            name: "gone".into(),
        };
        let events = decide(None, &remove, now).unwrap();
        assert_eq!(
            events,
            vec![SecretEvent::SecretRemoved {
                name: "gone".into()
            }]
        );
        assert_eq!(events[0].action_type(false), "deleted");
        let existing = run(None, &set("gone", "{}", now.plus(HOUR)), now);
        assert_eq!(run(existing, &remove, now), None);
    }

    #[test]
    fn expiry_removes_only_what_has_expired() {
        let t0 = Millis(10_000);
        let secret = run(None, &set("s", "{}", t0.plus(HOUR)), t0).unwrap();
        let expire = SecretCommand::Expire { name: "s".into() };
        // visible up to and including its expiry instant, removed only after it
        assert!(secret.visible(t0.plus(HOUR)));
        assert!(!secret.visible(t0.plus(HOUR + 1)));
        assert_eq!(
            decide(Some(&secret), &expire, t0.plus(HOUR)).unwrap(),
            vec![]
        );
        assert_eq!(
            decide(Some(&secret), &expire, t0.plus(HOUR + 1)).unwrap(),
            vec![SecretEvent::SecretExpired { name: "s".into() }]
        );
        assert_eq!(decide(None, &expire, t0.plus(HOUR + 1)).unwrap(), vec![]);
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let events = vec![
            SecretEvent::SecretWritten {
                name: "project/a".into(),
                value: Sealed {
                    nonce: [9; 12],
                    ciphertext: vec![1, 2, 3, 4],
                },
                expires: Millis(1_700_000_360_000),
            },
            SecretEvent::SecretRemoved {
                name: "project/a".into(),
            },
            SecretEvent::SecretExpired {
                name: "project/a".into(),
            },
        ];
        crate::codec::assert_golden_events(
            &stream_id("project/a"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/secrets/events_v1.hex"
            ),
        );
    }

    #[test]
    fn a_value_sealed_for_one_name_does_not_open_for_another() {
        let value = sealed("a", r#"{"token":"hunter2"}"#);
        let key = SealKey::new([3; 32]);
        assert!(key.open(&seal_owner("a"), &value).is_some());
        assert_eq!(key.open(&seal_owner("b"), &value), None);
        // and JSON renderings of an event never carry it
        let event = SecretEvent::SecretWritten {
            name: "a".into(),
            value,
            expires: Millis(1),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            !json.contains("hunter2") && json.contains("[redacted]"),
            "{json}"
        );
    }
}
