//! The JSON result of DESIGN.md: `{"results": [...]}`.

use crate::result::{ProbeResult, Report};

pub fn render(results: &[ProbeResult]) -> String {
    let report = Report { results: results.to_vec() };
    // Serialising plain data with string keys cannot fail.
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
