//! The platform an image is for (`linux/amd64`, `linux/arm64/v8`), as an image
//! config and an index entry write it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An OS, CPU architecture and optional variant (the serde form is those JSON fields).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    pub fn linux_amd64() -> Self {
        Platform::new("linux", "amd64", None)
    }

    pub fn linux_arm64_v8() -> Self {
        Platform::new("linux", "arm64", Some("v8"))
    }

    /// `unknown/unknown`: what BuildKit gives attestation manifests in an index.
    pub fn unknown() -> Self {
        Platform::new("unknown", "unknown", None)
    }
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
