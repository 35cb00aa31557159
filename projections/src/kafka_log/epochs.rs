//! Partition ownership as readers see it: markers, stamps and the rule that makes an event
//! valid.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The writer a record was stamped by: its epoch and its unique id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub epoch: u64,
    pub writer: String,
}

/// What a reader saw at one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// An `OwnershipTaken` marker.
    Marker(Owner),
    /// An event stamped by this writer (`None`: no stamp).
    Event(Option<Owner>),
}

/// The ownership history of one partition, built by observing it in offset order: which
/// markers took effect (an epoch above every earlier effective one) and how far it has been
/// observed. An event is valid exactly when its stamp is the owner of the last effective
/// marker before it — a deterministic rule every reader applies alike.
///
/// It also holds what a process learns only by reading the partition from its start: the
/// chain link of the last valid event (where a new owner's chain goes on) and the node each
/// marker announced (where followers forward commands). Everything in it describes the
/// positions below `scanned` and nothing beyond, so a copy kept between starts (see
/// `KafkaLog::keep_indexes_in`) lets observation resume at `scanned` instead of offset 0.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochIndex {
    markers: BTreeMap<u64, Owner>,
    /// Every position below this has been observed.
    scanned: u64,
    /// The offset and claimed chain link of the last valid event observed.
    last_link: Option<(u64, [u8; 32])>,
    /// The `node` each effective marker announced, by epoch.
    nodes: BTreeMap<u64, String>,
}

impl EpochIndex {
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The owner in force just before `offset`.
    pub fn owner_before(&self, offset: u64) -> Option<&Owner> {
        self.markers.range(..offset).next_back().map(|(_, o)| o)
    }

    /// The highest epoch that took effect.
    pub fn max_epoch(&self) -> u64 {
        self.markers.values().next_back().map_or(0, |o| o.epoch)
    }

    /// The offset and claimed chain link of the last valid event observed.
    pub fn last_link(&self) -> Option<(u64, [u8; 32])> {
        self.last_link
    }

    /// The offset and owner of the last marker that took effect.
    pub fn last_marker(&self) -> Option<(u64, &Owner)> {
        self.markers.iter().next_back().map(|(&at, o)| (at, o))
    }

    /// The node the marker of `epoch` announced, if it named one.
    pub fn node(&self, epoch: u64) -> Option<&str> {
        self.nodes.get(&epoch).map(String::as_str)
    }

    /// Notes the node the marker at `offset`, of `epoch`, announced, once `observe` found that
    /// the marker took effect (a marker that did not, such as the loser of two announcing the
    /// same epoch, names no writer).
    pub fn note_node(&mut self, offset: u64, epoch: u64, node: String) {
        if self.markers.get(&offset).is_some_and(|o| o.epoch == epoch) {
            self.nodes.insert(epoch, node);
        }
    }

    /// Records what is at `offset` (for an event, the chain link it claims) and says whether
    /// it is a valid event. Positions must be observed in increasing order the first time;
    /// observing one again is harmless.
    pub fn observe(&mut self, offset: u64, seen: &Seen, link: Option<[u8; 32]>) -> bool {
        let first = offset >= self.scanned;
        if first {
            self.scanned = offset + 1;
            if let Seen::Marker(owner) = seen {
                if owner.epoch > self.max_epoch() {
                    self.markers.insert(offset, owner.clone());
                }
            }
        }
        let valid = match seen {
            Seen::Marker(_) => false,
            Seen::Event(stamp) => stamp.is_some() && stamp.as_ref() == self.owner_before(offset),
        };
        if let (true, true, Some(link)) = (first, valid, link) {
            self.last_link = Some((offset, link));
        }
        valid
    }

    /// Notes that positions below `next` hold nothing a reader can see (transaction markers).
    pub fn skip_to(&mut self, next: u64) {
        self.scanned = self.scanned.max(next);
    }
}
