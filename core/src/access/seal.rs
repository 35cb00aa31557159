//! Access tokens sealed with AES-256-GCM before they enter an event (DESIGN.md, "Events").
//! The associated data is the clientId, so a sealed token cannot be moved to another client.
//!
//! **Invariant:** pure: the key and the nonce are arguments; the caller draws the nonce from a
//! system random source and never reuses one.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// A sealed secret: nonce and ciphertext (with its 16-byte tag).
///
/// Serialized as its two fields in binary formats (the log); as `"[redacted]"` in
/// human-readable ones (JSON for `events tail`, audit dumps), so not even ciphertext leaks there.
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct Sealed {
    pub nonce: [u8; 12],
    pub ciphertext: Vec<u8>,
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            return serializer.serialize_str("[redacted]");
        }
        let mut st = serializer.serialize_struct("Sealed", 2)?;
        st.serialize_field("nonce", &self.nonce)?;
        st.serialize_field("ciphertext", &self.ciphertext)?;
        st.end()
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed([redacted])")
    }
}

/// The 256-bit key. Its `Debug` shows nothing.
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

impl SealKey {
    pub fn new(bytes: [u8; 32]) -> SealKey {
        SealKey(bytes)
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.0).expect("a 32-byte AES-256 key"))
    }

    /// Seals `secret` for `owner` with a fresh `nonce`.
    pub fn seal(&self, owner: &str, secret: &str, nonce: [u8; 12]) -> Sealed {
        let mut buf = secret.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(owner.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM sealing of a short secret cannot fail");
        Sealed {
            nonce,
            ciphertext: buf,
        }
    }

    /// Opens a sealed secret of `owner`; None when the key, the owner or the bytes are wrong.
    pub fn open(&self, owner: &str, sealed: &Sealed) -> Option<String> {
        let mut buf = sealed.ciphertext.clone();
        let plain = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(sealed.nonce),
                Aad::from(owner.as_bytes()),
                &mut buf,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = SealKey::new([9; 32]);
        let token = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
        let sealed = key.seal("alice", token, [1; 12]);
        assert!(!sealed
            .ciphertext
            .windows(token.len())
            .any(|w| w == token.as_bytes()));
        assert_eq!(key.open("alice", &sealed).as_deref(), Some(token));
        // another owner, another key or a flipped bit: nothing
        assert_eq!(key.open("bob", &sealed), None);
        assert_eq!(SealKey::new([8; 32]).open("alice", &sealed), None);
        let mut bad = sealed.clone();
        bad.ciphertext[0] ^= 1;
        assert_eq!(key.open("alice", &bad), None);
        assert_eq!(
            format!("{sealed:?} {key:?}"),
            "Sealed([redacted]) SealKey([redacted])"
        );
        // the log's binary form round-trips; JSON shows nothing of it
        let bytes = crate::codec::encode(&sealed).unwrap();
        assert_eq!(bytes.len(), 1 + 12 + 1 + sealed.ciphertext.len());
        assert_eq!(crate::codec::decode::<Sealed>(&bytes).unwrap(), sealed);
        assert_eq!(serde_json::to_string(&sealed).unwrap(), "\"[redacted]\"");
    }
}
