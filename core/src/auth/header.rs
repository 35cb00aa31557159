//! Hawk header parsing, as node hawk's `parseAuthorizationHeader` does it.

use super::*;

/// The attributes of a Hawk header, as sent.
pub(super) struct Attributes<'h> {
    pub(super) id: &'h str,
    pub(super) ts: &'h str,
    pub(super) nonce: &'h str,
    pub(super) mac: &'h str,
    pub(super) hash: Option<&'h str>,
    pub(super) ext: Option<&'h str>,
    pub(super) app: Option<&'h str>,
}

/// JavaScript's `\w`.
fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// JavaScript's `\s` (close enough: Unicode white space).
pub(super) fn is_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// Characters that JavaScript's `.` does not match.
fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// Whether `text` holds a line terminator, looking at its bytes first: `\n` and `\r` are
/// one byte each, and U+2028 and U+2029 both start with 0xE2.
fn has_line_terminator(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'\n' | b'\r' | 0xE2)) && text.contains(is_line_terminator)
}

pub(super) fn parse_authorization(header: &str) -> Result<Attributes<'_>, AuthError> {
    // JavaScript's length counts UTF-16 units, never more than the UTF-8 bytes: count them
    // only for a header long enough in bytes to be over
    if header.len() > MAX_HEADER_LEN && header.encode_utf16().count() > MAX_HEADER_LEN {
        return Err(AuthError::bad_request("Header length too long"));
    }
    // /^(\w+)(?:\s+(.*))?$/
    let scheme_len = header.find(|c: char| !is_word(c)).unwrap_or(header.len());
    let (scheme, rest) = header.split_at(scheme_len);
    if scheme.is_empty() || !(rest.is_empty() || rest.starts_with(is_space)) {
        return Err(AuthError::bad_request("Invalid header syntax"));
    }
    let text = rest.trim_start_matches(is_space);
    if has_line_terminator(text) {
        return Err(AuthError::bad_request("Invalid header syntax"));
    }
    if !scheme.eq_ignore_ascii_case("hawk") {
        return Err(AuthError::new("Unauthorized"));
    }
    if text.is_empty() {
        return Err(AuthError::bad_request("Invalid header syntax"));
    }

    let mut found: Vec<(&str, &str)> = Vec::new();
    let mut error: Option<String> = None;
    let mut leftover = false;
    let mut i = 0;
    while i < text.len() {
        match match_attribute(text, i) {
            Some((name, value, end)) => {
                if let Err(message) = record_attribute(&mut found, name, value) {
                    error = Some(message);
                }
                i = end;
            }
            None => {
                leftover = true;
                i = past_unmatched(text, i);
            }
        }
    }
    if let Some(message) = error {
        return Err(AuthError::bad_request(message));
    }
    if leftover {
        return Err(AuthError::bad_request("Bad header format"));
    }

    let get = |name: &str| found.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let (Some(id), Some(ts), Some(nonce), Some(mac)) =
        (get("id"), get("ts"), get("nonce"), get("mac"))
    else {
        return Err(AuthError::bad_request("Missing attributes"));
    };
    Ok(Attributes {
        id,
        ts,
        nonce,
        mac,
        hash: get("hash"),
        ext: get("ext"),
        app: get("app"),
    })
}

/// Where to look for the next attribute after none matched at `i`. A match starting inside
/// the word at `i` would take the rest of the word as its name and then fail on the same text
/// after it, so the whole word is passed at once; otherwise a long word would be scanned from
/// each of its characters.
pub(super) fn past_unmatched(text: &str, i: usize) -> usize {
    let word = text[i..]
        .find(|c: char| !is_word(c))
        .unwrap_or(text.len() - i);
    i + word.max(text[i..].chars().next().map_or(1, char::len_utf8))
}

/// Match `(\w+)="([^"\\]*)"\s*(?:,\s*|$)` at byte offset `start`; returns the
/// name, the value and the end offset of the match.
pub(super) fn match_attribute(text: &str, start: usize) -> Option<(&str, &str, usize)> {
    let rest = &text[start..];
    let name_len = rest.find(|c: char| !is_word(c)).unwrap_or(rest.len());
    if name_len == 0 {
        return None;
    }
    let quoted = rest[name_len..].strip_prefix("=\"")?;
    let close = quoted.find(['"', '\\'])?;
    if !quoted[close..].starts_with('"') {
        return None;
    }
    let value = &quoted[..close];
    let tail = quoted[close + 1..].trim_start_matches(is_space);
    let tail = match tail.strip_prefix(',') {
        Some(after_comma) => after_comma.trim_start_matches(is_space),
        None if tail.is_empty() => tail,
        None => return None,
    };
    Some((&rest[..name_len], value, text.len() - tail.len()))
}

fn record_attribute<'h>(
    found: &mut Vec<(&'h str, &'h str)>,
    name: &'h str,
    value: &'h str,
) -> Result<(), String> {
    const NAMES: [&str; 8] = ["id", "ts", "nonce", "hash", "ext", "mac", "app", "dlg"];
    if !NAMES.contains(&name) {
        return Err(format!("Unknown attribute: {name}"));
    }
    // Printable ASCII without `"` and `\` (those never reach here).
    if value.is_empty() || !value.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(format!("Bad attribute value: {name}"));
    }
    if found.iter().any(|(n, _)| *n == name) {
        return Err(format!("Duplicate attribute: {name}"));
    }
    found.push((name, value));
    Ok(())
}

/// What the hawk crate's MAC is computed over and compared with, taken from the attributes
/// parsed above (the header is not parsed a second time).
pub(super) struct Signature<'h> {
    pub(super) ts: SystemTime,
    pub(super) nonce: &'h str,
    pub(super) mac: hawk::mac::Mac,
    pub(super) hash: Option<Vec<u8>>,
    pub(super) ext: Option<&'h str>,
}

/// The header's signature, with its `ts` in seconds, when the hawk crate's MAC can represent
/// it exactly: `ts` in plain decimal (at most `MAX_TS_SECS`), `mac`/`hash` in canonical
/// standard base64 (as the crate decodes them), and no `app` (the crate's MAC leaves out
/// `app`/`dlg`). The attributes are node hawk's reading of the header, which takes a little
/// more than the crate's own parser did: a trailing comma, and U+FEFF as white space.
pub(super) fn signature<'h>(attrs: &Attributes<'h>) -> Option<(Signature<'h>, u64)> {
    let plain_decimal = !attrs.ts.is_empty()
        && attrs.ts.bytes().all(|b| b.is_ascii_digit())
        && (attrs.ts == "0" || !attrs.ts.starts_with('0'));
    let ts_secs = attrs
        .ts
        .parse::<u64>()
        .ok()
        .filter(|ts| *ts <= MAX_TS_SECS)?;
    if !plain_decimal || attrs.app.is_some() {
        return None;
    }
    let mac = STANDARD.decode(attrs.mac).ok()?;
    let hash = match attrs.hash {
        Some(h) => Some(STANDARD.decode(h).ok()?),
        None => None,
    };
    let signature = Signature {
        ts: UNIX_EPOCH + Duration::from_secs(ts_secs),
        nonce: attrs.nonce,
        mac: hawk::mac::Mac::from(mac),
        hash,
        ext: attrs.ext,
    };
    Some((signature, ts_secs))
}
