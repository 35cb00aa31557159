//! Partition ownership as readers see it: markers, stamps and the rule that makes an event
//! valid.

use std::collections::BTreeMap;

/// The writer a record was stamped by: its epoch and its unique id.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Debug, Default)]
pub struct EpochIndex {
    markers: BTreeMap<u64, Owner>,
    /// Every position below this has been observed.
    scanned: u64,
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

    /// Records what is at `offset` and says whether it is a valid event. Positions must be
    /// observed in increasing order the first time; observing one again is harmless.
    pub fn observe(&mut self, offset: u64, seen: &Seen) -> bool {
        if offset >= self.scanned {
            self.scanned = offset + 1;
            if let Seen::Marker(owner) = seen {
                if owner.epoch > self.max_epoch() {
                    self.markers.insert(offset, owner.clone());
                }
                return false;
            }
        }
        match seen {
            Seen::Marker(_) => false,
            Seen::Event(stamp) => stamp.is_some() && stamp.as_ref() == self.owner_before(offset),
        }
    }

    /// Notes that positions below `next` hold nothing a reader can see (transaction markers).
    pub fn skip_to(&mut self, next: u64) {
        self.scanned = self.scanned.max(next);
    }
}
