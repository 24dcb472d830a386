//! Reading a container runtime's TOML configuration (containerd's hosts.toml,
//! registries.conf) the strict way: every key is known or an error, every
//! error says `FILE:LINE:COLUMN`, and tables keep the order of the file.
//!
//! The runtimes themselves skip keys they do not know; a prober that did the
//! same would probe something other than what the node does, so a key
//! pullprobe does not know fails the plan with its position instead.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::config::{ConfigError, Position, read_text};

/// A node's configuration file larger than this is refused before parsing.
pub const MAX_TOML_BYTES: u64 = 1 << 20;

/// A parsed value with its place in the file.
pub type Value<'i> = Spanned<DeValue<'i>>;
/// A table's entries, in file order.
pub type Table<'i> = DeTable<'i>;

/// One TOML file: its text and where each line starts, for positions.
pub struct TomlFile {
    /// As errors name it.
    pub name: String,
    /// The directory relative paths in it are relative to.
    pub dir: PathBuf,
    text: String,
    line_starts: Vec<usize>,
}

impl TomlFile {
    /// Read a file; an unreadable, oversized or non-UTF-8 file is an error naming it.
    pub fn read(path: &Path) -> Result<TomlFile, ConfigError> {
        let text = read_text(path, MAX_TOML_BYTES)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(TomlFile::from_text(&path.display().to_string(), dir, text))
    }

    /// A file's text as if read from `name` (tests, and fixtures).
    pub fn from_text(name: &str, dir: PathBuf, text: String) -> TomlFile {
        let line_starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        TomlFile { name: name.to_string(), dir, text, line_starts }
    }

    /// The document's top-level table.
    pub fn parse(&self) -> Result<Table<'_>, ConfigError> {
        DeTable::parse(&self.text).map(Spanned::into_inner).map_err(|e| {
            let message = e.message().trim().to_string();
            match e.span() {
                Some(span) => self.error(&span, format!("not valid TOML: {message}")),
                None => ConfigError::new(&self.name, None, format!("not valid TOML: {message}")),
            }
        })
    }

    /// The 1-based line and column of a byte offset.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = self.text.get(start..offset).map(|s| s.chars().count()).unwrap_or(0) + 1;
        Position { line: line as u64, column: column as u64 }
    }

    /// `FILE:LINE:COLUMN` of a span, for notes that are not errors.
    pub fn location(&self, span: &Range<usize>) -> String {
        let Position { line, column } = self.position(span.start);
        format!("{}:{line}:{column}", self.name)
    }

    pub fn error(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::new(&self.name, Some(self.position(span.start)), message)
    }

    /// A path as the file means it: absolute, or relative to the file's directory.
    pub fn path(&self, value: &str) -> PathBuf {
        let path = Path::new(value);
        if path.is_absolute() { path.to_path_buf() } else { self.dir.join(path) }
    }

    /// Refuse any key of `table` not in `known`, at the key's position.
    pub fn known_keys(&self, table: &Table<'_>, known: &[&str], what: &str) -> Result<(), ConfigError> {
        for (key, _) in table.iter() {
            if !known.contains(&key.get_ref().as_ref()) {
                return Err(self.error(
                    &key.span(),
                    format!("unknown key `{}` in {what} (known: {})", key.get_ref(), known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// A key's value as text.
    pub fn string(&self, key: &str, value: &Value<'_>) -> Result<String, ConfigError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            other => Err(self.wrong_type(key, value, "a string", other)),
        }
    }

    pub fn boolean(&self, key: &str, value: &Value<'_>) -> Result<bool, ConfigError> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            other => Err(self.wrong_type(key, value, "true or false", other)),
        }
    }

    /// A string, or an array of strings: each with its span.
    pub fn strings(&self, key: &str, value: &Value<'_>) -> Result<Vec<(String, Range<usize>)>, ConfigError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(vec![(s.to_string(), value.span())]),
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok((s.to_string(), item.span())),
                    other => Err(self.wrong_type(key, item, "a string", other)),
                })
                .collect(),
            other => Err(self.wrong_type(key, value, "a string or an array of strings", other)),
        }
    }

    pub fn table<'v, 'i>(&self, key: &str, value: &'v Value<'i>) -> Result<&'v Table<'i>, ConfigError> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            other => Err(self.wrong_type(key, value, "a table", other)),
        }
    }

    pub fn array<'v, 'i>(&self, key: &str, value: &'v Value<'i>) -> Result<&'v [Value<'i>], ConfigError> {
        match value.get_ref() {
            DeValue::Array(items) => Ok(items),
            other => Err(self.wrong_type(key, value, "an array", other)),
        }
    }

    fn wrong_type(&self, key: &str, at: &Value<'_>, wanted: &str, got: &DeValue<'_>) -> ConfigError {
        self.error(&at.span(), format!("`{key}`: expected {wanted}, got {}", type_name(got)))
    }
}

/// Longest value of the file a note quotes, in characters.
const MAX_QUOTED_CHARS: usize = 200;

/// A value of the file as a note quotes it: in quotes and escaped, a URL's user
/// info left out, cut to 200 characters.
pub fn quoted(value: &str) -> String {
    crate::redact::quoted(&crate::redact::strip_userinfo(value), MAX_QUOTED_CHARS)
}

/// A key's entry of a table.
pub fn get<'t, 'i>(table: &'t Table<'i>, key: &str) -> Option<&'t Value<'i>> {
    table.iter().find(|(k, _)| k.get_ref() == key).map(|(_, v)| v)
}

/// The entries of a table as (key, key span, value), in file order.
pub fn entries<'t, 'i>(table: &'t Table<'i>) -> impl Iterator<Item = (&'t Cow<'i, str>, Range<usize>, &'t Value<'i>)> {
    table.iter().map(|(k, v)| (k.get_ref(), k.span(), v))
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> TomlFile {
        TomlFile::from_text("hosts.toml", PathBuf::from("/etc/containerd/certs.d/docker.io"), text.to_string())
    }

    #[test]
    fn positions_are_lines_and_columns() {
        let f = file("a = 1\nbé = 2\n\nc = 3");
        assert_eq!(f.position(0), Position { line: 1, column: 1 });
        assert_eq!(f.position(6), Position { line: 2, column: 1 });
        // Columns count characters, not bytes.
        assert_eq!(f.position(10), Position { line: 2, column: 4 });
        assert_eq!(f.position(14), Position { line: 3, column: 1 });
        assert_eq!(f.position(15), Position { line: 4, column: 1 });
    }

    #[test]
    fn unknown_keys_and_syntax_errors_have_positions() {
        let f = file("server = \"https://x\"\n\n  sever = 1\n");
        let table = f.parse().unwrap();
        let err = f.known_keys(&table, &["server"], "hosts.toml").unwrap_err();
        assert_eq!(err.position, Some(Position { line: 3, column: 3 }));
        assert!(err.to_string().starts_with("hosts.toml:3:3: unknown key `sever`"), "{err}");

        let f = file("[host.\"https://a\"]\ncapabilities = [\"pull\"\n");
        let err = f.parse().err().unwrap();
        assert!(err.position.is_some() && err.message.starts_with("not valid TOML"), "{err}");
    }

    #[test]
    fn tables_keep_file_order_and_paths_resolve_beside_the_file() {
        let f = file("[host.\"https://z\"]\n[host.\"https://a\"]\n[host.\"https://m\"]\n");
        let table = f.parse().unwrap();
        let hosts = f.table("host", get(&table, "host").unwrap()).unwrap();
        let keys: Vec<String> = entries(hosts).map(|(k, _, _)| k.to_string()).collect();
        assert_eq!(keys, ["https://z", "https://a", "https://m"]);
        assert_eq!(f.path("ca.crt"), PathBuf::from("/etc/containerd/certs.d/docker.io/ca.crt"));
        assert_eq!(f.path("/etc/ca.pem"), PathBuf::from("/etc/ca.pem"));
    }

    #[test]
    fn quoted_values_are_brief_and_keep_no_credentials() {
        assert_eq!(quoted("http://user:s3cret@proxy:3128"), "\"http://proxy:3128\"");
        let long = quoted(&"p".repeat(5_000));
        assert_eq!(long.chars().count(), MAX_QUOTED_CHARS + 3, "{long}");
    }

    #[test]
    fn types_are_checked() {
        let f = file("skip_verify = \"yes\"\nca = [\"a\", 2]\n");
        let table = f.parse().unwrap();
        let err = f.boolean("skip_verify", get(&table, "skip_verify").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("hosts.toml:1:15: `skip_verify`: expected true or false"), "{err}");
        let err = f.strings("ca", get(&table, "ca").unwrap()).unwrap_err();
        assert!(err.to_string().starts_with("hosts.toml:2:12: `ca`: expected a string, got an integer"), "{err}");
    }
}
