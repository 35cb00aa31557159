//! The per-partition hash chain: each valid event's link follows from its predecessor's.

/// The link before a partition's first event.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// The hash-chain link of an event after link `prev`: SHA-256 of `prev`, the key's length
/// and bytes, and the value. Offsets are not part of it (a writer does not know them before
/// the broker assigns them); only valid events are links, markers and superseded writers'
/// records are not.
pub fn chain_link(prev: &[u8; 32], key: &str, value: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(&(key.len() as u64).to_be_bytes());
    ctx.update(key.as_bytes());
    ctx.update(value);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub(super) fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The outcome of walking a partition's hash chain; also where a later walk carries on.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainCheck {
    /// Valid events walked (up to the break, if any).
    pub events: u64,
    /// The last verified link.
    pub head: [u8; 32],
    /// The offset of the first event whose link does not follow from its predecessor.
    pub broken_at: Option<u64>,
    /// The offset a walk continuing this one starts from.
    pub next: u64,
}

impl ChainCheck {
    /// Before the partition's first event.
    pub fn start() -> ChainCheck {
        ChainCheck {
            events: 0,
            head: CHAIN_START,
            broken_at: None,
            next: 0,
        }
    }
}
