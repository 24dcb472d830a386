//! The one error type of probes.yaml: `FILE:LINE:COLUMN: message`, for syntax
//! errors and for the checks that run after parsing alike.

use std::fmt;

use serde_saphyr::{Location, MessageFormatter, UserMessageFormatter};

/// A 1-based line and column in probes.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl Position {
    /// `None` for the parser's "location unknown".
    pub(crate) fn from_location(location: Location) -> Option<Position> {
        (location.line() > 0).then(|| Position { line: location.line(), column: location.column().max(1) })
    }
}

/// Why probes.yaml cannot be used. Displays as `FILE:LINE:COLUMN: message`
/// (`FILE: message` when there is no position, such as an unreadable file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub position: Option<Position>,
    pub message: String,
}

impl ConfigError {
    /// The message is kept to one line of at most [`MAX_MESSAGE_CHARS`] characters,
    /// whatever the input echoed in it, and never quotes a URL's user info
    /// (`https://user:password@host` shows as `https://host`).
    pub fn new(file: &str, position: Option<Position>, message: impl Into<String>) -> Self {
        let message = crate::redact::strip_userinfo(&message.into());
        ConfigError { file: file.to_string(), position, message: printable(&message) }
    }

    /// A parse error from serde-saphyr: its bare message (no snippet, no
    /// "at line …" suffix) and its position.
    pub(crate) fn from_yaml(file: &str, error: &serde_saphyr::Error) -> Self {
        let message = UserMessageFormatter.format_message(error);
        let position = error.location().and_then(Position::from_location);
        ConfigError::new(file, position, message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some(Position { line, column }) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Longest message kept; the rest of hostile input is cut.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

/// Control characters escaped, so a message stays one line, and cut to a readable
/// length (counted after escaping: `\t` is two characters).
fn printable(message: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for c in message.chars() {
        let shown: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
        if chars + shown.len() > MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        chars += shown.len();
        out.extend(shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_file_line_column() {
        let e = ConfigError::new("probes.yaml", Some(Position { line: 3, column: 7 }), "bad");
        assert_eq!(e.to_string(), "probes.yaml:3:7: bad");
        assert_eq!(ConfigError::new("p.yaml", None, "unreadable").to_string(), "p.yaml: unreadable");
        assert_eq!(printable("a\nb\u{0}"), "a\\nb\\u{0}");
        assert_eq!(printable(&"x".repeat(5_000)).chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(printable(&"\t".repeat(5_000)).chars().count() <= MAX_MESSAGE_CHARS + 1);
    }
}
