//! Email delivery: empties the notify projection's outbox while this process writes the
//! notify partition. Each email is sent by SMTP (`serve --smtp-url`) or written as an `.eml`
//! file into a directory (the default, `<data-dir>/mail`), then recorded as `EmailDelivered`.
//!
//! A failure that may pass is tried again after 1, 2, 4, ... s, at most a minute apart: no
//! answer about the email (no connection, the 5xx replies that refuse the server's own
//! credentials, which an operator mends) for as long as it lasts, a receiving server's 4xx for
//! a day (then given up, as mail servers do); a refusal of the email itself (any other SMTP
//! 5xx, an address that is not one) is recorded at once as given up, with the error. Emails
//! waiting for their next try are read past, so they never hold up the others. An email sent whose record failed is not sent again by this process (its record is
//! retried); a restart, or another node taking the partition, between the two sends it again
//! (at-least-once).
//!
//! The message is `multipart/alternative`: the markdown as sent, and HTML rendered from it
//! (CommonMark with tables and strikethrough; raw HTML in the markdown is shown as text, never
//! passed through), with the link as a button.

use lettre::message::header::ContentType;
pub use lettre::message::Mailbox;
use lettre::message::{MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use taskledger_core::envelope::Actor;
use taskledger_core::notify::{Email, NotifyCommand, Template};
use taskledger_projections::NotifyEngine;

/// How an email leaves this server.
#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Directory(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    /// SMTP at `url` (`smtp://[user:pass@]host[:port]`, `?tls=required` for STARTTLS, or
    /// `smtps://` for TLS from the start). The error never quotes the URL, which may hold a
    /// password.
    pub fn smtp(url: &str) -> Result<Mailer, String> {
        let authority = url
            .strip_prefix("smtp://")
            .map(|r| r.split(['/', '?']).next());
        if authority.flatten().is_some_and(|a| a.contains('@')) && !url.contains("tls=required") {
            tracing::warn!(
                "--smtp-url gives credentials without TLS: they would cross the network in clear (add ?tls=required for STARTTLS, or use smtps://)"
            );
        }
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map(|b| Mailer::Smtp(b.timeout(Some(Duration::from_secs(30))).build()))
            .map_err(|_| {
                "--smtp-url is not an SMTP URL (smtp://[user:password@]host[:port][?tls=required], or smtps://...)"
                    .to_string()
            })
    }

    /// `.eml` files in `dir` (created if missing).
    pub fn directory(dir: PathBuf) -> std::io::Result<Mailer> {
        std::fs::create_dir_all(&dir)?;
        Ok(Mailer::Directory(AsyncFileTransport::new(dir)))
    }

    /// Sends `message`; when it did not leave, how it failed and why.
    async fn send(&self, message: Message) -> Result<(), (Failure, String)> {
        match self {
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| {
                let code = e.status().map(|c| c.to_string());
                let kind = match code.as_deref() {
                    // authentication refused: the server's configuration, not the email
                    Some("530" | "534" | "535" | "538") => Failure::Unreachable,
                    Some(_) if e.is_permanent() => Failure::Refused,
                    Some(_) => Failure::Deferred,
                    None => Failure::Unreachable,
                };
                (kind, e.to_string())
            }),
            Mailer::Directory(t) => t
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| (Failure::Unreachable, e.to_string())),
        }
    }
}

/// How a send failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Failure {
    /// The server refused the email for good (an SMTP 5xx about it): recorded at once.
    Refused,
    /// The server put it off (an SMTP 4xx: a full mailbox, greylisting): tried again for up to
    /// `DEFERRED_FOR`, as mail servers do, then recorded as given up.
    Deferred,
    /// No answer about the email (no connection, our credentials refused, the directory not
    /// writable): tried again for as long as it lasts.
    Unreachable,
}

/// How long an email the receiving server keeps putting off is tried.
const DEFERRED_FOR: Duration = Duration::from_secs(24 * 3600);

/// Emails sent in one pass; those waiting for their next try are read past.
const PASS: usize = 64;

/// The wait before the next try after `failures` failures: 1, 2, 4, ... s, at most a minute.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// An email's delivery so far, in this process.
#[derive(Default)]
struct Attempt {
    failures: u32,
    first_failure: Option<Instant>,
    not_before: Option<Instant>,
    /// Sent, but not yet recorded (`None`), or given up with this error.
    outcome: Option<Option<String>>,
}

/// Delivers the outbox while this process writes the notify partition.
pub async fn run_mail_delivery(notify: NotifyEngine, mailer: Mailer, from: Mailbox) {
    let mut attempts: HashMap<u64, Attempt> = HashMap::new();
    loop {
        let idle = deliver_once(&notify, &mailer, &from, &mut attempts).await;
        if idle {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One pass over the outbox; whether there was nothing to do now. Each email's record is
/// sent to the engine as soon as the email left (records waiting together are written in one
/// append), and the role is checked before each send, so a node that stops writing the
/// partition stops sending at once.
async fn deliver_once(
    notify: &NotifyEngine,
    mailer: &Mailer,
    from: &Mailbox,
    attempts: &mut HashMap<u64, Attempt>,
) -> bool {
    if !notify.role().is_writer() {
        // what was sent and not yet recorded is kept, never sent again by this process
        attempts.retain(|_, a| a.outcome == Some(None));
        return true;
    }
    // past the emails waiting for their next try, so that they never hold up the others
    let waiting = attempts
        .values()
        .filter(|a| a.not_before.is_some_and(|t| Instant::now() < t))
        .count();
    let outbox = match notify.view().outbox(PASS + waiting) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "mail: reading the outbox");
            return true;
        }
    };
    // forget what left the outbox (recorded); keep what lies past this read and was sent or
    // given up but not yet recorded, so it is never sent again
    let last = outbox.last().map(|(o, _)| *o);
    attempts.retain(|offset, a| {
        outbox.iter().any(|(o, _)| o == offset)
            || (a.outcome.is_some() && last.is_some_and(|l| *offset > l))
    });
    let mut records = Vec::new();
    for (offset, email) in outbox {
        if records.len() == PASS || !notify.role().is_writer() {
            break;
        }
        let attempt = attempts.entry(offset).or_default();
        if attempt.not_before.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        if attempt.outcome.is_none() {
            match message(from, &email) {
                Err(e) => attempt.outcome = Some(Some(e)),
                Ok(m) => match mailer.send(m).await {
                    Ok(()) => attempt.outcome = Some(None),
                    Err((Failure::Refused, e)) => attempt.outcome = Some(Some(e)),
                    Err((kind, e)) => {
                        let first = *attempt.first_failure.get_or_insert_with(Instant::now);
                        if kind == Failure::Deferred && first.elapsed() >= DEFERRED_FOR {
                            attempt.outcome = Some(Some(e));
                        } else {
                            attempt.failures += 1;
                            let wait = backoff(attempt.failures);
                            tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "mail: an email was not sent; trying again");
                            attempt.not_before = Some(Instant::now() + wait);
                            continue;
                        }
                    }
                },
            }
        }
        let error = attempt.outcome.clone().unwrap_or(None);
        if let Some(e) = &error {
            tracing::warn!(error = %e, "mail: an email was given up");
        }
        let cmd = NotifyCommand::Delivered {
            queued: offset,
            address: email.address.clone(),
            error,
        };
        let engine = notify.clone();
        let record = tokio::spawn(async move { engine.execute(Actor::system("mail"), cmd).await });
        records.push((offset, record));
    }
    let idle = records.is_empty();
    for (offset, record) in records {
        let failed = match record.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            // recorded at a later pass; never sent twice by this process
            tracing::warn!(error = %e, "mail: recording a delivery");
            if let Some(attempt) = attempts.get_mut(&offset) {
                attempt.not_before = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
    idle
}

/// The message for `email`, or why there is none (an address that is not one).
pub fn message(from: &Mailbox, email: &Email) -> Result<Message, String> {
    let to: Mailbox = email
        .address
        .parse()
        .map_err(|e| format!("the address {:?} cannot be mailed: {e}", email.address))?;
    let mut builder = Message::builder()
        .from(from.clone())
        .to(to)
        .subject(email.subject.clone());
    if let Some(r) = email
        .reply_to
        .as_deref()
        .and_then(|r| r.parse::<Mailbox>().ok())
    {
        builder = builder.reply_to(r);
    }
    let mut text = email.content.clone();
    if let Some(link) = &email.link {
        text.push_str(&format!("\n\n{}: {}\n", link.text, link.href));
    }
    let body = MultiPart::alternative()
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_PLAIN)
                .body(text),
        )
        .singlepart(
            SinglePart::builder()
                .header(ContentType::TEXT_HTML)
                .body(html(email)),
        );
    builder.multipart(body).map_err(|e| e.to_string())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether an email may link to `url`: `http`, `https` and `mailto` only.
fn safe_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    ["http://", "https://", "mailto:"]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// The markdown as HTML, raw HTML shown as text, with links and images only to `http`,
/// `https` and `mailto` (anything else, say `javascript:`, loses its address).
fn markdown_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, LinkType, Options, Parser, Tag};
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let events = Parser::new_ext(markdown, options).map(|event| {
        if let Event::Html(raw) | Event::InlineHtml(raw) = event {
            return Event::Text(raw);
        }
        if let Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) = event
        {
            // an email autolink (`<a@b.c>`) is its address alone; pulldown writes `mailto:`
            let kept = link_type == LinkType::Email || safe_url(&dest_url);
            let dest_url = if kept { dest_url } else { "".into() };
            return Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            });
        }
        if let Event::Start(Tag::Image {
            link_type,
            dest_url,
            title,
            id,
        }) = event
        {
            let dest_url = if safe_url(&dest_url) {
                dest_url
            } else {
                "".into()
            };
            return Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            });
        }
        event
    });
    let mut out = String::new();
    pulldown_cmark::html::push_html(&mut out, events);
    out
}

/// The HTML part: the rendered markdown in the template's frame, the link as a button.
fn html(email: &Email) -> String {
    let width = match email.template {
        Template::Simple => "max-width: 640px; margin: 0 auto;",
        Template::Fullscreen => "width: 100%;",
    };
    let button = email.link.as_ref().filter(|l| safe_url(&l.href)).map_or(String::new(), |l| {
        format!(
            "<p><a href=\"{}\" style=\"display: inline-block; padding: 8px 16px; background: #1565c0; color: #ffffff; text-decoration: none; border-radius: 4px;\">{}</a></p>",
            escape(&l.href),
            escape(&l.text)
        )
    });
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"font-family: sans-serif;\"><div style=\"{width}\">\n{}{button}\n</div></body></html>\n",
        escape(&email.subject),
        markdown_html(&email.content),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskledger_core::notify::Link;

    fn email() -> Email {
        Email {
            address: "dev@example.com".into(),
            subject: "Task failed: <build>".into(),
            content: "**bold** <script>alert(1)</script> [x](javascript:alert(1)) [y](https://example.com/y) <me@example.com>".into(),
            link: Some(Link {
                text: "Inspect Task".into(),
                href: "https://example.com/tasks/T".into(),
            }),
            reply_to: Some("owner@example.com".into()),
            template: Template::Simple,
        }
    }

    #[test]
    fn markdown_becomes_html_without_passing_html_or_scripts_through() {
        let h = html(&email());
        assert!(h.contains("<strong>bold</strong>"), "{h}");
        assert!(
            h.contains("&lt;script&gt;") && !h.contains("<script>"),
            "{h}"
        );
        assert!(!h.contains("javascript:"), "{h}");
        assert!(h.contains("href=\"https://example.com/y\""), "{h}");
        assert!(h.contains("href=\"mailto:me@example.com\""), "{h}");
        // a button to anything but the web or mail is left out
        let mut sneaky = email();
        sneaky.link = Some(Link {
            text: "Inspect Task".into(),
            href: "javascript:alert(1)".into(),
        });
        let h2 = html(&sneaky);
        assert!(
            !h2.contains("javascript:") && !h2.contains("Inspect Task"),
            "{h2}"
        );
        assert!(
            h.contains("Inspect Task") && h.contains("<title>Task failed: &lt;build&gt;</title>"),
            "{h}"
        );
    }

    #[test]
    fn retries_wait_longer_up_to_a_minute() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn a_message_has_both_parts_and_its_headers() {
        let from: Mailbox = "taskledger <notify@localhost>".parse().unwrap();
        let m = message(&from, &email()).unwrap();
        let text = String::from_utf8(m.formatted()).unwrap();
        assert!(text.contains("To: dev@example.com"), "{text}");
        assert!(text.contains("Reply-To: owner@example.com"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(
            text.contains("text/plain") && text.contains("text/html"),
            "{text}"
        );
        let mut bad = email();
        bad.address = "not an address".into();
        assert!(message(&from, &bad).is_err());
    }
}
