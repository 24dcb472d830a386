//! Image references: `host[:port]/repo[:tag][@digest]`, with Docker Hub normalisation.
//!
//! The grammar and normalisation are those of Docker's `distribution/reference`
//! (`alpine` is `docker.io/library/alpine:latest`), so a reference means here
//! what it means to `docker pull`. This module only parses and prints; it knows
//! nothing about URLs, schemes or credentials beyond which host to ask.
//!
//! One deliberate difference: a first component without `.` or `:` that is not
//! `localhost` is always a repository component, so `UPPER/case` is an error
//! (repository names are lowercase) rather than a registry host called `UPPER`.
//! Only sha256 digests are accepted (see [`Digest`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::{Digest, DigestParseError};

/// Docker Hub, as it appears in a normalised reference.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves the Distribution API for Docker Hub.
pub const DOCKER_HUB_API_HOST: &str = "registry-1.docker.io";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";

/// Longest `host/repository` accepted (distribution's `NameTotalLengthMax`).
pub const NAME_MAX_LEN: usize = 255;
/// Longest tag accepted.
pub const TAG_MAX_LEN: usize = 128;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageReference {
    /// `host[:port]` as the user means it (`docker.io` for Docker Hub, `[::1]:5000` for IPv6).
    pub registry: String,
    /// Slash-separated lowercase path (`library/alpine`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {input:?}: {kind}")]
pub struct ReferenceError {
    /// The input, shortened to a readable length.
    pub input: String,
    pub kind: ReferenceErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceErrorKind {
    #[error("it is empty")]
    Empty,
    #[error("the repository name is empty")]
    EmptyName,
    #[error("a reference has no scheme: write host/repository, not a URL")]
    HasScheme,
    #[error("it is 64 hex characters, an image ID rather than a reference")]
    ImageId,
    #[error("repository name {0:?} must be lowercase")]
    Uppercase(String),
    #[error("empty path component (`//` or a leading or trailing `/`)")]
    EmptyComponent,
    #[error("path component {0:?} must be lowercase letters and digits, separated by `.`, `_`, `__` or dashes")]
    BadComponent(String),
    #[error("registry host {0:?} is not a host name, an IPv4 address or a bracketed IPv6 address")]
    BadHost(String),
    #[error("registry port {0:?} is not a number from 1 to 65535")]
    BadPort(String),
    #[error("name is {0} characters, longer than {NAME_MAX_LEN}")]
    NameTooLong(usize),
    #[error("tag is empty")]
    EmptyTag,
    #[error("tag is {0} characters, longer than {TAG_MAX_LEN}")]
    TagTooLong(usize),
    #[error("tag {0:?} must be letters, digits, `_`, `.` and `-`, not starting with `.` or `-`")]
    BadTag(String),
    #[error("{0}")]
    BadDigest(DigestParseError),
}

impl ImageReference {
    /// Parse and normalise a reference; the tag defaults to `latest` when neither
    /// a tag nor a digest is given.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut reference = Self::parse_name(s)?;
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(reference)
    }

    /// Like [`ImageReference::parse`], but leaves tag and digest empty when the
    /// input names neither (a repository whose tags are chosen elsewhere).
    pub fn parse_name(s: &str) -> Result<Self, ReferenceError> {
        parse(s).map_err(|kind| ReferenceError { input: shorten(s), kind })
    }

    /// Whether the first component of `s` names a registry host by Docker's rule:
    /// it contains `.` or `:` or is `localhost`, and a `/` follows it.
    pub fn names_registry(s: &str) -> bool {
        split_registry(s).0.is_some()
    }

    /// The host to send Distribution API requests to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB { DOCKER_HUB_API_HOST } else { &self.registry }
    }

    /// The registry host without port (IPv6 without brackets).
    pub fn host(&self) -> &str {
        split_host_port(&self.registry).0
    }

    /// The registry port, when the reference names one.
    pub fn port(&self) -> Option<u16> {
        split_host_port(&self.registry).1.and_then(|p| p.parse().ok())
    }

    /// Loopback registries (`localhost`, 127.0.0.0/8, `::1`): the only ones spoken
    /// to over plain HTTP by default, as Docker does.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// The `<reference>` of `/v2/<name>/manifests/<reference>`: the digest when
    /// there is one (it pins the content), else the tag, else `latest`.
    pub fn reference_str(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository at another tag (no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Self, ReferenceError> {
        check_tag(tag).map_err(|kind| ReferenceError { input: shorten(tag), kind })?;
        Ok(ImageReference { tag: Some(tag.to_string()), digest: None, ..self.clone() })
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Self {
        ImageReference { digest: Some(digest), ..self.clone() }
    }
}

impl fmt::Display for ImageReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageReference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ImageReference {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageReference {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn parse(s: &str) -> Result<ImageReference, ReferenceErrorKind> {
    if s.is_empty() {
        return Err(ReferenceErrorKind::Empty);
    }
    if s.contains("://") {
        return Err(ReferenceErrorKind::HasScheme);
    }
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(ReferenceErrorKind::ImageId);
    }

    // name [":" tag] ["@" digest]; neither name nor tag contains '@'.
    let (name_and_tag, digest) = match s.split_once('@') {
        Some((rest, digest)) => {
            let digest = digest.parse::<Digest>().map_err(ReferenceErrorKind::BadDigest)?;
            (rest, Some(digest))
        }
        None => (s, None),
    };
    // The tag separator is a ':' after the last '/' (a ':' before it is a port).
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].find(':') {
        Some(i) => {
            let tag = &name_and_tag[last_slash + i + 1..];
            check_tag(tag)?;
            (&name_and_tag[..last_slash + i], Some(tag.to_string()))
        }
        None => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err(ReferenceErrorKind::EmptyName);
    }

    let (registry, path) = match split_registry(name) {
        (Some(host), path) => {
            check_registry(host)?;
            (normalise_registry(host), path)
        }
        (None, path) => (DOCKER_HUB.to_string(), path),
    };
    check_path(path)?;
    let repository =
        if registry == DOCKER_HUB && !path.contains('/') { format!("library/{path}") } else { path.to_string() };
    let length = registry.len() + 1 + repository.len();
    if length > NAME_MAX_LEN {
        return Err(ReferenceErrorKind::NameTooLong(length));
    }
    Ok(ImageReference { registry, repository, tag, digest })
}

/// Split `host[:port]/path` by Docker's rule; `(None, name)` when the first
/// component is part of the repository.
fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), rest),
        _ => (None, name),
    }
}

/// Docker's aliases for Docker Hub collapse to `docker.io`.
fn normalise_registry(host: &str) -> String {
    if host.eq_ignore_ascii_case("index.docker.io") || host.eq_ignore_ascii_case(DOCKER_HUB_API_HOST) {
        DOCKER_HUB.to_string()
    } else {
        host.to_string()
    }
}

/// `(host, port)` of `host[:port]` or `[v6][:port]`; the host of IPv6 comes without brackets.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (registry, None),
        };
    }
    match registry.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

fn check_registry(registry: &str) -> Result<(), ReferenceErrorKind> {
    let bad_host = || ReferenceErrorKind::BadHost(shorten(registry));
    let (host, port) = split_host_port(registry);
    if registry.starts_with('[') {
        let tail = registry.split_once(']').map(|(_, tail)| tail).unwrap_or_default();
        if !(tail.is_empty() || tail.starts_with(':'))
            || host.is_empty()
            || !host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':')
            || host.parse::<Ipv6Addr>().is_err()
        {
            return Err(bad_host());
        }
    } else if host.is_empty() || !host.split('.').all(is_domain_component) {
        return Err(bad_host());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0);
        if !valid {
            return Err(ReferenceErrorKind::BadPort(shorten(port)));
        }
    }
    Ok(())
}

/// `[a-zA-Z0-9]` or `[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

fn check_path(path: &str) -> Result<(), ReferenceErrorKind> {
    if path.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(ReferenceErrorKind::Uppercase(shorten(path)));
    }
    for component in path.split('/') {
        if component.is_empty() {
            return Err(ReferenceErrorKind::EmptyComponent);
        }
        if !is_path_component(component) {
            return Err(ReferenceErrorKind::BadComponent(shorten(component)));
        }
    }
    Ok(())
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn is_path_component(c: &str) -> bool {
    let is_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let mut i = 0;
    loop {
        // One or more alphanumerics.
        let start = i;
        while i < bytes.len() && is_alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // One separator: `.`, `_`, `__` or a run of dashes.
        match bytes[i] {
            b'.' => i += 1,
            b'_' => i += if bytes.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Whether `tag` is a valid tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn is_valid_tag(tag: &str) -> bool {
    check_tag(tag).is_ok()
}

/// `[\w][\w.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), ReferenceErrorKind> {
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(ReferenceErrorKind::EmptyTag);
    };
    if !is_word(first) || !bytes.iter().all(|&b| is_word(b) || b == b'.' || b == b'-') {
        return Err(ReferenceErrorKind::BadTag(shorten(tag)));
    }
    if bytes.len() > TAG_MAX_LEN {
        return Err(ReferenceErrorKind::TagTooLong(bytes.len()));
    }
    Ok(())
}

/// Keep hostile input out of error messages beyond a readable length.
fn shorten(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut short: String = s.chars().take(MAX).collect();
        short.push('…');
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn digest() -> Digest {
        format!("sha256:{HEX}").parse().unwrap()
    }

    fn parts(s: &str) -> (String, String, Option<String>, Option<Digest>) {
        let r = ImageReference::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn kind(s: &str) -> ReferenceErrorKind {
        match ImageReference::parse(s) {
            Ok(r) => panic!("{s:?} parsed as {r}"),
            Err(e) => e.kind,
        }
    }

    #[test]
    fn docker_hub_normalisation() {
        let r = ImageReference::parse("alpine").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/alpine:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(r.name(), "docker.io/library/alpine");
        assert_eq!(ImageReference::parse("user/app").unwrap().to_string(), "docker.io/user/app:latest");
        assert_eq!(ImageReference::parse("docker.io/alpine:3").unwrap().to_string(), "docker.io/library/alpine:3");
        assert_eq!(
            ImageReference::parse("index.docker.io/alpine").unwrap().to_string(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            ImageReference::parse("registry-1.docker.io/user/app").unwrap().to_string(),
            "docker.io/user/app:latest"
        );
        assert_eq!(ImageReference::parse("docker.io/user/app").unwrap().api_host(), "registry-1.docker.io");
    }

    #[test]
    fn registry_host_rule() {
        // A first component is a host only with '.' or ':' or as `localhost`.
        assert_eq!(parts("localhost/app").0, "localhost");
        assert_eq!(parts("localhost:5000/app").0, "localhost:5000");
        assert_eq!(parts("registry.example.org/team/app:1.2").0, "registry.example.org");
        assert_eq!(parts("myhost:5000/app").0, "myhost:5000");
        assert_eq!(parts("myhost/app").0, "docker.io");
        assert_eq!(parts("myhost/app").1, "myhost/app");
        assert!(ImageReference::names_registry("registry.example.org/app"));
        assert!(ImageReference::names_registry("localhost/app"));
        assert!(!ImageReference::names_registry("team/app"));
        assert!(!ImageReference::names_registry("test.com"));
    }

    #[test]
    fn tag_and_digest_are_both_kept() {
        let s = format!("127.0.0.1:5000/small:latest@sha256:{HEX}");
        let r = ImageReference::parse(&s).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "small");
        assert_eq!(r.tag.as_deref(), Some("latest"));
        assert_eq!(r.digest, Some(digest()));
        assert_eq!(r.to_string(), s);
        assert_eq!(r.reference_str(), format!("sha256:{HEX}"), "digest wins");

        let by_digest = ImageReference::parse(&format!("app@sha256:{HEX}")).unwrap();
        assert_eq!(by_digest.tag, None, "no default tag next to a digest");
        assert_eq!(by_digest.to_string(), format!("docker.io/library/app@sha256:{HEX}"));
        assert_eq!(ImageReference::parse("app:v1").unwrap().reference_str(), "v1");
    }

    #[test]
    fn parse_name_leaves_the_tag_empty() {
        let r = ImageReference::parse_name("releng/mediawiki").unwrap();
        assert_eq!((r.tag, r.digest), (None, None));
        let r = ImageReference::parse_name("releng/mediawiki:1").unwrap();
        assert_eq!(r.tag.as_deref(), Some("1"));
        let tagged = ImageReference::parse("x.org/a").unwrap().with_tag("2024-01-01-x").unwrap();
        assert_eq!(tagged.to_string(), "x.org/a:2024-01-01-x");
        assert!(ImageReference::parse("x.org/a").unwrap().with_tag("-bad").is_err());
        assert_eq!(
            ImageReference::parse("x.org/a:1").unwrap().with_digest(digest()).to_string(),
            format!("x.org/a:1@sha256:{HEX}")
        );
    }

    #[test]
    fn ipv6_and_loopback() {
        let r = ImageReference::parse("[::1]:5000/x").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
        assert_eq!(r.host(), "::1");
        assert_eq!(r.port(), Some(5000));
        assert!(r.is_loopback());
        assert_eq!(r.api_host(), "[::1]:5000");
        assert_eq!(r.to_string(), "[::1]:5000/x:latest");

        for loopback in ["localhost/a", "localhost:5000/a", "127.0.0.1:5000/a", "127.1.2.3/a", "[::1]/a"] {
            assert!(ImageReference::parse(loopback).unwrap().is_loopback(), "{loopback}");
        }
        for remote in ["alpine", "10.0.0.1:5000/a", "[2001:db8::1]:443/a", "localhost.example.org/a", "128.0.0.1/a"] {
            assert!(!ImageReference::parse(remote).unwrap().is_loopback(), "{remote}");
        }
        assert_eq!(ImageReference::parse("registry.example.org/a").unwrap().port(), None);
    }

    #[test]
    fn clear_errors_for_bad_input() {
        assert_eq!(kind(""), ReferenceErrorKind::Empty);
        assert_eq!(kind("UPPER/case"), ReferenceErrorKind::Uppercase("UPPER/case".into()));
        assert_eq!(kind("a//b"), ReferenceErrorKind::EmptyComponent);
        assert_eq!(kind("a/"), ReferenceErrorKind::EmptyComponent);
        assert!(matches!(kind("app@sha256:abc"), ReferenceErrorKind::BadDigest(DigestParseError::BadHex(_))));
        assert!(matches!(kind("app@md5:abc"), ReferenceErrorKind::BadDigest(_)));
        assert_eq!(kind(&format!("app:{}", "a".repeat(129))), ReferenceErrorKind::TagTooLong(129));
        assert!(ImageReference::parse(&format!("app:{}", "a".repeat(128))).is_ok());
        assert_eq!(kind("https://registry.example.org/app"), ReferenceErrorKind::HasScheme);
        assert_eq!(kind(HEX), ReferenceErrorKind::ImageId);
        assert_eq!(kind("app:"), ReferenceErrorKind::EmptyTag);
        assert_eq!(kind("host:0/app"), ReferenceErrorKind::BadPort("0".into()));
        assert_eq!(kind("host:99999/app"), ReferenceErrorKind::BadPort("99999".into()));
        assert!(matches!(kind("a b"), ReferenceErrorKind::BadComponent(_)));
        assert!(matches!(kind("ünï/code"), ReferenceErrorKind::BadComponent(_)));
        let message = ImageReference::parse("UPPER/case").unwrap_err().to_string();
        assert_eq!(message, "invalid image reference \"UPPER/case\": repository name \"UPPER/case\" must be lowercase");
        let long = "x".repeat(10_000);
        assert!(ImageReference::parse(&long).unwrap_err().to_string().len() < 1_000, "errors stay short");
    }

    #[test]
    fn path_components() {
        for ok in ["a", "a.b", "a_b", "a__b", "a-b", "a---b", "a1.b2_c3__d4-e5", "0"] {
            assert!(is_path_component(ok), "{ok}");
        }
        for bad in ["", ".a", "a.", "a..b", "a___b", "_a", "a_", "-a", "a-", "a._b", "A", "a+b"] {
            assert!(!is_path_component(bad), "{bad}");
        }
    }

    /// The test vectors of distribution/reference (reference_test.go and
    /// normalize_test.go), as normalised references or errors.
    #[test]
    fn distribution_test_vectors() {
        let d = format!("sha256:{HEX}");
        let valid: &[(&str, &str)] = &[
            ("test_com", "docker.io/library/test_com:latest"),
            ("test.com:tag", "docker.io/library/test.com:tag"),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("test.com/repo:tag", "test.com/repo:tag"),
            ("test:5000/repo", "test:5000/repo:latest"),
            ("test:5000/repo:tag", "test:5000/repo:tag"),
            ("lowercase:Uppercase", "docker.io/library/lowercase:Uppercase"),
            ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com/bar/baz/quux:latest"),
            ("sub-dom1.foo.com/bar/baz/quux:some-long-tag", "sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
            ("b.gcr.io/test.example.com/my-app:test.example.com", "b.gcr.io/test.example.com/my-app:test.example.com"),
            ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com/myimage:xn--n3h.com"),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
            ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
            ("192.168.1.1", "docker.io/library/192.168.1.1:latest"),
            ("192.168.1.1:tag", "docker.io/library/192.168.1.1:tag"),
            ("192.168.1.1:5000", "docker.io/library/192.168.1.1:5000"),
            ("192.168.1.1/repo", "192.168.1.1/repo:latest"),
            ("192.168.1.1:5000/repo", "192.168.1.1:5000/repo:latest"),
            ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest"),
            ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"),
            ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]/repo:tag"),
            ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo:latest"),
            ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo:tag"),
            ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"),
            ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
            ("[fc00::1]:5000/docker/docker", "[fc00::1]:5000/docker/docker:latest"),
            ("docker/docker", "docker.io/docker/docker:latest"),
            ("library/debian", "docker.io/library/debian:latest"),
            ("debian", "docker.io/library/debian:latest"),
            ("docker.io/docker/docker", "docker.io/docker/docker:latest"),
            ("docker.io/library/debian", "docker.io/library/debian:latest"),
            ("docker.io/debian", "docker.io/library/debian:latest"),
            ("index.docker.io/docker/docker", "docker.io/docker/docker:latest"),
            ("index.docker.io/debian", "docker.io/library/debian:latest"),
            ("127.0.0.1:5000/library/debian", "127.0.0.1:5000/library/debian:latest"),
            (
                "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
                "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
            ),
            (
                "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
                "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
            ),
        ];
        for (input, want) in valid {
            let got = ImageReference::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), *want, "{input:?}");
            // Normalised forms parse to themselves.
            assert_eq!(ImageReference::parse(want).unwrap(), got, "{want:?}");
        }
        for (input, want) in [
            (format!("test:5000/repo@{d}"), format!("test:5000/repo@{d}")),
            (format!("test:5000/repo:tag@{d}"), format!("test:5000/repo:tag@{d}")),
            (format!("repo@{d}"), format!("docker.io/library/repo@{d}")),
            (format!("[2001:db8::1]:5000/repo@{d}"), format!("[2001:db8::1]:5000/repo@{d}")),
            (format!("[2001:db8::1]:5000/repo:tag@{d}"), format!("[2001:db8::1]:5000/repo:tag@{d}")),
        ] {
            assert_eq!(ImageReference::parse(&input).unwrap().to_string(), want, "{input:?}");
        }
        // `x.io/` + 250 characters is the longest name; the tag does not count.
        let path_250 = format!("{}aa", "a/".repeat(124));
        assert!(ImageReference::parse(&format!("x.io/{path_250}:tag-puts-this-over-max")).is_ok());
        assert_eq!(kind(&format!("x.io/{path_250}a")), ReferenceErrorKind::NameTooLong(256));

        let invalid = [
            ":justtag".to_string(),
            format!("@{d}"),
            format!("validname@invaliddigest:{HEX}"),
            "Uppercase:tag".into(),
            "test:5000/Uppercase/lowercase:tag".into(),
            format!("{}a:tag", "a/".repeat(128)),
            "aa/asdf$$^/aa".into(),
            "https://github.com/docker/docker".into(),
            "docker/Docker".into(),
            "-docker".into(),
            "-docker/docker".into(),
            "-docker.io/docker/docker".into(),
            "docker///docker".into(),
            "docker.io/docker/Docker".into(),
            "docker.io/docker///docker".into(),
            "[fc00::1]".into(),
            "[fc00::1]:5000".into(),
            "[2001:db8::1]:tag".into(),
            "fc00::1:5000/debian".into(),
            "[fe80::1%eth0]:5000/debian".into(),
            "[fe80::1%@invalidzone]:5000/repo".into(),
            "[2001:db8:3:4::192.0.2.33]:5000/debian".into(),
            "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a".into(),
            // Accepted by Docker (sha512), refused here: only sha256 is verified.
            format!("xn--7o8h.com/myimage:xn--7o8h.com@sha512:{HEX}{HEX}"),
            // Accepted by Docker as a host `Docker`; a repository component here.
            "Docker/docker".into(),
        ];
        for input in invalid {
            assert!(ImageReference::parse(&input).is_err(), "{input:?} should be invalid");
        }
        assert_eq!(kind(&format!("{}a:tag", "a/".repeat(128))), ReferenceErrorKind::NameTooLong(267));
    }

    #[test]
    fn serde_round_trip() {
        let r = ImageReference::parse("registry.example.org/team/app:1.2").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"registry.example.org/team/app:1.2\"");
        assert_eq!(serde_json::from_str::<ImageReference>(&json).unwrap(), r);
    }
}
