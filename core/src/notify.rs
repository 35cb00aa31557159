//! The notify service's domain (reference/notify.md): a denylist of addresses, emails put in an
//! outbox for delivery, and Pulse notifications for the bridge to publish.
//!
//! Every change is a `NotifyEvent` on the notify partition. `AddressDenied`/`AddressAllowed`
//! edit the denylist; `EmailQueued` puts an email in the outbox, which the delivery reactor
//! empties, recording each attempt's end as `EmailDelivered`; `PulseSent` is a message the
//! bridge publishes on `exchange/taskcluster-notify/v1/notification`.
//!
//! Upstream keeps its duplicate check (the last 1,000 notifications) and its email rate limit
//! (50 per address in 10 minutes) in each process's memory; here both are read from the
//! projection, so they hold across restarts and give the same answers on a replay. `decide`
//! takes what the projection knows (`Facts`) and holds the rules; `apply` is the projection's.

use crate::time::Millis;
use serde::{Deserialize, Serialize};

/// Topic of the notify service's events.
pub const NOTIFY_TOPIC: &str = "taskledger.notify";

/// Emails to one address within `RATE_WINDOW_MS` beyond which more are dropped (upstream's
/// `maxMessageCount` and `maxMessageTime`).
pub const RATE_MAX: u32 = 50;
pub const RATE_WINDOW_MS: i64 = 600_000;

/// The longest Pulse routing key a notification takes: AMQP's routing keys have at most 255
/// bytes, and the key is published as `primary.<routingKey>`.
pub const MAX_ROUTING_KEY_BYTES: usize = 255 - "primary.".len();

/// How many of the latest notifications a new one is compared with (upstream: 1,000).
pub const DUPLICATE_WINDOW: u64 = 1_000;

/// A notification's fingerprint for the duplicate check: the first 16 bytes of the SHA-256 of
/// its fields (upstream: an MD5 of the same fields).
pub type Digest = [u8; 16];

/// The kinds of address the denylist holds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Channel {
    Email,
    Pulse,
    MatrixRoom,
    SlackChannel,
}

impl Channel {
    pub const ALL: [Channel; 4] = [
        Channel::Email,
        Channel::Pulse,
        Channel::MatrixRoom,
        Channel::SlackChannel,
    ];

    /// The `notificationType` text.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Pulse => "pulse",
            Channel::MatrixRoom => "matrix-room",
            Channel::SlackChannel => "slack-channel",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// How upstream words a refusal of a denylisted address of this kind.
    pub fn denied_message(self, address: &str) -> String {
        match self {
            Channel::Email => format!("Email {address} is denylisted"),
            Channel::Pulse => format!("Pulse routing key pattern {address} is denylisted"),
            Channel::MatrixRoom => format!("Matrix room {address} is denylisted"),
            Channel::SlackChannel => format!("Slack channel {address} is denylisted"),
        }
    }
}

/// A `notification-address`.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Address {
    pub channel: Channel,
    pub address: String,
}

/// The stream of one denylist entry.
pub fn denylist_stream(address: &Address) -> String {
    format!(
        "notify-denylist/{}/{}",
        address.channel.as_str(),
        address.address
    )
}

/// The stream of the emails to one address.
pub fn email_stream(address: &str) -> String {
    format!("notify-email/{address}")
}

/// The stream of the Pulse notifications with one routing key.
pub fn pulse_stream(routing_key: &str) -> String {
    format!("notify-pulse/{routing_key}")
}

/// An email's button.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Link {
    pub text: String,
    pub href: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Template {
    Simple,
    Fullscreen,
}

/// An `email-request`, its defaults filled. `content` is markdown.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Email {
    pub address: String,
    pub subject: String,
    pub content: String,
    pub link: Option<Link>,
    pub reply_to: Option<String>,
    pub template: Template,
}

fn digest_of(fields: &[&str]) -> Digest {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for f in fields {
        // length-prefixed, so no two field lists hash alike by shifting a boundary
        ctx.update(&(f.len() as u64).to_be_bytes());
        ctx.update(f.as_bytes());
    }
    let mut out = [0; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

impl Email {
    /// Upstream's duplicate key: address, subject, content, link, replyTo.
    pub fn digest(&self) -> Digest {
        let (text, href) = self
            .link
            .as_ref()
            .map_or(("", ""), |l| (l.text.as_str(), l.href.as_str()));
        digest_of(&[
            "email",
            &self.address,
            &self.subject,
            &self.content,
            text,
            href,
            self.reply_to.as_deref().unwrap_or(""),
        ])
    }
}

/// Upstream's duplicate key of a Pulse notification: routing key and message.
pub fn pulse_digest(routing_key: &str, message: &str) -> Digest {
    digest_of(&["pulse", routing_key, message])
}

#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum NotifyEvent {
    /// addDenylistAddress of an address not yet on the list.
    AddressDenied { address: Address },
    /// deleteDenylistAddress of an address on the list.
    AddressAllowed { address: Address },
    /// An email accepted for delivery: the outbox holds it until its `EmailDelivered`.
    EmailQueued { email: Email, digest: Digest },
    /// A Pulse notification: `message` is the JSON text of the object to publish.
    PulseSent {
        routing_key: String,
        message: String,
        digest: Digest,
    },
    /// The delivery reactor's last word on the email queued at log offset `queued`: sent
    /// (`error` none) or given up.
    EmailDelivered {
        queued: u64,
        address: String,
        error: Option<String>,
    },
}

impl NotifyEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            NotifyEvent::AddressDenied { .. } => "AddressDenied",
            NotifyEvent::AddressAllowed { .. } => "AddressAllowed",
            NotifyEvent::EmailQueued { .. } => "EmailQueued",
            NotifyEvent::PulseSent { .. } => "PulseSent",
            NotifyEvent::EmailDelivered { .. } => "EmailDelivered",
        }
    }
}

#[derive(Clone, Debug)]
pub enum NotifyCommand {
    /// addDenylistAddress.
    Deny(Address),
    /// deleteDenylistAddress.
    Allow(Address),
    /// `email`, or a task route's email.
    Email(Email),
    /// `pulse`, or a task route's Pulse message (`message`: JSON text of an object).
    Pulse {
        routing_key: String,
        message: String,
    },
    /// `matrix` or `slack`: this server delivers neither, so nothing is recorded; the
    /// denylist still refuses the address.
    Undeliverable(Address),
    /// The delivery reactor's outcome for the email queued at `queued`.
    Delivered {
        queued: u64,
        address: String,
        error: Option<String>,
    },
}

impl NotifyCommand {
    /// The stream its events go to.
    pub fn stream(&self) -> String {
        match self {
            NotifyCommand::Deny(a) | NotifyCommand::Allow(a) | NotifyCommand::Undeliverable(a) => {
                denylist_stream(a)
            }
            NotifyCommand::Email(e) => email_stream(&e.address),
            NotifyCommand::Delivered { address, .. } => email_stream(address),
            NotifyCommand::Pulse { routing_key, .. } => pulse_stream(routing_key),
        }
    }

    /// The address the denylist is asked about (none for a delivery's record).
    pub fn address(&self) -> Option<Address> {
        match self {
            NotifyCommand::Email(e) => Some(Address {
                channel: Channel::Email,
                address: e.address.clone(),
            }),
            NotifyCommand::Pulse { routing_key, .. } => Some(Address {
                channel: Channel::Pulse,
                address: routing_key.clone(),
            }),
            NotifyCommand::Deny(a) | NotifyCommand::Allow(a) | NotifyCommand::Undeliverable(a) => {
                Some(a.clone())
            }
            NotifyCommand::Delivered { .. } => None,
        }
    }

    /// The digest the duplicate check is asked about (a notification's only).
    pub fn digest(&self) -> Option<Digest> {
        match self {
            NotifyCommand::Email(e) => Some(e.digest()),
            NotifyCommand::Pulse {
                routing_key,
                message,
            } => Some(pulse_digest(routing_key, message)),
            NotifyCommand::Deny(_)
            | NotifyCommand::Allow(_)
            | NotifyCommand::Undeliverable(_)
            | NotifyCommand::Delivered { .. } => None,
        }
    }
}

/// What the projection knows that a decision reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The command's address is on the denylist.
    pub denied: bool,
    /// The command's digest is among the last `DUPLICATE_WINDOW` notifications.
    pub duplicate: bool,
    /// Emails queued for the command's address in the `RATE_WINDOW_MS` before now.
    pub recent_emails: u32,
    /// For `Delivered`: the email is still in the outbox.
    pub queued: bool,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// The address is denylisted (upstream's `DenylistedAddress`, 400).
    #[error("{0}")]
    Denylisted(String),
}

/// The events answering `command` given `facts`; none means nothing to do: already so, or a
/// notification dropped as a duplicate or over the email rate (the API's 204).
pub fn decide(facts: Facts, command: &NotifyCommand) -> Result<Vec<NotifyEvent>, NotifyError> {
    let refuse = |a: &Address| {
        Err(NotifyError::Denylisted(
            a.channel.denied_message(&a.address),
        ))
    };
    Ok(match command {
        NotifyCommand::Deny(_) if facts.denied => vec![],
        NotifyCommand::Deny(a) => vec![NotifyEvent::AddressDenied { address: a.clone() }],
        NotifyCommand::Allow(a) if facts.denied => {
            vec![NotifyEvent::AddressAllowed { address: a.clone() }]
        }
        NotifyCommand::Allow(_) => vec![],
        NotifyCommand::Undeliverable(a) if facts.denied => return refuse(a),
        NotifyCommand::Undeliverable(_) => vec![],
        NotifyCommand::Email(_) | NotifyCommand::Pulse { .. } if facts.denied => {
            return refuse(&command.address().expect("a notification has an address"))
        }
        NotifyCommand::Email(_) | NotifyCommand::Pulse { .. } if facts.duplicate => vec![],
        NotifyCommand::Email(_) if facts.recent_emails >= RATE_MAX => vec![],
        NotifyCommand::Email(email) => vec![NotifyEvent::EmailQueued {
            email: email.clone(),
            digest: email.digest(),
        }],
        NotifyCommand::Pulse {
            routing_key,
            message,
        } => vec![NotifyEvent::PulseSent {
            routing_key: routing_key.clone(),
            message: message.clone(),
            digest: pulse_digest(routing_key, message),
        }],
        NotifyCommand::Delivered {
            queued,
            address,
            error,
        } if facts.queued => vec![NotifyEvent::EmailDelivered {
            queued: *queued,
            address: address.clone(),
            error: error.clone(),
        }],
        NotifyCommand::Delivered { .. } => vec![],
    })
}

/// Whether an emails-in-window row written at `at` still counts at `now`.
pub fn in_rate_window(at: Millis, now: Millis) -> bool {
    at.0.saturating_add(RATE_WINDOW_MS) > now.0
}

/// The route grammar (reference/notify.md §1): `notify.<type>.<address...>.on-<event>`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Route {
    pub channel: Channel,
    pub address: String,
    /// The last segment without `on-`.
    pub decider: String,
}

impl Route {
    /// A task route read as a notification, or `None` (another prefix, a type this server
    /// does not know, no address, or a last segment without `on-`). Unlike upstream, the
    /// first segment must be `prefix` (upstream checks only the type).
    pub fn parse(prefix: &str, route: &str) -> Option<Route> {
        let rest = route.strip_prefix(prefix)?.strip_prefix('.')?;
        let (kind, rest) = rest.split_once('.')?;
        let (address, last) = rest.rsplit_once('.')?;
        let decider = last.strip_prefix("on-")?;
        if address.is_empty() {
            return None;
        }
        Some(Route {
            channel: Channel::parse(kind)?,
            address: address.to_string(),
            decider: decider.to_string(),
        })
    }

    /// Whether a message about a task in `state` fires this route (upstream's table).
    pub fn fires(&self, state: &str) -> bool {
        let resolved = matches!(state, "completed" | "failed" | "exception");
        match self.decider.as_str() {
            "transition" => true,
            "any" | "resolved" => resolved,
            "defined" => state == "unscheduled",
            "pending" | "running" | "completed" | "failed" | "exception" => state == self.decider,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(address: &str, subject: &str) -> Email {
        Email {
            address: address.into(),
            subject: subject.into(),
            content: "**hi**".into(),
            link: None,
            reply_to: None,
            template: Template::Simple,
        }
    }

    fn denied(a: &str) -> Address {
        Address {
            channel: Channel::Email,
            address: a.into(),
        }
    }

    #[test]
    fn denylist_edits_are_idempotent() {
        let a = denied("x@example.com");
        let on = Facts {
            denied: true,
            ..Facts::default()
        };
        assert_eq!(
            decide(Facts::default(), &NotifyCommand::Deny(a.clone())).unwrap(),
            vec![NotifyEvent::AddressDenied { address: a.clone() }]
        );
        assert_eq!(decide(on, &NotifyCommand::Deny(a.clone())).unwrap(), vec![]);
        assert_eq!(
            decide(on, &NotifyCommand::Allow(a.clone())).unwrap(),
            vec![NotifyEvent::AddressAllowed { address: a.clone() }]
        );
        assert_eq!(
            decide(Facts::default(), &NotifyCommand::Allow(a)).unwrap(),
            vec![]
        );
    }

    #[test]
    fn notifications_are_refused_dropped_or_written() {
        let e = NotifyCommand::Email(email("x@example.com", "s"));
        let on = |f: Facts| decide(f, &e);
        assert_eq!(
            on(Facts {
                denied: true,
                ..Facts::default()
            }),
            Err(NotifyError::Denylisted(
                "Email x@example.com is denylisted".into()
            ))
        );
        let dup = Facts {
            duplicate: true,
            ..Facts::default()
        };
        assert_eq!(on(dup).unwrap(), vec![]);
        let busy = Facts {
            recent_emails: RATE_MAX,
            ..Facts::default()
        };
        assert_eq!(on(busy).unwrap(), vec![]);
        let below = Facts {
            recent_emails: RATE_MAX - 1,
            ..Facts::default()
        };
        assert!(matches!(
            &on(below).unwrap()[..],
            [NotifyEvent::EmailQueued { .. }]
        ));
        // the rate is the email's alone
        let p = NotifyCommand::Pulse {
            routing_key: "a.b".into(),
            message: "{}".into(),
        };
        assert_eq!(decide(busy, &p).unwrap().len(), 1);
        assert_eq!(decide(dup, &p).unwrap(), vec![]);
        let chat = NotifyCommand::Undeliverable(Address {
            channel: Channel::SlackChannel,
            address: "C1".into(),
        });
        assert_eq!(decide(Facts::default(), &chat).unwrap(), vec![]);
        assert_eq!(
            decide(
                Facts {
                    denied: true,
                    ..Facts::default()
                },
                &chat
            ),
            Err(NotifyError::Denylisted(
                "Slack channel C1 is denylisted".into()
            ))
        );
        let done = NotifyCommand::Delivered {
            queued: 7,
            address: "x@example.com".into(),
            error: None,
        };
        assert_eq!(decide(Facts::default(), &done).unwrap(), vec![]);
        let queued = Facts {
            queued: true,
            ..Facts::default()
        };
        assert_eq!(decide(queued, &done).unwrap().len(), 1);
    }

    #[test]
    fn digests_tell_the_fields_apart() {
        let a = email("x@example.com", "s");
        let mut b = a.clone();
        b.reply_to = Some("r@example.com".into());
        assert_ne!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.clone().digest());
        assert_ne!(pulse_digest("ab", "c"), pulse_digest("a", "bc"));
        assert!(in_rate_window(
            Millis(1_000),
            Millis(1_000 + RATE_WINDOW_MS - 1)
        ));
        assert!(!in_rate_window(
            Millis(1_000),
            Millis(1_000 + RATE_WINDOW_MS)
        ));
    }

    #[test]
    fn routes_as_upstream_reads_them() {
        let r = Route::parse("notify", "notify.email.dev@example.com.on-failed").unwrap();
        assert_eq!(
            (r.channel, r.address.as_str(), r.decider.as_str()),
            (Channel::Email, "dev@example.com", "failed")
        );
        assert!(r.fires("failed") && !r.fires("completed"));
        let p = Route::parse("notify", "notify.pulse.a.b.c.on-any").unwrap();
        assert_eq!(p.address, "a.b.c");
        assert!(p.fires("exception") && !p.fires("running"));
        let t = Route::parse("notify", "notify.matrix-room.!r:x.org.on-transition").unwrap();
        assert!(t.fires("unscheduled") && t.fires("pending"));
        let d = Route::parse("notify", "notify.slack-channel.C1.on-defined").unwrap();
        assert!(d.fires("unscheduled") && !d.fires("pending"));
        for bad in [
            "index.email.a@b.c.on-failed",
            "notify.irc-user.a.on-failed",
            "notify.email.on-failed",
            "notify.email.a@b.c.failed",
            "notifyx.email.a@b.c.on-failed",
        ] {
            assert_eq!(Route::parse("notify", bad), None, "{bad}");
        }
        let odd = Route::parse("notify", "notify.email.a@b.c.on-whenever").unwrap();
        assert!(!odd.fires("completed"));
    }

    #[test]
    fn events_keep_their_v1_bytes() {
        let a = denied("x@example.com");
        let mut e = email("x@example.com", "subject");
        e.link = Some(Link {
            text: "Inspect".into(),
            href: "https://example.com/t".into(),
        });
        e.reply_to = Some("r@example.com".into());
        e.template = Template::Fullscreen;
        let events = vec![
            NotifyEvent::AddressDenied { address: a.clone() },
            NotifyEvent::AddressAllowed { address: a },
            NotifyEvent::EmailQueued {
                digest: [3; 16],
                email: e,
            },
            NotifyEvent::PulseSent {
                routing_key: "a.b".into(),
                message: r#"{"k":1}"#.into(),
                digest: [4; 16],
            },
            NotifyEvent::EmailDelivered {
                queued: 42,
                address: "x@example.com".into(),
                error: Some("421 try later".into()),
            },
        ];
        crate::codec::assert_golden_events(
            &email_stream("x@example.com"),
            events,
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/golden/notify/events_v1.hex"
            ),
        );
    }
}
