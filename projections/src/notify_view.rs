//! The notify projection and its writer.
//!
//! `NotifyView` folds `NotifyEvent`s (topic `taskledger.notify`) into the `notify` column
//! family: the denylist (kind, address), the outbox (emails queued and not yet delivered, by
//! log offset), the digests of the latest `DUPLICATE_WINDOW` notifications (by their number,
//! with the count of all so far), one row per email queued within the rate window (address,
//! time, offset; with a time index, through which each email's fold deletes every row past the
//! window, whatever its address), and each stream's last applied sequence.
//!
//! `NotifyEngine` is the partition's single writer (`single::ServiceEngine`); notifications to
//! different addresses with different digests are written together (`footprint`).
//!
//! **Invariant:** every row and the consumed offset go in one batch, and what a fold writes
//! depends only on the events and the rows before them (never on where a batch began), so a
//! rebuild from the log gives the same rows.

use crate::keys;
use crate::single::{Decision, Footprint, Service, ServiceEngine, ServiceError};
use crate::store::{cf, read_u64, StoreError};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use taskledger_core::codec;
use taskledger_core::envelope::Envelope;
use taskledger_core::notify::{
    self, in_rate_window, Address, Channel, Digest, Email, Facts, NotifyCommand, NotifyError,
    NotifyEvent, DUPLICATE_WINDOW, NOTIFY_TOPIC,
};
use taskledger_core::time::Millis;

/// The notify service's single partition.
pub const NOTIFY_PARTITION: u32 = 0;
/// The projection's consumer name for its stored offset.
pub const NOTIFY_CONSUMER: &str = "notify-view";

/// The byte a kind of address is keyed by.
fn channel_byte(c: Channel) -> u8 {
    match c {
        Channel::Email => b'e',
        Channel::Pulse => b'p',
        Channel::MatrixRoom => b'm',
        Channel::SlackChannel => b's',
    }
}

fn channel_of(b: u8) -> Option<Channel> {
    Channel::ALL.into_iter().find(|c| channel_byte(*c) == b)
}

fn denied_key(a: &Address) -> Vec<u8> {
    keys::notify_denied(channel_byte(a.channel), &a.address)
}

/// The time of a `notify_rate` key (after its address's prefix).
fn rate_time(key: &[u8], prefix_len: usize) -> Option<Millis> {
    let bytes = key.get(prefix_len..prefix_len + 8)?;
    Some(Millis(u64::from_be_bytes(bytes.try_into().ok()?) as i64))
}

pub struct NotifyView {
    db: Arc<DB>,
    /// Serializes folds: each reads the rows the previous one wrote.
    folding: Mutex<()>,
    /// The duplicate window's digests in memory, as the `notify_sent` rows hold them (a
    /// decision asks it for every notification; the rows are its copy on disk). Only a fold
    /// changes it, once its batch is written.
    window: Mutex<Window>,
}

/// The latest `DUPLICATE_WINDOW` digests, oldest first, and how often each is among them.
#[derive(Default)]
struct Window {
    ring: VecDeque<Digest>,
    counts: HashMap<Digest, u32>,
}

impl Window {
    fn push(&mut self, digest: Digest) {
        self.ring.push_back(digest);
        *self.counts.entry(digest).or_default() += 1;
        while self.ring.len() as u64 > DUPLICATE_WINDOW {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }
}

impl NotifyView {
    pub fn open(db: Arc<DB>) -> Result<NotifyView, StoreError> {
        let mut window = Window::default();
        let prefix = keys::NOTIFY_SENT_PREFIX;
        let iter = db.iterator_cf(
            cf(&db, keys::CF_NOTIFY)?,
            IteratorMode::From(prefix, Direction::Forward),
        );
        // in number order, oldest first
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let digest = Digest::try_from(v.as_ref()).map_err(|_| {
                StoreError::Log(taskledger_core::log::LogError::Corrupt(format!(
                    "a notify window row of {} bytes, not 16",
                    v.len()
                )))
            })?;
            window.push(digest);
        }
        Ok(NotifyView {
            db,
            folding: Mutex::new(()),
            window: Mutex::new(window),
        })
    }

    pub fn denied(&self, address: &Address) -> Result<bool, StoreError> {
        let notify = cf(&self.db, keys::CF_NOTIFY)?;
        Ok(self
            .db
            .get_pinned_cf(notify, denied_key(address))?
            .is_some())
    }

    /// The denylist in key order (kind, then address) after the key `after`, at most
    /// `limit`; and the key to continue from when more remain.
    pub fn denylist(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Address>, Option<Vec<u8>>), StoreError> {
        let prefix = keys::NOTIFY_DENIED_PREFIX;
        let start = match after {
            Some(k) => {
                let mut k = k.to_vec();
                k.push(0);
                k
            }
            None => prefix.to_vec(),
        };
        let mut out = Vec::new();
        let mut last = None;
        let iter = self.db.iterator_cf(
            cf(&self.db, keys::CF_NOTIFY)?,
            IteratorMode::From(&start, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            let Some(rest) = k.strip_prefix(prefix) else {
                break;
            };
            if out.len() == limit {
                return Ok((out, last));
            }
            let Some(channel) = rest.first().and_then(|b| channel_of(*b)) else {
                continue;
            };
            out.push(Address {
                channel,
                address: String::from_utf8_lossy(&rest[1..]).into_owned(),
            });
            last = Some(k.to_vec());
        }
        Ok((out, None))
    }

    /// The emails waiting for delivery, oldest first, at most `limit`, each with the log
    /// offset that queued it.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, Email)>, StoreError> {
        let prefix = keys::NOTIFY_OUTBOX_PREFIX;
        let mut out = Vec::new();
        let iter = self.db.iterator_cf(
            cf(&self.db, keys::CF_NOTIFY)?,
            IteratorMode::From(prefix, Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            let Some(rest) = k.strip_prefix(prefix) else {
                break;
            };
            if out.len() == limit {
                break;
            }
            let offset = u64::from_be_bytes(rest.try_into().unwrap_or([0; 8]));
            out.push((offset, codec::decode(&v)?));
        }
        Ok(out)
    }

    /// Whether `digest` is among the latest `DUPLICATE_WINDOW` notifications.
    pub fn is_duplicate(&self, digest: &Digest) -> Result<bool, StoreError> {
        let window = self.window.lock().expect("notify window lock");
        Ok(window.counts.contains_key(digest))
    }

    /// Emails queued for `address` in the rate window before `now`.
    pub fn recent_emails(&self, address: &str, now: Millis) -> Result<u32, StoreError> {
        let prefix = keys::notify_rate_of(address);
        let mut n = 0;
        let iter = self.db.iterator_cf(
            cf(&self.db, keys::CF_NOTIFY)?,
            IteratorMode::From(&prefix, Direction::Forward),
        );
        for item in iter {
            let (k, _) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if rate_time(&k, prefix.len()).is_some_and(|at| in_rate_window(at, now)) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn queued(&self, offset: u64) -> Result<bool, StoreError> {
        let notify = cf(&self.db, keys::CF_NOTIFY)?;
        Ok(self
            .db
            .get_pinned_cf(notify, keys::notify_outbox(offset))?
            .is_some())
    }

    /// What `command`'s decision reads.
    fn facts(&self, command: &NotifyCommand, now: Millis) -> Result<Facts, StoreError> {
        let mut facts = Facts::default();
        if let Some(a) = command.address() {
            facts.denied = self.denied(&a)?;
        }
        if let Some(d) = command.digest() {
            facts.duplicate = self.is_duplicate(&d)?;
        }
        match command {
            NotifyCommand::Email(e) => facts.recent_emails = self.recent_emails(&e.address, now)?,
            NotifyCommand::Delivered { queued, .. } => facts.queued = self.queued(*queued)?,
            NotifyCommand::Deny(_)
            | NotifyCommand::Allow(_)
            | NotifyCommand::Pulse { .. }
            | NotifyCommand::Undeliverable(_) => {}
        }
        Ok(facts)
    }

    fn sequence(&self, stream: &str) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_NOTIFY, &keys::notify_stream(stream))
    }

    fn offset_key() -> Vec<u8> {
        keys::consumer_offset(NOTIFY_CONSUMER, NOTIFY_TOPIC, NOTIFY_PARTITION)
    }

    /// Deletes the stored rate rows (and their time index entries) that no longer count at
    /// `now`, oldest first, from past `swept` (where this fold's previous sweep stopped), and
    /// moves `swept` on.
    fn sweep_rates(
        &self,
        batch: &mut WriteBatch,
        swept: &mut Option<Vec<u8>>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let notify_cf = cf(&self.db, keys::CF_NOTIFY)?;
        let start = match swept {
            Some(k) => {
                let mut k = k.clone();
                k.push(0);
                k
            }
            None => keys::NOTIFY_RATE_TIME_PREFIX.to_vec(),
        };
        let iter = self
            .db
            .iterator_cf(notify_cf, IteratorMode::From(&start, Direction::Forward));
        for item in iter {
            let (k, _) = item?;
            let Some((at, offset, address)) = keys::parse_notify_rate_time(&k) else {
                break;
            };
            if in_rate_window(at, now) {
                break;
            }
            batch.delete_cf(notify_cf, keys::notify_rate(address, at, offset));
            batch.delete_cf(notify_cf, &k);
            *swept = Some(k.to_vec());
        }
        Ok(())
    }
}

pub type NotifyEngineError = ServiceError<NotifyError>;

/// The notify service's writer (see `single`).
pub type NotifyEngine = ServiceEngine<NotifyView>;

impl Service for NotifyView {
    type Event = NotifyEvent;
    type Command = NotifyCommand;
    type Refusal = NotifyError;
    const TOPIC: &'static str = NOTIFY_TOPIC;
    const PARTITION: u32 = NOTIFY_PARTITION;
    const NAME: &'static str = "notify";

    fn decide(
        &self,
        command: &NotifyCommand,
        now: Millis,
    ) -> Result<Decision<NotifyEvent>, NotifyEngineError> {
        let events =
            notify::decide(self.facts(command, now)?, command).map_err(ServiceError::Domain)?;
        let stream = command.stream();
        Ok(Decision {
            last_sequence: self.sequence(&stream)?,
            stream,
            events,
        })
    }
    fn type_name(event: &NotifyEvent) -> &'static str {
        event.type_name()
    }
    /// What a command reads and writes: its address's denylist entry, its digest's place in
    /// the duplicate window, an email's address's rate rows, a delivery's outbox row. The
    /// window itself (the count and the ring) only grows by each notification, whatever their
    /// order, so notifications share it: those to different addresses with different digests
    /// are written together. One edge differs from one at a time: a digest that the group's
    /// other notifications push out of the window is still found in it (the window is then a
    /// few entries longer than 1,000).
    fn footprint(command: &NotifyCommand) -> Footprint {
        let mut exclusive = Vec::with_capacity(3);
        if let Some(a) = command.address() {
            exclusive.push(format!("deny/{}/{}", a.channel.as_str(), a.address));
        }
        if let Some(d) = command.digest() {
            exclusive.push(format!("digest/{d:?}"));
        }
        let shared = match command {
            NotifyCommand::Email(e) => {
                exclusive.push(format!("rate/{}", e.address));
                vec!["window".to_string()]
            }
            NotifyCommand::Pulse { .. } => vec!["window".to_string()],
            NotifyCommand::Delivered { queued, .. } => {
                exclusive.push(format!("outbox/{queued}"));
                vec![]
            }
            NotifyCommand::Deny(_) | NotifyCommand::Allow(_) | NotifyCommand::Undeliverable(_) => {
                vec![]
            }
        };
        Footprint::Keys { exclusive, shared }
    }
    fn apply(
        &self,
        offsets: &[u64],
        next: u64,
        envelopes: &[Envelope<NotifyEvent>],
    ) -> Result<(), StoreError> {
        let _folding = self.folding.lock().expect("notify fold lock");
        let notify_cf = cf(&self.db, keys::CF_NOTIFY)?;
        let mut batch = WriteBatch::default();
        let mut sequences: HashMap<String, u64> = HashMap::new();
        let mut sent = read_u64(&self.db, keys::CF_NOTIFY, keys::NOTIFY_SENT_COUNT)?;
        let sent_before = sent;
        // the digests this fold adds to the window, in order
        let mut added: Vec<Digest> = Vec::new();
        // rate rows this fold wrote, in time order (a later email of the fold may retire them),
        // and how far the stored ones were swept
        let mut rates: BTreeMap<(i64, u64), String> = BTreeMap::new();
        let mut swept: Option<Vec<u8>> = None;
        for (env, &offset) in envelopes.iter().zip(offsets) {
            let seen = match sequences.get(&env.stream_id) {
                Some(&s) => s,
                None => self.sequence(&env.stream_id)?,
            };
            if env.sequence <= seen {
                continue;
            }
            sequences.insert(env.stream_id.clone(), env.sequence);
            let mut remember = |batch: &mut WriteBatch, digest: &Digest| {
                added.push(*digest);
                batch.put_cf(notify_cf, keys::notify_sent(sent), digest);
                if sent >= DUPLICATE_WINDOW {
                    batch.delete_cf(notify_cf, keys::notify_sent(sent - DUPLICATE_WINDOW));
                }
                sent += 1;
            };
            match &env.payload {
                NotifyEvent::AddressDenied { address } => {
                    batch.put_cf(notify_cf, denied_key(address), []);
                }
                NotifyEvent::AddressAllowed { address } => {
                    batch.delete_cf(notify_cf, denied_key(address));
                }
                NotifyEvent::EmailQueued { email, digest } => {
                    remember(&mut batch, digest);
                    batch.put_cf(
                        notify_cf,
                        keys::notify_outbox(offset),
                        codec::encode(email)?,
                    );
                    // every rate row past the window goes, whatever its address: stored
                    // ones, then this fold's own
                    self.sweep_rates(&mut batch, &mut swept, env.time)?;
                    while let Some(entry) = rates.first_entry() {
                        let (at, written) = *entry.key();
                        if in_rate_window(Millis(at), env.time) {
                            break;
                        }
                        let address = entry.remove();
                        let at = Millis(at);
                        batch.delete_cf(notify_cf, keys::notify_rate(&address, at, written));
                        batch.delete_cf(notify_cf, keys::notify_rate_time(at, written, &address));
                    }
                    let address = &email.address;
                    batch.put_cf(notify_cf, keys::notify_rate(address, env.time, offset), []);
                    batch.put_cf(
                        notify_cf,
                        keys::notify_rate_time(env.time, offset, address),
                        [],
                    );
                    rates.insert((env.time.0, offset), address.clone());
                }
                NotifyEvent::PulseSent { digest, .. } => remember(&mut batch, digest),
                NotifyEvent::EmailDelivered { queued, .. } => {
                    batch.delete_cf(notify_cf, keys::notify_outbox(*queued));
                }
            }
        }
        for (stream, sequence) in &sequences {
            batch.put_cf(
                notify_cf,
                keys::notify_stream(stream),
                sequence.to_be_bytes(),
            );
        }
        if sent != sent_before {
            batch.put_cf(notify_cf, keys::NOTIFY_SENT_COUNT, sent.to_be_bytes());
        }
        batch.put_cf(
            cf(&self.db, keys::CF_META)?,
            Self::offset_key(),
            next.to_be_bytes(),
        );
        self.db.write(batch)?;
        let mut window = self.window.lock().expect("notify window lock");
        for digest in added {
            window.push(digest);
        }
        Ok(())
    }
    fn consumer_offset(&self) -> Result<u64, StoreError> {
        read_u64(&self.db, keys::CF_META, &Self::offset_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store, EmbeddedLog};
    use taskledger_core::envelope::Actor;
    use taskledger_core::notify::{Template, RATE_MAX, RATE_WINDOW_MS};

    fn email(address: &str, subject: &str) -> NotifyCommand {
        NotifyCommand::Email(Email {
            address: address.into(),
            subject: subject.into(),
            content: "body".into(),
            link: None,
            reply_to: None,
            template: Template::Simple,
        })
    }

    #[tokio::test]
    async fn denylist_outbox_duplicates_and_rate_fold_and_rebuild_alike() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(NotifyView::open(db.clone()).unwrap());
        let engine = NotifyEngine::start(view.clone(), log.clone())
            .await
            .unwrap();
        let root = Actor::system("root");
        let run = |c: NotifyCommand| {
            let engine = engine.clone();
            let root = root.clone();
            async move { engine.execute(root, c).await }
        };
        let bad = Address {
            channel: Channel::Email,
            address: "bad@example.com".into(),
        };
        assert_eq!(
            run(NotifyCommand::Deny(bad.clone())).await.unwrap().len(),
            1
        );
        assert_eq!(
            run(NotifyCommand::Deny(bad.clone())).await.unwrap().len(),
            0
        );
        let slack = Address {
            channel: Channel::SlackChannel,
            address: "C1".into(),
        };
        run(NotifyCommand::Deny(slack.clone())).await.unwrap();
        let (page, more) = view.denylist(None, 1).unwrap();
        assert_eq!(page, vec![bad.clone()]);
        let (page, more) = view.denylist(more.as_deref(), 1).unwrap();
        assert_eq!((page, more), (vec![slack.clone()], None));
        assert!(matches!(
            run(email("bad@example.com", "x")).await,
            Err(ServiceError::Domain(NotifyError::Denylisted(_)))
        ));

        // queued once; the same email again is a duplicate
        assert_eq!(run(email("a@example.com", "one")).await.unwrap().len(), 1);
        assert_eq!(run(email("a@example.com", "one")).await.unwrap().len(), 0);
        let outbox = view.outbox(10).unwrap();
        assert_eq!(outbox.len(), 1);
        let delivered = NotifyCommand::Delivered {
            queued: outbox[0].0,
            address: "a@example.com".into(),
            error: None,
        };
        assert_eq!(run(delivered.clone()).await.unwrap().len(), 1);
        assert_eq!(run(delivered).await.unwrap().len(), 0);
        assert!(view.outbox(10).unwrap().is_empty());

        // the rate: RATE_MAX emails to one address, then nothing more (another address goes)
        for i in 1..RATE_MAX {
            let s = format!("n{i}");
            assert_eq!(run(email("a@example.com", &s)).await.unwrap().len(), 1);
        }
        assert_eq!(
            view.recent_emails("a@example.com", Millis::now()).unwrap(),
            RATE_MAX
        );
        assert_eq!(run(email("a@example.com", "over")).await.unwrap().len(), 0);
        assert_eq!(run(email("b@example.com", "over")).await.unwrap().len(), 1);
        assert_eq!(
            view.recent_emails("a@example.com", Millis::now().plus(RATE_WINDOW_MS))
                .unwrap(),
            0
        );
        run(NotifyCommand::Allow(bad.clone())).await.unwrap();
        assert!(!view.denied(&bad).unwrap());

        // a rebuild in one fold gives the same rows
        let records = log
            .read_sync(NOTIFY_TOPIC, NOTIFY_PARTITION, 0, 10_000)
            .unwrap();
        let envs: Vec<Envelope<NotifyEvent>> = records
            .iter()
            .map(|r| codec::decode(&r.value).unwrap())
            .collect();
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        let scratch_dir = tempfile::tempdir().unwrap();
        let scratch = NotifyView::open(store::open(scratch_dir.path()).unwrap()).unwrap();
        scratch
            .apply(&offsets, offsets.last().unwrap() + 1, &envs)
            .unwrap();
        let rows = |db: &DB| -> Vec<(Vec<u8>, Vec<u8>)> {
            db.iterator_cf(cf(db, keys::CF_NOTIFY).unwrap(), IteratorMode::Start)
                .map(|i| {
                    let (k, v) = i.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .collect()
        };
        assert_eq!(rows(&scratch.db), rows(&db));
    }

    /// Events with chosen times: two emails to one address, one delivered, 1,001 Pulse
    /// messages (the window wraps), and an email past the rate window that retires the first
    /// two's rate rows. Folded one event at a time and all in one batch, the rows are the same.
    #[test]
    fn a_fold_one_at_a_time_and_in_one_batch_write_the_same_rows() {
        let t0 = Millis(1_700_000_000_000);
        let mut stream_seq: HashMap<String, u64> = HashMap::new();
        let mut envelope = |stream: String, time: Millis, payload: NotifyEvent| {
            let seq = stream_seq.entry(stream.clone()).or_default();
            *seq += 1;
            Envelope {
                event_id: taskledger_core::envelope::EventId::new(),
                stream_id: stream,
                sequence: *seq,
                time,
                actor: Actor::system("t"),
                causation_id: None,
                writer_epoch: 1,
                payload,
            }
        };
        let mail = |subject: &str| Email {
            address: "a@example.com".into(),
            subject: subject.into(),
            content: "c".into(),
            link: None,
            reply_to: None,
            template: Template::Simple,
        };
        let stream_a = notify::email_stream("a@example.com");
        let mut envs = Vec::new();
        for (i, at) in [(0u64, t0), (1, t0.plus(1_000))] {
            let m = mail(&format!("m{i}"));
            envs.push(envelope(
                stream_a.clone(),
                at,
                NotifyEvent::EmailQueued {
                    digest: m.digest(),
                    email: m,
                },
            ));
        }
        // another address's email, retired by the late email to the first address
        let mut other = mail("b's");
        other.address = "b@example.com".into();
        envs.push(envelope(
            notify::email_stream("b@example.com"),
            t0.plus(500),
            NotifyEvent::EmailQueued {
                digest: other.digest(),
                email: other,
            },
        ));
        envs.push(envelope(
            stream_a.clone(),
            t0.plus(2_000),
            NotifyEvent::EmailDelivered {
                queued: 1,
                address: "a@example.com".into(),
                error: None,
            },
        ));
        for i in 0..=DUPLICATE_WINDOW {
            let (routing_key, message) = (format!("k{i}"), "{}".to_string());
            envs.push(envelope(
                notify::pulse_stream(&routing_key),
                t0.plus(3_000),
                NotifyEvent::PulseSent {
                    digest: notify::pulse_digest(&routing_key, &message),
                    routing_key,
                    message,
                },
            ));
        }
        let late = mail("late");
        envs.push(envelope(
            stream_a,
            t0.plus(RATE_WINDOW_MS + 1_500),
            NotifyEvent::EmailQueued {
                digest: late.digest(),
                email: late,
            },
        ));
        let offsets: Vec<u64> = (1..=envs.len() as u64).collect();
        let next = envs.len() as u64 + 1;

        let (one_dir, batch_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let one = NotifyView::open(store::open(one_dir.path()).unwrap()).unwrap();
        for (i, env) in envs.iter().enumerate() {
            one.apply(&offsets[i..=i], offsets[i] + 1, std::slice::from_ref(env))
                .unwrap();
        }
        let batch = NotifyView::open(store::open(batch_dir.path()).unwrap()).unwrap();
        batch.apply(&offsets, next, &envs).unwrap();
        let rows = |v: &NotifyView, prefix: &[u8]| -> Vec<(Vec<u8>, Vec<u8>)> {
            v.db.iterator_cf(cf(&v.db, keys::CF_NOTIFY).unwrap(), IteratorMode::Start)
                .map(|i| {
                    let (k, v) = i.unwrap();
                    (k.to_vec(), v.to_vec())
                })
                .filter(|(k, _)| k.starts_with(prefix))
                .collect()
        };
        assert_eq!(rows(&one, b""), rows(&batch, b""));
        // what those rows say
        assert_eq!(
            rows(&batch, keys::NOTIFY_SENT_PREFIX).len() as u64,
            DUPLICATE_WINDOW
        );
        assert_eq!(
            rows(&batch, &keys::notify_rate_of("a@example.com")).len(),
            1
        );
        assert!(rows(&batch, &keys::notify_rate_of("b@example.com")).is_empty());
        assert_eq!(rows(&batch, keys::NOTIFY_RATE_TIME_PREFIX).len(), 1);
        let outbox: Vec<u64> = batch
            .outbox(10)
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(outbox, vec![2, 3, next - 1]);
        // the first email's digest has left the window, the late one's has not; a view opened
        // on the database again reads the window back from its rows
        let reopened = NotifyView::open(batch.db.clone()).unwrap();
        for view in [&batch, &one, &reopened] {
            assert!(!view.is_duplicate(&mail("m0").digest()).unwrap());
            assert!(!view.is_duplicate(&mail("m1").digest()).unwrap());
            assert!(view.is_duplicate(&mail("late").digest()).unwrap());
            let last = notify::pulse_digest(&format!("k{DUPLICATE_WINDOW}"), "{}");
            assert!(view.is_duplicate(&last).unwrap());
        }
    }

    #[tokio::test]
    async fn the_duplicate_window_keeps_the_latest_thousand() {
        let dir = tempfile::tempdir().unwrap();
        let db = store::open(dir.path()).unwrap();
        let log = Arc::new(EmbeddedLog::new(db.clone()));
        let view = Arc::new(NotifyView::open(db.clone()).unwrap());
        let engine = NotifyEngine::start(view.clone(), log.clone())
            .await
            .unwrap();
        let pulse = |i: u64| NotifyCommand::Pulse {
            routing_key: "k".into(),
            message: format!("{{\"i\":{i}}}"),
        };
        for i in 0..=DUPLICATE_WINDOW {
            let written = engine.execute(Actor::system("t"), pulse(i)).await.unwrap();
            assert_eq!(written.len(), 1);
        }
        // the first has left the window; the second has not
        let again = engine.execute(Actor::system("t"), pulse(0)).await.unwrap();
        assert_eq!(again.len(), 1);
        let again = engine.execute(Actor::system("t"), pulse(2)).await.unwrap();
        assert_eq!(again.len(), 0);
    }
}
