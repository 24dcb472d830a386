//! Reading pullprobe's verdicts: run `now -o json`, pick a result, and check it
//! against what the image builder knows the image to be. A layer entry must
//! name its layer, carry the descriptor size, the bytes received and the
//! uncompressed bytes the builder wrote; a failure must carry its reason,
//! phase and the digest it is about.

use std::time::Duration;

use image_builder::Digest;
use image_builder::{Format, Layer};
use serde_json::Value;

use super::cli::{DEFAULT_TIMEOUT, ResultJson, json_results, run_pullprobe_with};

/// One run of `pullprobe now -o json …`.
pub struct Pull {
    pub code: i32,
    pub results: Vec<Value>,
    pub stderr: String,
}

impl Pull {
    /// The only result; panics if there is not exactly one.
    pub fn only(&self) -> &Value {
        assert_eq!(self.results.len(), 1, "want one result, got {}:\n{}", self.results.len(), self.dump());
        &self.results[0]
    }

    /// The result for a platform label (`linux/arm64/v8`).
    pub fn for_platform(&self, platform: &str) -> &Value {
        self.results
            .iter()
            .find(|r| r.str_field("platform") == Some(platform))
            .unwrap_or_else(|| panic!("no result for platform {platform}:\n{}", self.dump()))
    }

    pub fn dump(&self) -> String {
        format!("exit {}\n{}\nstderr:\n{}", self.code, pretty(&self.results), self.stderr)
    }
}

/// `pullprobe now -o json ARGS…` (`now` and `-o json` are added); stdout must be a JSON result.
pub fn pull_json(args: &[&str]) -> Pull {
    pull_json_with(args, DEFAULT_TIMEOUT)
}

pub fn pull_json_with(args: &[&str], timeout: Duration) -> Pull {
    let mut full = vec!["now", "-o", "json"];
    full.extend_from_slice(args);
    let (code, stdout, stderr) = run_pullprobe_with(&full, &[], None, timeout);
    if !stdout.trim_start().starts_with('{') {
        panic!("pullprobe {full:?} printed no JSON (exit {code}):\nstdout:\n{stdout}\nstderr:\n{stderr}");
    }
    Pull { code, results: json_results(&stdout), stderr }
}

pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A passing result: no reason, phase, error or registry error; every layer passed.
pub fn assert_passed(result: &Value) {
    assert!(result.is_ok(), "expected a pass:\n{}", pretty(result));
    for key in ["reason", "phase", "error", "registry_error"] {
        assert!(result[key].is_null(), "{key} of a pass is not null:\n{}", pretty(result));
    }
    assert!(!result.layers().is_empty(), "a pass checked no layers:\n{}", pretty(result));
    for layer in result.layers() {
        assert_eq!(layer["ok"], true, "layer failed in a pass:\n{}", pretty(result));
        assert!(layer["reason"].is_null(), "{}", pretty(result));
    }
}

/// A failure with exactly this reason and phase, and an error message.
pub fn assert_failed(result: &Value, reason: &str, phase: &str) {
    assert!(!result.is_ok(), "expected {reason}, got a pass:\n{}", pretty(result));
    assert_eq!(result.reason(), Some(reason), "reason:\n{}", pretty(result));
    assert_eq!(result.str_field("phase"), Some(phase), "phase:\n{}", pretty(result));
    assert!(result.error_message().is_some_and(|e| !e.is_empty()), "no error message:\n{}", pretty(result));
}

/// The error message of a failed result, which must name `digest`.
pub fn error_naming<'a>(result: &'a Value, digest: &Digest) -> &'a str {
    let error = result.error_message().unwrap_or_else(|| panic!("no error:\n{}", pretty(result)));
    assert!(error.contains(&digest.to_string()), "error does not name {digest}: {error}");
    error
}

/// The `layers[]` entry for a digest; panics if there is not exactly one.
pub fn layer_entry<'a>(result: &'a Value, digest: &Digest) -> &'a Value {
    let wanted = digest.to_string();
    let found: Vec<&Value> = result.layers().iter().filter(|l| l.str_field("digest") == Some(&wanted)).collect();
    assert_eq!(found.len(), 1, "want one layer entry for {wanted}:\n{}", pretty(result));
    found[0]
}

/// A layer entry that passed the full check with the builder's numbers.
pub fn assert_layer_verified(entry: &Value, layer: &Layer, format: Format) {
    let context = pretty(entry);
    assert_eq!(entry.str_field("digest"), Some(layer.digest().to_string().as_str()), "{context}");
    assert_eq!(entry.str_field("media_type"), Some(layer.media_type(format)), "{context}");
    assert_eq!(entry["ok"], true, "{context}");
    assert!(entry["reason"].is_null(), "{context}");
    assert_eq!(entry.str_field("check"), Some("full"), "{context}");
    assert_eq!(entry.u64_field("size"), Some(layer.blob.size), "descriptor size: {context}");
    assert_eq!(entry.u64_field("bytes"), Some(layer.blob.size), "bytes received: {context}");
    assert_eq!(entry.u64_field("uncompressed_bytes"), Some(layer.uncompressed_size), "uncompressed: {context}");
}

/// Every layer of the result, in order, passed the full check with the builder's numbers.
pub fn assert_layers_verified(result: &Value, layers: &[Layer], format: Format) {
    assert_eq!(result.layers().len(), layers.len(), "layer count:\n{}", pretty(result));
    for (entry, layer) in result.layers().iter().zip(layers) {
        assert_layer_verified(entry, layer, format);
    }
}

/// A failed layer entry: this reason, the descriptor size, and the bytes that arrived.
pub fn assert_layer_failed(entry: &Value, reason: &str, size: u64, bytes: u64) {
    let context = pretty(entry);
    assert_eq!(entry["ok"], false, "{context}");
    assert_eq!(entry.reason(), Some(reason), "{context}");
    assert_eq!(entry.u64_field("size"), Some(size), "descriptor size: {context}");
    assert_eq!(entry.u64_field("bytes"), Some(bytes), "bytes received: {context}");
    let digest = entry.str_field("digest").unwrap_or_default();
    let error = entry.error_message().unwrap_or_else(|| panic!("failed layer without an error: {context}"));
    assert!(error.contains(digest), "the layer error does not name {digest}: {error}");
}
