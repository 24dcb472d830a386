//! The one place that decides what is secret. Every message that may carry a
//! URL or a header value passes through here before it reaches a log line,
//! the JSON result, a metric or an alert.
//!
//! Secrets are: credentials in URLs (`user:pass@`), query strings (signed
//! object-storage URLs carry their signature there), and `Authorization`-style
//! values (`Bearer …`, `Basic …`, `token=…`). It also decides how much of a
//! JSON document a parse error may quote: serde_json's own message quotes the
//! offending value whole, which may be a credential or megabytes long.

use url::Url;

/// A URL fit to show: no user info, no query string, no fragment.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    if shown.query().is_some() {
        shown.set_query(Some("[redacted]"));
    }
    shown.set_fragment(None);
    shown.to_string()
}

/// `text` with the user info of every URL in it left out (`https://user:password@host`
/// becomes `https://host`), and nothing else changed: for messages that quote what a
/// file says, where a URL may carry credentials and anything else helps the reader.
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // Not at a tab or a newline: URL parsers drop them, so `user\r:pass@host` is user info.
        let end = tail.find(['/', '?', '#', '"', '\'', ' ']).unwrap_or(tail.len());
        rest = match tail[..end].rfind('@') {
            Some(userinfo_end) => &tail[userinfo_end + 1..],
            None => tail,
        };
    }
    out.push_str(rest);
    out
}

/// Free text (an error chain, a server message) with anything secret-looking
/// removed, on one line: whitespace other than a space becomes a space (so
/// `Bearer\n<token>` is still two words, and the token is hidden), and any
/// other control character is escaped (`\u{1b}`): a server's message cannot
/// start a log line of its own or a Nagios status of its own.
pub fn redact_text(text: &str) -> String {
    let text = one_line(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_ref();
    while let Some(start) = find_url_start(rest) {
        out.push_str(&redact_words(&rest[..start]));
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ')' || c == '>')
            .unwrap_or(tail.len());
        let candidate = &tail[..end];
        match Url::parse(candidate) {
            Ok(url) => out.push_str(&redact_url(&url)),
            Err(_) => out.push_str("[url]"),
        }
        rest = &tail[end..];
    }
    out.push_str(&redact_words(rest));
    out
}

fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || c.is_whitespace() && c != ' ') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_whitespace() {
            out.push(' ');
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn find_url_start(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Remove the value after `Bearer`, `Basic`, and `token=`/`password=`-style keys.
fn redact_words(text: &str) -> String {
    let mut out = Vec::new();
    let mut hide_next = false;
    for word in text.split(' ') {
        if hide_next {
            out.push("[redacted]".to_string());
            hide_next = false;
            continue;
        }
        let lower = word.to_ascii_lowercase();
        // `"Bearer`, `(Basic`: quoted or bracketed in Debug output all the same.
        let bare = lower.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
        if bare == "bearer" || bare == "basic" {
            hide_next = true;
            out.push(word.to_string());
            continue;
        }
        let secret_key =
            ["token=", "access_token=", "password=", "secret=", "signature="].iter().find(|k| lower.contains(*k));
        match secret_key {
            Some(key) => {
                let at = lower.find(key).unwrap_or(0) + key.len();
                out.push(format!("{}[redacted]", &word[..at]));
            }
            None => out.push(word.to_string()),
        }
    }
    out.join(" ")
}

/// A value a message quotes from what a server or a file said: in quotes and
/// escaped, so a newline or a control character cannot start a log line of its
/// own, cut to `max_chars` characters (then `…`). It hides no secret: callers
/// quote values that hold none, or strip them first.
pub fn quoted(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

/// Longest serde_json message kept by [`json_error`].
const MAX_JSON_ERROR_CHARS: usize = 300;

/// A JSON parse error of a document that holds no secrets (a manifest, an answer
/// of a server): serde_json's message, which quotes the offending value, cut in the
/// middle to at most 300 characters so that `at line … column …` stays.
pub fn json_error(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let chars = message.chars().count();
    if chars <= MAX_JSON_ERROR_CHARS {
        return message;
    }
    let keep_end = MAX_JSON_ERROR_CHARS / 3;
    let head: String = message.chars().take(MAX_JSON_ERROR_CHARS - keep_end - 1).collect();
    let tail: String = message.chars().skip(chars - keep_end).collect();
    format!("{head}…{tail}")
}

/// A JSON parse error of a document that may hold secrets (a Docker config, a pull
/// secret): what kind of problem and where, quoting nothing of the document.
pub fn json_error_position(error: &serde_json::Error) -> String {
    let problem = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "JSON cut short",
    };
    format!("{problem} at line {} column {}", error.line(), error.column())
}

/// Log output with [`redact_text`] applied to every line: what pullprobe logs
/// never carries a secret, and this also covers what its libraries log at
/// debug level (reqwest names redirect targets, signed query strings included).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactedStderr {
    type Writer = RedactingWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { line: Vec::new() }
    }
}

/// One log event, held until it is complete, then written redacted to stderr.
pub struct RedactingWriter {
    line: Vec<u8>,
}

impl std::io::Write for RedactingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.line.is_empty() {
            return Ok(());
        }
        let shown = redact_lines(&String::from_utf8_lossy(&self.line));
        self.line.clear();
        std::io::stderr().lock().write_all(shown.as_bytes())
    }
}

/// [`redact_text`] of each line, the line ends kept.
fn redact_lines(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| match line.strip_suffix('\n') {
            Some(line) => redact_text(line) + "\n",
            None => redact_text(line),
        })
        .collect()
}

impl Drop for RedactingWriter {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_stripped_and_nothing_else() {
        assert_eq!(
            strip_userinfo("host \"https://puller:hunter2@mirror.example.com/v2\": no credentials"),
            "host \"https://mirror.example.com/v2\": no credentials"
        );
        assert_eq!(strip_userinfo("proxy http://a@b@proxy:3128 and ftp://x"), "proxy http://proxy:3128 and ftp://x");
        assert_eq!(
            strip_userinfo("mail a@b.org, see https://example.org/@team"),
            "mail a@b.org, see https://example.org/@team"
        );
        assert_eq!(strip_userinfo("http://us\r:pass\tword@proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn urls_lose_credentials_and_queries() {
        let url =
            Url::parse("https://user:hunter2@s3.example.org/blob?X-Amz-Signature=abc&X-Amz-Credential=k").unwrap();
        let shown = redact_url(&url);
        assert!(!shown.contains("hunter2") && !shown.contains("abc"), "{shown}");
        assert!(shown.starts_with("https://s3.example.org/blob"));
    }

    #[test]
    fn text_loses_tokens() {
        let text = "error sending request for url (https://r.example.org/v2/x?token=sekrit): Authorization: Bearer eyJhbGc.payload.sig password=pw1";
        let shown = redact_text(text);
        for secret in ["sekrit", "eyJhbGc", "pw1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("https://r.example.org/v2/x"));
        let debug = r#"headers: {"authorization": "Bearer eyJhbGc.payload.sig", "x": (Basic dXNlcjpwdw==)}"#;
        let shown = redact_text(debug);
        assert!(!shown.contains("eyJhbGc") && !shown.contains("dXNlcjpwdw"), "{shown}");
    }

    #[test]
    fn text_is_one_line_and_a_token_after_a_newline_is_hidden() {
        let text = "denied: Authorization: Bearer\neyJhbGc.payload.sig\r\nretry\tlater \u{1b}[31mred";
        let shown = redact_text(text);
        assert!(!shown.contains("eyJhbGc"), "{shown}");
        assert_eq!(shown, "denied: Authorization: Bearer [redacted]  retry later \\u{1b}[31mred");
        assert!(matches!(one_line("plain text"), std::borrow::Cow::Borrowed(_)));
        // Log events keep their line ends.
        assert_eq!(redact_lines("a token=x\nb\n"), "a token=[redacted]\nb\n");
        assert_eq!(redact_lines("no end"), "no end");
    }

    #[test]
    fn quoted_values_are_escaped_and_cut() {
        assert_eq!(quoted("sha256:ab\ncd", 80), r#""sha256:ab\ncd""#);
        assert_eq!(quoted("résumé", 3), r#""rés"…"#);
        assert_eq!(quoted("", 3), r#""""#);
        assert!(!quoted("a\r\n\u{1b}[31m", 80).contains(['\r', '\n', '\u{1b}']));
    }

    #[test]
    fn json_errors_quote_little_or_nothing() {
        let long = format!("\"{}\"", "x".repeat(10_000));
        let error = serde_json::from_str::<u64>(&long).unwrap_err();
        let shown = json_error(&error);
        assert_eq!(shown.chars().count(), MAX_JSON_ERROR_CHARS, "{shown}");
        assert!(shown.starts_with("invalid type: string \"xxx") && shown.ends_with("line 1 column 10002"), "{shown}");
        let short = serde_json::from_str::<u64>("\"x\"").unwrap_err();
        assert_eq!(json_error(&short), short.to_string());

        let error = serde_json::from_str::<u64>("\"hunter2\"").unwrap_err();
        assert_eq!(json_error_position(&error), "JSON of the wrong shape at line 1 column 9");
        let error = serde_json::from_str::<Vec<u64>>("[1").unwrap_err();
        assert_eq!(json_error_position(&error), "JSON cut short at line 1 column 2");
    }
}
