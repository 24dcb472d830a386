//! Platforms (`linux/amd64`, `linux/arm64/v8`): parsing, display, and which
//! manifest in an index a requested platform selects.
//!
//! Matching follows containerd's default matcher: both sides are normalised
//! (`aarch64` is `arm64`, `arm64/v8` is `arm64`, `arm` is `arm/v7`, `amd64/v1`
//! is `amd64`) and then compared exactly. Nothing here knows about manifests;
//! the caller passes the platform fields it read.

use std::fmt;
use std::str::FromStr;

/// An OS, CPU architecture and optional variant, as written in an index
/// entry and an image config (the serde form is those JSON fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// Why a string is not a platform or platform selection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a platform like linux/amd64 or linux/arm64/v8 (OS/ARCH[/VARIANT]), got {0:?}")]
pub struct PlatformError(pub String);

/// Which platforms of a multi-platform image to pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlatformSelection {
    /// Every runnable platform of an index (attestation manifests are skipped).
    All,
    /// These platforms; one that the index lacks is `platform_missing`.
    List(Vec<Platform>),
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// `linux/amd64`, the default for probes.
    pub fn linux_amd64() -> Self {
        Platform::new("linux", "amd64", None)
    }

    /// `linux/arm64/v8`.
    pub fn linux_arm64_v8() -> Self {
        Platform::new("linux", "arm64", Some("v8"))
    }

    /// `unknown/unknown`: what BuildKit gives attestation manifests in an index.
    pub fn unknown() -> Self {
        Platform::new("unknown", "unknown", None)
    }

    pub fn with_variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_string()).filter(|v| !v.is_empty());
        self
    }

    /// Parse `OS/ARCH` or `OS/ARCH/VARIANT` (lowercased, as containerd does).
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        let error = || PlatformError(s.chars().take(100).collect());
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        let valid = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid(p)) {
            return Err(error());
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()))
    }

    /// The canonical form containerd compares: architecture aliases resolved and
    /// default variants made explicit (arm → v7) or dropped (arm64/v8, amd64/v1).
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase).unwrap_or_default();
        let (architecture, variant) = match self.architecture.to_ascii_lowercase().as_str() {
            "i386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                ("amd64".to_string(), if variant == "v1" { String::new() } else { variant })
            }
            "aarch64" | "arm64" => {
                let variant = match variant.as_str() {
                    "8" | "v8" | "v8.0" => String::new(),
                    "9" | "9.0" | "v9.0" => "v9".to_string(),
                    _ => variant,
                };
                ("arm64".to_string(), variant)
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let variant = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), variant)
            }
            other => (other.to_string(), variant),
        };
        Platform { os, architecture, variant: Some(variant).filter(|v| !v.is_empty()) }
    }

    /// Whether a manifest for `candidate` satisfies a request for `self`
    /// (`linux/arm64` matches `linux/arm64/v8`; `linux/arm` matches `linux/arm/v7`).
    pub fn matches(&self, candidate: &Platform) -> bool {
        self.normalized() == candidate.normalized()
    }

    /// BuildKit attestation manifests, which carry the platform `unknown/unknown`.
    pub fn is_attestation(&self) -> bool {
        is_attestation(&self.os, &self.architecture)
    }
}

/// `unknown/unknown`: an attestation manifest in an index, not a runnable image.
pub fn is_attestation(os: &str, architecture: &str) -> bool {
    os == "unknown" && architecture == "unknown"
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl PlatformSelection {
    /// `all`, or one or more platforms separated by commas (`linux/amd64,linux/arm64`).
    pub fn parse(s: &str) -> Result<Self, PlatformError> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(PlatformSelection::All);
        }
        let list = s.split(',').map(Platform::parse).collect::<Result<Vec<_>, _>>()?;
        Ok(PlatformSelection::List(list))
    }

    /// Whether a manifest for `candidate` is selected (never an attestation).
    pub fn selects(&self, candidate: &Platform) -> bool {
        if candidate.is_attestation() {
            return false;
        }
        match self {
            PlatformSelection::All => true,
            PlatformSelection::List(list) => list.iter().any(|p| p.matches(candidate)),
        }
    }
}

impl Default for PlatformSelection {
    /// `[linux/amd64]`.
    fn default() -> Self {
        PlatformSelection::List(vec![Platform::linux_amd64()])
    }
}

impl fmt::Display for PlatformSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlatformSelection::All => f.write_str("all"),
            PlatformSelection::List(list) => {
                for (i, platform) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{platform}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for PlatformSelection {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlatformSelection::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(p("linux/amd64"), Platform::new("linux", "amd64", None));
        assert_eq!(p("linux/arm64/v8"), Platform::new("linux", "arm64", Some("v8")));
        assert_eq!(p("linux/arm/v7").variant.as_deref(), Some("v7"));
        assert_eq!(p("Linux/AMD64"), p("linux/amd64"));
        for s in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", "windows/amd64", "linux/s390x"] {
            assert_eq!(p(s).to_string(), s);
        }
        assert_eq!(Platform::new("linux", "arm", Some("")).to_string(), "linux/arm");
    }

    #[test]
    fn rejects_bad_platforms() {
        for bad in ["", "linux", "amd64", "linux/", "/amd64", "linux//v7", "linux/arm/v7/x", "linux amd64/x", "all"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        let message = Platform::parse("linux").unwrap_err().to_string();
        assert!(message.contains("linux/amd64") && message.contains("\"linux\""), "{message}");
    }

    #[test]
    fn matching_like_containerd() {
        // Default variants.
        assert!(p("linux/arm64").matches(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").matches(&p("linux/arm64")));
        assert!(p("linux/arm").matches(&p("linux/arm/v7")));
        assert!(p("linux/arm/v7").matches(&p("linux/arm")));
        assert!(p("linux/amd64").matches(&p("linux/amd64/v1")));
        assert!(p("linux/amd64").matches(&p("linux/amd64")));
        // Aliases.
        assert!(p("linux/arm64").matches(&p("linux/aarch64")));
        assert!(p("linux/amd64").matches(&p("linux/x86_64")));
        assert!(p("linux/arm/v7").matches(&p("linux/armhf")));
        assert!(p("linux/arm/v6").matches(&p("linux/armel")));
        assert!(p("linux/386").matches(&p("linux/i386")));
        assert!(p("linux/arm/v6").matches(&p("linux/arm/6")));
        // Real differences.
        assert!(!p("linux/arm").matches(&p("linux/arm/v6")));
        assert!(!p("linux/arm/v6").matches(&p("linux/arm/v7")));
        assert!(!p("linux/arm64").matches(&p("linux/arm64/v9")));
        assert!(!p("linux/amd64").matches(&p("linux/amd64/v3")));
        assert!(!p("linux/amd64").matches(&p("linux/arm64")));
        assert!(!p("linux/amd64").matches(&p("windows/amd64")));
    }

    #[test]
    fn selections() {
        assert_eq!(PlatformSelection::parse("all").unwrap(), PlatformSelection::All);
        assert_eq!(PlatformSelection::parse("ALL").unwrap(), PlatformSelection::All);
        let list = PlatformSelection::parse("linux/amd64,linux/arm64/v8").unwrap();
        assert_eq!(list, PlatformSelection::List(vec![p("linux/amd64"), p("linux/arm64/v8")]));
        assert_eq!(list.to_string(), "linux/amd64,linux/arm64/v8");
        assert!(PlatformSelection::parse("linux/amd64,").is_err());
        assert_eq!(PlatformSelection::default(), PlatformSelection::List(vec![p("linux/amd64")]));

        let attestation = Platform::new("unknown", "unknown", None);
        assert!(attestation.is_attestation());
        assert!(is_attestation("unknown", "unknown"));
        assert!(!is_attestation("linux", "unknown"));
        assert!(!PlatformSelection::All.selects(&attestation));
        assert!(PlatformSelection::All.selects(&p("linux/s390x")));
        assert!(list.selects(&p("linux/aarch64")));
        assert!(!list.selects(&p("linux/arm/v7")));
    }
}
