//! The hooks service's domain: stored task templates that become a `createTask` when they
//! fire, on a cron schedule or when a caller triggers them (reference/hooks.md).
//!
//! A hook is an aggregate on the stream `hook/<hookGroupId>/<hookId>`. `HookCreated` and
//! `HookUpdated` set its definition and reset the next scheduled fire; `HookFired` records a
//! fire (the task it created, or why it failed) and, for a scheduled fire, moves the schedule
//! on; `TriggerTokenReset` replaces the token that lets an unauthenticated webhook trigger it.
//! Rendering the template and creating the task happen outside (the gateway), before the fire
//! is recorded: `decide` holds the rules about the hook itself, `apply` only moves state.
//!
//! **Invariant:** a trigger token enters an event, and the projection, only sealed
//! (AES-256-GCM, bound to the hook by `token_owner`).

use crate::access::seal::Sealed;
use crate::ids::Slug;
use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// Topic of the hooks service's events.
pub const HOOKS_TOPIC: &str = "taskledger.hooks";

/// The `nextScheduledDate` of a hook with no schedule (upstream: the year 4000), so it never
/// comes due.
pub const NEVER: Millis = Millis(64_060_588_800_000);

/// The stream of one hook. A group id holds no `/`, so the split is unambiguous.
pub fn stream_id(group: &str, id: &str) -> String {
    format!("hook/{group}/{id}")
}

/// The stream of the hook `<hookGroupId>/<hookId>` (as the audit tools name it).
pub fn stream_id_of(hook: &str) -> String {
    format!("hook/{hook}")
}

/// What a hook's trigger token is sealed for: the hook behind a NUL, which neither a clientId
/// nor a secret's owner can hold, so no sealed token opens as another's.
pub fn token_owner(group: &str, id: &str) -> String {
    format!("hook-token\0{group}/{id}")
}

/// Whether `s` may be a `hookGroupId` (`^[a-zA-Z0-9-_]{1,1000}$`), or with `slash`, a
/// `hookId` (which may also hold `/`).
pub fn valid_id(s: &str, slash: bool) -> bool {
    (1..=1000).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (slash && b == b'/'))
}

/// A Pulse binding of a hook (stored and returned; see the gateway on what fires them).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Binding {
    pub exchange: String,
    pub routing_key_pattern: String,
}

/// What a caller defines (`create-hook-request`, its defaults filled).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct HookDefinition {
    pub name: String,
    pub description: String,
    pub owner: String,
    pub email_on_error: bool,
    /// The JSON-e template of the task, as compact JSON text.
    pub task: String,
    pub bindings: Vec<Binding>,
    pub schedule: Vec<String>,
    /// The JSON schema a trigger's payload must satisfy, as compact JSON text.
    pub trigger_schema: String,
}

/// How a fire came about (`firedBy`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum FiredBy {
    Schedule,
    TriggerHook,
    TriggerHookWithToken,
    PulseMessage,
}

impl FiredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            FiredBy::Schedule => "schedule",
            FiredBy::TriggerHook => "triggerHook",
            FiredBy::TriggerHookWithToken => "triggerHookWithToken",
            FiredBy::PulseMessage => "pulseMessage",
        }
    }
}

/// One fire that reached `createTask` (or failed on its way there): a last-fires row.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LastFire {
    pub fired_by: FiredBy,
    pub task_id: Slug,
    /// When the fire was attempted (`taskCreateTime`).
    pub time: Millis,
    /// `None` on success; otherwise the error's text, as upstream stores it.
    pub error: Option<String>,
}

/// A hook's next scheduled fire: the task id it will use (so a retried fire creates the same
/// task) and when it comes due.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NextFire {
    pub task_id: Slug,
    pub at: Millis,
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum HookEvent {
    /// createHook of a new hook.
    HookCreated {
        group: String,
        id: String,
        definition: HookDefinition,
        token: Sealed,
        next: NextFire,
    },
    /// createHook repeated with the definition the hook has: nothing changes, and the
    /// service announces the hook again, as upstream does.
    HookCreateRepeated { group: String, id: String },
    /// updateHook: the new definition, and the schedule started over from it.
    HookUpdated {
        group: String,
        id: String,
        definition: HookDefinition,
        next: NextFire,
    },
    /// removeHook (whether or not the hook existed, as upstream announces it either way).
    HookRemoved { group: String, id: String },
    /// resetTriggerToken.
    TriggerTokenReset {
        group: String,
        id: String,
        token: Sealed,
    },
    /// A fire: its last-fires row (none when the template rendered to nothing), and for a
    /// scheduled fire, the next one.
    HookFired {
        group: String,
        id: String,
        fire: Option<LastFire>,
        next: Option<NextFire>,
    },
}

impl HookEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            HookEvent::HookCreated { .. } => "HookCreated",
            HookEvent::HookCreateRepeated { .. } => "HookCreateRepeated",
            HookEvent::HookUpdated { .. } => "HookUpdated",
            HookEvent::HookRemoved { .. } => "HookRemoved",
            HookEvent::TriggerTokenReset { .. } => "TriggerTokenReset",
            HookEvent::HookFired { .. } => "HookFired",
        }
    }

    /// The hook it concerns: (hookGroupId, hookId).
    pub fn hook(&self) -> (&str, &str) {
        match self {
            HookEvent::HookCreated { group, id, .. }
            | HookEvent::HookCreateRepeated { group, id }
            | HookEvent::HookUpdated { group, id, .. }
            | HookEvent::HookRemoved { group, id }
            | HookEvent::TriggerTokenReset { group, id, .. }
            | HookEvent::HookFired { group, id, .. } => (group, id),
        }
    }
}

/// A hook as the projection keeps it (its last fires are rows of their own).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Hook {
    pub group: String,
    pub id: String,
    pub definition: HookDefinition,
    pub token: Sealed,
    pub next: NextFire,
}

#[derive(Clone, Debug)]
pub enum HookCommand {
    /// createHook: the token already sealed for the hook, the first scheduled task's id.
    Create {
        group: String,
        id: String,
        definition: HookDefinition,
        token: Sealed,
        next_task_id: Slug,
    },
    /// updateHook; with `keep_bindings`, the hook's bindings stay (the request had none).
    Update {
        group: String,
        id: String,
        definition: HookDefinition,
        keep_bindings: bool,
        next_task_id: Slug,
    },
    Remove {
        group: String,
        id: String,
    },
    ResetToken {
        group: String,
        id: String,
        token: Sealed,
    },
    /// Records a fire. A scheduled one names the task id it fired with and the id the next
    /// scheduled fire will use; the schedule moves on only if the hook still waited for the
    /// fired one (no update or other fire came in between).
    RecordFire {
        group: String,
        id: String,
        fire: Option<LastFire>,
        scheduled: Option<(Slug, Slug)>,
    },
}

impl HookCommand {
    pub fn hook(&self) -> (&str, &str) {
        match self {
            HookCommand::Create { group, id, .. }
            | HookCommand::Update { group, id, .. }
            | HookCommand::Remove { group, id }
            | HookCommand::ResetToken { group, id, .. }
            | HookCommand::RecordFire { group, id, .. } => (group, id),
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("No such hook")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Input(String),
}

/// How a schedule entry is read: cron-parser's syntax, five fields or six (seconds first),
/// evaluated in UTC; no year field.
fn parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
}

/// Whether `pattern` parses; the parser's complaint otherwise.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    parser()
        .parse(pattern)
        .map(|_| ())
        .map_err(|e| format!("{e} in {pattern}"))
}

/// The earliest occurrence of any of `schedule`'s patterns strictly after `now`; `NEVER` for
/// an empty schedule (or one whose patterns never occur again).
pub fn next_after(schedule: &[String], now: Millis) -> Result<Millis, HookError> {
    let parser = parser();
    let start = now.to_datetime();
    let mut next = NEVER;
    for pattern in schedule {
        let cron = parser
            .parse(pattern)
            .map_err(|e| HookError::Input(format!("{e} in {pattern}")))?;
        if let Ok(at) = cron.find_next_occurrence(&start, false) {
            next = next.min(Millis(at.timestamp_millis()));
        }
    }
    Ok(next)
}

/// The hook `current` (if any) answers `command` at `now` with these events.
pub fn decide(
    current: Option<&Hook>,
    command: &HookCommand,
    now: Millis,
) -> Result<Vec<HookEvent>, HookError> {
    let (group, id) = (command.hook().0.to_string(), command.hook().1.to_string());
    Ok(match command {
        HookCommand::Create {
            definition,
            token,
            next_task_id,
            ..
        } => match current {
            Some(hook) if hook.definition == *definition => {
                vec![HookEvent::HookCreateRepeated { group, id }]
            }
            Some(_) => {
                return Err(HookError::Conflict(format!(
                    "hook `{group}/{id}` already exists."
                )))
            }
            None => vec![HookEvent::HookCreated {
                next: NextFire {
                    task_id: *next_task_id,
                    at: next_after(&definition.schedule, now)?,
                },
                group,
                id,
                definition: definition.clone(),
                token: token.clone(),
            }],
        },
        HookCommand::Update {
            definition,
            keep_bindings,
            next_task_id,
            ..
        } => {
            let hook = current.ok_or(HookError::NotFound)?;
            let mut definition = definition.clone();
            if *keep_bindings {
                definition.bindings = hook.definition.bindings.clone();
            }
            vec![HookEvent::HookUpdated {
                next: NextFire {
                    task_id: *next_task_id,
                    at: next_after(&definition.schedule, now)?,
                },
                group,
                id,
                definition,
            }]
        }
        HookCommand::Remove { .. } => vec![HookEvent::HookRemoved { group, id }],
        HookCommand::ResetToken { token, .. } => {
            current.ok_or(HookError::NotFound)?;
            vec![HookEvent::TriggerTokenReset {
                group,
                id,
                token: token.clone(),
            }]
        }
        HookCommand::RecordFire {
            fire, scheduled, ..
        } => {
            // a hook removed while it fired keeps no record of the fire
            let Some(hook) = current else {
                return Ok(vec![]);
            };
            let next = match scheduled {
                Some((fired, next_task_id)) if *fired == hook.next.task_id => Some(NextFire {
                    task_id: *next_task_id,
                    at: next_after(&hook.definition.schedule, now)?,
                }),
                Some(_) | None => None,
            };
            if fire.is_none() && next.is_none() {
                return Ok(vec![]);
            }
            vec![HookEvent::HookFired {
                group,
                id,
                fire: fire.clone(),
                next,
            }]
        }
    })
}

/// Moves a hook by one of its events.
pub fn apply(current: Option<Hook>, event: &HookEvent) -> Option<Hook> {
    match event {
        HookEvent::HookCreated {
            group,
            id,
            definition,
            token,
            next,
        } => Some(Hook {
            group: group.clone(),
            id: id.clone(),
            definition: definition.clone(),
            token: token.clone(),
            next: *next,
        }),
        HookEvent::HookCreateRepeated { .. } => current,
        HookEvent::HookUpdated {
            definition, next, ..
        } => current.map(|h| Hook {
            definition: definition.clone(),
            next: *next,
            ..h
        }),
        HookEvent::HookRemoved { .. } => None,
        HookEvent::TriggerTokenReset { token, .. } => current.map(|h| Hook {
            token: token.clone(),
            ..h
        }),
        HookEvent::HookFired { next, .. } => current.map(|h| Hook {
            next: next.unwrap_or(h.next),
            ..h
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::seal::SealKey;

    /// 2026-12-07T10:20:30.000Z
    const T0: Millis = Millis(1_796_638_830_000);

    fn definition(schedule: &[&str]) -> HookDefinition {
        HookDefinition {
            name: "nightly".into(),
            description: "builds every night".into(),
            owner: "ci@example.com".into(),
            email_on_error: true,
            task: r#"{"provisionerId":"p"}"#.into(),
            bindings: vec![],
            schedule: schedule.iter().map(|s| s.to_string()).collect(),
            trigger_schema: r#"{"additionalProperties":false,"type":"object"}"#.into(),
        }
    }

    fn token(group: &str, id: &str) -> Sealed {
        SealKey::new([4; 32]).seal(&token_owner(group, id), "tok", [6; 12])
    }

    fn create(schedule: &[&str]) -> HookCommand {
        HookCommand::Create {
            group: "g".into(),
            id: "a/b".into(),
            definition: definition(schedule),
            token: token("g", "a/b"),
            next_task_id: Slug([1; 16]),
        }
    }

    fn run(current: Option<Hook>, command: &HookCommand, now: Millis) -> Option<Hook> {
        decide(current.as_ref(), command, now)
            .unwrap()
            .iter()
            .fold(current, apply)
    }

    #[test]
    fn the_next_scheduled_fire_is_the_earliest_pattern_strictly_after_now() {
        // six fields, seconds first: daily at 01:00:00 and every 15 minutes at second 0
        let daily = "0 0 1 * * *".to_string();
        let quarter = "0 */15 * * * *".to_string();
        let next = next_after(std::slice::from_ref(&daily), T0).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-08T01:00:00.000Z");
        let next = next_after(&[daily, quarter.clone()], T0).unwrap();
        assert_eq!(next.to_rfc3339(), "2026-12-07T10:30:00.000Z");
        // strictly after: an occurrence at `now` itself is not the next one
        let at = Millis::parse_rfc3339("2026-12-07T10:30:00.000Z").unwrap();
        assert_eq!(
            next_after(&[quarter], at).unwrap().to_rfc3339(),
            "2026-12-07T10:45:00.000Z"
        );
        // five fields: minutes first, second 0
        assert_eq!(
            next_after(&["5 * * * *".to_string()], T0)
                .unwrap()
                .to_rfc3339(),
            "2026-12-07T11:05:00.000Z"
        );
        assert_eq!(next_after(&[], T0).unwrap(), NEVER);
        assert_eq!(NEVER.to_rfc3339(), "4000-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_bad_pattern_is_refused_naming_it() {
        let err = check_pattern("0 0 61 * * *").unwrap_err();
        assert!(err.ends_with(" in 0 0 61 * * *"), "{err}");
        assert!(check_pattern("not cron").is_err());
        assert!(check_pattern("0 0 * * * * 2030").is_err(), "no year field");
        assert!(check_pattern("0 0 9,21 * * 1-5").is_ok());
        assert!(matches!(
            next_after(&["bogus".to_string()], T0),
            Err(HookError::Input(_))
        ));
    }

    #[test]
    fn create_is_idempotent_for_the_same_definition_and_conflicts_otherwise() {
        let hook = run(None, &create(&["0 0 1 * * *"]), T0).unwrap();
        assert_eq!(hook.next.task_id, Slug([1; 16]));
        assert_eq!(hook.next.at.to_rfc3339(), "2026-12-08T01:00:00.000Z");
        assert_eq!(
            decide(Some(&hook), &create(&["0 0 1 * * *"]), T0).unwrap(),
            vec![HookEvent::HookCreateRepeated {
                group: "g".into(),
                id: "a/b".into()
            }]
        );
        assert_eq!(
            decide(Some(&hook), &create(&[]), T0),
            Err(HookError::Conflict("hook `g/a/b` already exists.".into()))
        );
    }

    #[test]
    fn update_restarts_the_schedule_and_may_keep_the_bindings() {
        let mut first = definition(&[]);
        first.bindings = vec![Binding {
            exchange: "exchange/x".into(),
            routing_key_pattern: "#".into(),
        }];
        let created = HookCommand::Create {
            group: "g".into(),
            id: "h".into(),
            definition: first.clone(),
            token: token("g", "h"),
            next_task_id: Slug([1; 16]),
        };
        let hook = run(None, &created, T0).unwrap();
        assert_eq!(hook.next.at, NEVER);
        let update = |keep_bindings| HookCommand::Update {
            group: "g".into(),
            id: "h".into(),
            definition: definition(&["0 0 * * * *"]),
            keep_bindings,
            next_task_id: Slug([2; 16]),
        };
        let kept = run(Some(hook.clone()), &update(true), T0).unwrap();
        assert_eq!(kept.definition.bindings, first.bindings);
        assert_eq!(kept.next.task_id, Slug([2; 16]));
        assert_eq!(kept.next.at.to_rfc3339(), "2026-12-07T11:00:00.000Z");
        assert_eq!(kept.token, hook.token, "the token stays");
        let replaced = run(Some(hook), &update(false), T0).unwrap();
        assert!(replaced.definition.bindings.is_empty());
        assert_eq!(
            decide(None, &update(true), T0),
            Err(HookError::NotFound),
            "no such hook"
        );
    }

    #[test]
    fn a_scheduled_fire_moves_the_schedule_only_for_the_task_it_waited_for() {
        let hook = run(None, &create(&["0 */15 * * * *"]), T0).unwrap();
        let due = hook.next.at;
        let fire = |fired: Slug| HookCommand::RecordFire {
            group: "g".into(),
            id: "a/b".into(),
            fire: Some(LastFire {
                fired_by: FiredBy::Schedule,
                task_id: fired,
                time: due,
                error: None,
            }),
            scheduled: Some((fired, Slug([9; 16]))),
        };
        let after = due.plus(1_000);
        let moved = run(Some(hook.clone()), &fire(Slug([1; 16])), after).unwrap();
        assert_eq!(moved.next.task_id, Slug([9; 16]));
        assert_eq!(moved.next.at, due.plus(15 * 60_000));
        // a fire for a task id the hook no longer waits for is recorded, the schedule stays
        let events = decide(Some(&moved), &fire(Slug([1; 16])), after).unwrap();
        assert!(
            matches!(
                &events[..],
                [HookEvent::HookFired {
                    fire: Some(_),
                    next: None,
                    ..
                }]
            ),
            "{events:?}"
        );
        // a removed hook records nothing
        assert_eq!(decide(None, &fire(Slug([9; 16])), after).unwrap(), vec![]);
        // an API fire that rendered nothing writes nothing
        let declined = HookCommand::RecordFire {
            group: "g".into(),
            id: "a/b".into(),
            fire: None,
            scheduled: None,
        };
        assert_eq!(decide(Some(&moved), &declined, after).unwrap(), vec![]);
    }

    #[test]
    fn remove_reset_and_ids() {
        let hook = run(None, &create(&[]), T0);
        let reset = HookCommand::ResetToken {
            group: "g".into(),
            id: "a/b".into(),
            token: SealKey::new([4; 32]).seal(&token_owner("g", "a/b"), "new", [7; 12]),
        };
        let after = run(hook.clone(), &reset, T0).unwrap();
        assert_eq!(
            SealKey::new([4; 32]).open(&token_owner("g", "a/b"), &after.token),
            Some("new".to_string())
        );
        assert_eq!(decide(None, &reset, T0), Err(HookError::NotFound));
        let remove = HookCommand::Remove {
            group: "g".into(),
            id: "a/b".into(),
        };
        assert_eq!(run(hook, &remove, T0), None);
        assert_eq!(decide(None, &remove, T0).unwrap().len(), 1);
        assert!(valid_id("a-b_C9", false) && !valid_id("a/b", false));
        assert!(valid_id("a/b", true) && !valid_id("", true) && !valid_id("a b", true));
        assert!(!valid_id(&"x".repeat(1001), true));
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let sealed = Sealed {
            nonce: [9; 12],
            ciphertext: vec![1, 2, 3, 4],
        };
        let next = NextFire {
            task_id: Slug([7; 16]),
            at: Millis(1_700_000_360_000),
        };
        let mut def = definition(&["0 0 1 * * *"]);
        def.bindings.push(Binding {
            exchange: "exchange/taskcluster-queue/v1/task-completed".into(),
            routing_key_pattern: "#".into(),
        });
        let (group, id) = ("g".to_string(), "a/b".to_string());
        let events = vec![
            HookEvent::HookCreated {
                group: group.clone(),
                id: id.clone(),
                definition: def.clone(),
                token: sealed.clone(),
                next,
            },
            HookEvent::HookCreateRepeated {
                group: group.clone(),
                id: id.clone(),
            },
            HookEvent::HookUpdated {
                group: group.clone(),
                id: id.clone(),
                definition: def,
                next,
            },
            HookEvent::HookRemoved {
                group: group.clone(),
                id: id.clone(),
            },
            HookEvent::TriggerTokenReset {
                group: group.clone(),
                id: id.clone(),
                token: sealed,
            },
            HookEvent::HookFired {
                group,
                id,
                fire: Some(LastFire {
                    fired_by: FiredBy::TriggerHookWithToken,
                    task_id: Slug([8; 16]),
                    time: Millis(1_700_000_000_500),
                    error: Some("boom".into()),
                }),
                next: Some(next),
            },
        ];
        crate::codec::assert_golden_events(
            &stream_id("g", "a/b"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/hooks/events_v1.hex"
            ),
        );
    }

    #[test]
    fn json_renderings_of_an_event_never_carry_the_token() {
        let event = HookEvent::TriggerTokenReset {
            group: "g".into(),
            id: "h".into(),
            token: SealKey::new([4; 32]).seal(&token_owner("g", "h"), "hunter2-token", [1; 12]),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            !json.contains("hunter2") && json.contains("[redacted]"),
            "{json}"
        );
    }
}
