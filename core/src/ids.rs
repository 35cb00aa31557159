//! Identifiers. Parsed at the edge; past the gateway nothing is identified by a bare `String`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A slugid (taskId, taskGroupId, uploadId): 16 bytes of a v4 UUID, shown as 22 URL-safe
/// base64 characters. The codec (postcard) stores the 16 bytes; human-readable formats (the
/// JSON of `events tail`, `audit history` and the audit API) show the slugid itself.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slug(pub [u8; 16]);

/// The bytes as the derived implementations wrote them (a newtype of `[u8; 16]`): the wire
/// format of every logged id.
#[derive(Serialize, Deserialize)]
#[serde(rename = "Slug")]
struct SlugBytes([u8; 16]);

impl Serialize for Slug {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.text().serialize(s)
        } else {
            SlugBytes(self.0).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Slug {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            // any 16 bytes, as written above (`NIL` included), not only a valid v4 slugid
            let text = String::deserialize(d)?;
            let bytes = URL_SAFE_NO_PAD
                .decode(&text)
                .ok()
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .ok_or_else(|| serde::de::Error::custom(InvalidSlug(text)))?;
            Ok(Slug(bytes))
        } else {
            SlugBytes::deserialize(d).map(|b| Slug(b.0))
        }
    }
}

/// The identity of a task.
pub type TaskId = Slug;
/// The identity of a task group (a taskId by another name).
pub type TaskGroupId = Slug;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid slugid")]
pub struct InvalidSlug(pub String);

impl Slug {
    /// All zeros: no valid slugid (its version nibble is not 4), so never one a caller sends.
    /// An object artifact stores it for an upload id it does not keep (`ArtifactStorage`).
    pub const NIL: Slug = Slug([0; 16]);

    /// A fresh "nice" slugid (first bit cleared), as Taskcluster's generators make.
    pub fn nice() -> Slug {
        slugid::nice().parse().expect("slugid generates valid ids")
    }

    /// The nice slugid made of the first 16 bytes of `digest` (at least 16), its version and
    /// variant bits set as a v4 UUID's: the same bytes give the same id, so an id derived
    /// from what an event holds is the same on every retry and every replay.
    pub fn from_digest(digest: &[u8]) -> Slug {
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        b[0] &= 0x7f;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Slug(b)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The slugid's text without a heap allocation (what `to_string` returns).
    pub fn text(&self) -> SlugText {
        let mut text = [0; 22];
        // 16 bytes are always 22 characters unpadded
        let _ = URL_SAFE_NO_PAD.encode_slice(self.0, &mut text);
        SlugText(text)
    }
}

/// Taskcluster's slugid regex, without a regex engine.
fn slug_shape_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let body = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
    b.len() == 22
        && b.iter().all(|&c| body(c))
        && (b'Q'..=b'T').contains(&b[8])
        && b"CGKOSWaeimquy26-".contains(&b[10])
        && b"AQgw".contains(&b[21])
}

impl FromStr for Slug {
    type Err = InvalidSlug;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if !slug_shape_ok(s) {
            return Err(InvalidSlug(s.to_string()));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| InvalidSlug(s.to_string()))?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| InvalidSlug(s.to_string()))?;
        Ok(Slug(arr))
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text().as_str())
    }
}

/// A slugid's 22 characters (`Slug::text`), on the stack. Serializes as that string.
#[derive(Clone, Copy)]
pub struct SlugText([u8; 22]);

impl SlugText {
    pub fn as_str(&self) -> &str {
        // base64's URL-safe alphabet is ASCII
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Serialize for SlugText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({self})")
    }
}

/// A task queue: `<provisionerId>/<workerType>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub struct TaskQueueId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid taskQueueId")]
pub struct InvalidTaskQueueId(pub String);

/// `^[a-zA-Z0-9-_]{1,38}$`: provisionerId, workerGroup, workerId, schedulerId (URL form).
pub fn is_ident38(s: &str) -> bool {
    (1..=38).contains(&s.len())
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// `^[a-z]([-a-z0-9]{0,36}[a-z0-9])?$`: workerType in bodies.
pub fn is_worker_type(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 38 || !b[0].is_ascii_lowercase() {
        return false;
    }
    let last = b[b.len() - 1];
    b.iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && (b.len() == 1 || last.is_ascii_lowercase() || last.is_ascii_digit())
}

impl TaskQueueId {
    pub fn new(provisioner_id: &str, worker_type: &str) -> Result<Self, InvalidTaskQueueId> {
        format!("{provisioner_id}/{worker_type}").parse()
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn provisioner_id(&self) -> &str {
        self.0.split_once('/').map(|(p, _)| p).unwrap_or("")
    }
    pub fn worker_type(&self) -> &str {
        self.0.split_once('/').map(|(_, w)| w).unwrap_or("")
    }
}

impl FromStr for TaskQueueId {
    type Err = InvalidTaskQueueId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((p, w)) if is_ident38(p) && is_worker_type(w) => Ok(TaskQueueId(s.to_string())),
            _ => Err(InvalidTaskQueueId(s.to_string())),
        }
    }
}

impl fmt::Display for TaskQueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codec keeps the 16 bytes (as before: logged ids decode unchanged); JSON shows the
    /// slugid, and reads it back, `NIL` included.
    #[test]
    fn slugs_are_bytes_in_the_codec_and_text_in_json() {
        let id: Slug = "fN1SbArXTPSVFNUvaOlinQ".parse().unwrap();
        let bytes = crate::codec::encode(&id).unwrap();
        assert_eq!(&bytes[1..], id.0, "the version byte, then the 16 bytes");
        assert_eq!(crate::codec::decode::<Slug>(&bytes).unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"fN1SbArXTPSVFNUvaOlinQ\"");
        assert_eq!(serde_json::from_str::<Slug>(&json).unwrap(), id);
        let nil = serde_json::to_string(&Slug::NIL).unwrap();
        assert_eq!(serde_json::from_str::<Slug>(&nil).unwrap(), Slug::NIL);
        assert!(serde_json::from_str::<Slug>("\"short\"").is_err());
    }

    #[test]
    fn slug_round_trips_and_rejects_bad_shapes() {
        for _ in 0..200 {
            let id = Slug::nice();
            let text = id.to_string();
            assert_eq!(text.len(), 22);
            assert_eq!(text.parse::<Slug>().unwrap(), id);
            // the text is the slugid crate's own, whichever way it is written
            let theirs = slugid::v4();
            let parsed: Slug = theirs.parse().unwrap();
            assert_eq!(parsed.text().as_str(), theirs);
            assert_eq!(parsed.to_string(), theirs);
        }
        for bad in [
            "",
            "abc",
            "AAAAAAAAAAAAAAAAAAAAAA",
            "fN1SbArXTPSVFNUvaOlinQ!",
        ] {
            assert!(bad.parse::<Slug>().is_err(), "{bad}");
        }
        assert!("fN1SbArXTPSVFNUvaOlinQ".parse::<Slug>().is_ok());
    }

    #[test]
    fn derived_slugs_are_valid_nice_and_stable() {
        for n in 0u8..=255 {
            let digest: Vec<u8> = (0..32)
                .map(|i| n.wrapping_mul(31).wrapping_add(i))
                .collect();
            let id = Slug::from_digest(&digest);
            assert_eq!(id, Slug::from_digest(&digest));
            let text = id.to_string();
            assert_eq!(text.parse::<Slug>().unwrap(), id, "{text}");
            assert!(
                !text.starts_with('-') && text.as_bytes()[0] < b'g',
                "nice: {text}"
            );
        }
    }

    #[test]
    fn task_queue_ids() {
        let q: TaskQueueId = "proj-ci/linux-large".parse().unwrap();
        assert_eq!(q.provisioner_id(), "proj-ci");
        assert_eq!(q.worker_type(), "linux-large");
        for bad in ["noslash", "p/Upper", "p/-x", "p/x-", "/w", "a b/c"] {
            assert!(bad.parse::<TaskQueueId>().is_err(), "{bad}");
        }
    }
}
