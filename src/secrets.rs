//! The secrets `serve` keeps in its data directory (made on first start) or takes from the
//! environment, where several nodes share them.

use anyhow::{Context, Result};
use std::path::Path;
use taskledger_core::access::seal::SealKey;

/// A secret from the environment variable `var` when set (several nodes share it), else
/// from `path` in the data directory (made there on first start).
pub(crate) fn shared_secret(var: &str, path: &Path) -> Result<String> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Ok(stored_secret(path, access_token)?.0),
    }
}

/// Reads a secret from `path`, or makes one and stores it there, in a file created with mode
/// 0600 (never readable by others, not even for a moment) and never over an existing one.
pub(crate) fn stored_secret(path: &Path, make: impl FnOnce() -> String) -> Result<(String, bool)> {
    use std::io::Write as _;
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => anyhow::bail!(
            "{} is empty (a start interrupted while writing it?): delete it to have a new one \
             made, or restore it",
            path.display()
        ),
        Ok(s) => return Ok((s.trim().to_string(), false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let s = make();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(s.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((s, true))
}

pub(crate) fn access_token() -> String {
    format!("{}{}", slugid::v4(), slugid::v4())
}

/// Static clients never expire: +1000 years, as upstream.
pub(crate) fn far_future() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() + chrono::Duration::days(1000 * 365)
}

/// The key that seals access tokens in events: `TASKLEDGER_CRYPTO_KEY` (base64, 32 bytes) or
/// a key generated once into the data directory.
pub(crate) fn seal_key(data_dir: &Path) -> Result<SealKey> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = match std::env::var("TASKLEDGER_CRYPTO_KEY") {
        Ok(k) if !k.is_empty() => k,
        _ => {
            stored_secret(&data_dir.join("crypto-key"), || {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .expect("system randomness");
                b64.encode(key)
            })?
            .0
        }
    };
    let bytes = b64
        .decode(text.trim())
        .context("TASKLEDGER_CRYPTO_KEY must be base64")?;
    let key: [u8; 32] = bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the crypto key must be 32 bytes (base64-encoded)"))?;
    Ok(SealKey::new(key))
}

/// The secrets `serve` keeps in the data directory.
pub(crate) struct Secrets {
    pub(crate) root_token: String,
    pub(crate) generated: bool,
    pub(crate) queue_token: String,
    pub(crate) url_key: String,
    pub(crate) worker_manager_token: String,
}
