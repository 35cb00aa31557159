//! The one binary codec: a format-version byte, then postcard.
//!
//! postcard tags enum variants by index, so event enums only ever grow at the end; a changed
//! shape is a new variant, upcast on read.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The leading byte of every encoded record.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record")]
    Empty,
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    #[error("postcard: {0}")]
    Postcard(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    let out = postcard::to_extend(value, std::mem::take(&mut out))?;
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    decode_borrowed(bytes)
}

/// `decode` for a type that borrows from `bytes`: its strings and byte slices are read in
/// place instead of copied out.
pub fn decode_borrowed<'de, T: serde::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(CodecError::UnknownVersion(v)),
    }
}

/// Test support: compares `value`'s encoding, as hex, with the golden file at `path`
/// (rewritten first when `UPDATE_EXPECT` is set: only when adding a variant).
#[cfg(test)]
pub(crate) fn assert_golden<T: Serialize>(value: &T, path: &str) {
    let hex: String = encode(value)
        .expect("encodes")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(std::path::Path::new(path).parent().expect("a parent"))
            .expect("golden dir");
        std::fs::write(path, &hex).expect("golden write");
    }
    let golden =
        std::fs::read_to_string(path).expect("golden file (regenerate with UPDATE_EXPECT=1)");
    assert_eq!(hex, golden.trim());
}

/// `assert_golden` of `events` as the payload of the fixed envelope the services' golden
/// tests share: event id 1, sequence 1 of `stream`, time 1,700,000,000,000, actor `root`.
#[cfg(test)]
pub(crate) fn assert_golden_events<E: Serialize>(stream: &str, events: E, path: &str) {
    let envelope = crate::envelope::Envelope {
        event_id: crate::envelope::EventId(uuid::Uuid::from_u128(1)),
        stream_id: stream.into(),
        sequence: 1,
        time: crate::time::Millis(1_700_000_000_000),
        actor: crate::envelope::Actor {
            client_id: "root".into(),
            request_id: None,
        },
        causation_id: None,
        writer_epoch: 1,
        payload: events,
    };
    assert_golden(&envelope, path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_byte_leads_and_is_checked() {
        let bytes = encode(&(7u32, "x".to_string())).unwrap();
        assert_eq!(bytes, vec![1, 7, 1, b'x']);
        assert_eq!(decode::<(u32, String)>(&bytes).unwrap(), (7, "x".into()));
        assert!(matches!(
            decode::<(u32, String)>(&[9, 7, 1, b'x']),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
