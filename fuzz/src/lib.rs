//! What every fuzz target of pullprobe checks besides "no panic": an error
//! carries a reason from the allowed set and a message of bounded length,
//! whatever the input, so a hostile registry, cluster or config cannot grow
//! a result, a log line or an alert annotation without bound.
//!
//! Also the few values the targets share: the results that alert and history
//! read-backs are judged against, and the UTF-8 view of raw input.

use std::collections::BTreeMap;

use pullprobe::reason::{ProbeError, Reason};
use pullprobe::result::ProbeResult;

/// Longest error message a parser may return, in characters. Messages name what is
/// wrong and may quote a short piece of the input; they never grow with the input.
/// `scripts/fuzz` lets inputs grow to 16 KiB, well past this, so a message that
/// echoes its input whole is caught.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Panic unless `message` is within [`MAX_MESSAGE_CHARS`].
pub fn check_message(what: &str, message: &str) {
    check_message_within(what, message, MAX_MESSAGE_CHARS);
}

/// Panic unless `message` is within `limit` characters.
pub fn check_message_within(what: &str, message: &str, limit: usize) {
    let chars = message.chars().count();
    assert!(
        chars <= limit,
        "{what}: message of {chars} characters (over {limit}): {}…",
        message.chars().take(200).collect::<String>()
    );
}

/// Panic unless `error` has one of `allowed` reasons and a bounded message.
pub fn check_error(what: &str, error: &ProbeError, allowed: &[Reason]) {
    assert!(
        allowed.contains(&error.reason),
        "{what}: reason {} is not one of {allowed:?}: {}",
        error.reason,
        error.message
    );
    check_message(what, &error.message);
    if let Some(code) = &error.registry_error {
        check_message(what, code);
    }
}

/// The input as text, when it is UTF-8 (what a header value, a YAML file or a
/// command-line argument must be before pullprobe parses it).
pub fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// The start of the targets that read a node's registry configuration for one image:
/// the first byte picks an (image, registry URL) pair of `images`, the rest is the
/// file's text. `None` for an empty input or text that is not UTF-8.
pub fn image_and_text<'a>(
    data: &'a [u8],
    images: &[(&str, &str)],
) -> Option<(pullprobe::reference::ImageReference, url::Url, &'a str)> {
    let (&first, rest) = data.split_first()?;
    let input = text(rest)?;
    let (image, registry) = images[usize::from(first) % images.len()];
    let image = pullprobe::reference::ImageReference::parse(image).expect("a reference");
    let registry = url::Url::parse(registry).expect("a URL");
    Some((image, registry, input))
}

/// A result of probe `golden-base` through `frontend`: passing, or failed with `reason`.
/// Alert and history read-backs are judged against these.
pub fn result(frontend: &str, reason: Option<Reason>) -> ProbeResult {
    ProbeResult {
        probe: "golden-base".into(),
        kind: pullprobe::result::Kind::Pull,
        image: "registry.example.org/base/buster:latest".into(),
        registry: "prod".into(),
        frontend: frontend.into(),
        location: "eqiad".into(),
        platform: "linux/amd64".into(),
        ok: reason.is_none(),
        reason,
        phase: None,
        error: reason.map(|r| format!("{r} on layer 2")),
        registry_error: None,
        retries: 0,
        manifest_digest: None,
        started_at: time::macros::datetime!(2026-11-23 06:00:00 UTC),
        duration_seconds: 2.0,
        phases: BTreeMap::from([("manifest".to_string(), 0.5), ("transfer".to_string(), 1.5)]),
        tls_not_after: None,
        layers: Vec::new(),
        ratelimit_remaining: None,
        used_by: Vec::new(),
        mirror_position: None,
        referrers: None,
        warnings: Vec::new(),
    }
}

/// One passing and two failing results of one probe, on three frontends.
pub fn results() -> Vec<ProbeResult> {
    vec![
        result("10.0.0.1", Some(Reason::BlobUnknown)),
        result("10.0.0.2", None),
        result("10.0.0.3", Some(Reason::Timeout)),
    ]
}

/// Panic unless a configuration file's error names `file` (or a place in it,
/// `FILE:LINE:COLUMN`), has a one-line message of at most 1,000 characters plus an
/// ellipsis, and a position, when it has one, inside `text`.
pub fn check_config_error(error: &pullprobe::config::ConfigError, file: &str, text: &str) {
    let place = error.file.strip_prefix(file);
    assert!(place.is_some_and(|rest| rest.is_empty() || rest.starts_with(':')), "{error}: not in {file}");
    assert!(error.message.chars().count() <= 1_001, "{error}");
    assert!(!error.message.contains(['\n', '\r']), "a multi-line message: {error}");
    if let Some(position) = error.position {
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(position.line >= 1 && position.line as usize <= lines.len(), "{error}: {} lines", lines.len());
        let chars = lines[position.line as usize - 1].chars().count();
        assert!(position.column >= 1 && position.column as usize <= chars + 1, "{error}: {chars} characters");
    }
}

/// The user info of the URLs written in `text` (`scheme://user:password@host`) whose
/// password has at least `min_len` characters, as `://user:password@`, each written
/// once: a message that contains one quotes a URL with its credentials.
pub fn url_passwords(text: &str, min_len: usize) -> Vec<String> {
    let mut passwords = Vec::new();
    for (start, _) in text.match_indices("://") {
        let rest = &text[start + 3..];
        let end = rest.find(|c: char| matches!(c, '/' | '"' | '\'' | ' ' | '\n' | '?' | '#')).unwrap_or(rest.len());
        let Some((userinfo, _)) = rest[..end].rsplit_once('@') else { continue };
        let written = format!("://{userinfo}@");
        if userinfo.split_once(':').is_some_and(|(_, password)| password.chars().count() >= min_len)
            && text.matches(written.as_str()).count() == 1
        {
            passwords.push(written);
        }
    }
    passwords
}
