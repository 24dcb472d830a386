//! Image references, digests and platforms: what a user writes on the command
//! line and in probes.yaml, and what a cluster's Pod specs name. A reference that
//! parses prints as a reference that parses to the same value (and through serde);
//! one that does not says why in a bounded message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::digest::Digest;
use pullprobe::platform::{Platform, PlatformSelection};
use pullprobe::reference::{ImageReference, NAME_MAX_LEN, TAG_MAX_LEN};
use pullprobe_fuzz::{check_message, check_message_within, text};

/// A reference error quotes the input and the offending part, each cut to 300
/// characters and escaped (`\u{1a}` is six): bounded, if longer than most messages.
const MAX_REFERENCE_MESSAGE_CHARS: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some(input) = text(data) else { return };
    reference(input);
    name(input);
    digest(input);
    platform(input);
});

fn reference(input: &str) {
    let parsed = match ImageReference::parse(input) {
        Ok(parsed) => parsed,
        Err(e) => return check_message_within("reference error", &e.to_string(), MAX_REFERENCE_MESSAGE_CHARS),
    };
    assert!(parsed.tag.is_some() || parsed.digest.is_some(), "{input:?}: neither tag nor digest");
    assert!(parsed.name().len() <= NAME_MAX_LEN, "{input:?}: name {}", parsed.name());
    assert!(parsed.tag.as_ref().is_none_or(|t| t.len() <= TAG_MAX_LEN));
    let printed = parsed.to_string();
    let again = ImageReference::parse(&printed).unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
    assert_eq!(again, parsed, "{input:?} printed as {printed:?}");
    let json = serde_json::to_string(&parsed).expect("a reference serialises");
    let back: ImageReference = serde_json::from_str(&json).expect("a serialised reference deserialises");
    assert_eq!(back, parsed);
    let _ = (parsed.api_host(), parsed.host(), parsed.port(), parsed.is_loopback(), parsed.reference_str());
    if let Some(tag) = &parsed.tag {
        assert_eq!(parsed.with_tag(tag).expect("its own tag is a tag").tag.as_deref(), Some(tag.as_str()));
    }
}

fn name(input: &str) {
    let parsed = match ImageReference::parse_name(input) {
        Ok(parsed) => parsed,
        Err(e) => return check_message_within("name error", &e.to_string(), MAX_REFERENCE_MESSAGE_CHARS),
    };
    let printed = parsed.to_string();
    let again =
        ImageReference::parse_name(&printed).unwrap_or_else(|e| panic!("{input:?} printed as {printed:?}: {e}"));
    assert_eq!(again, parsed, "{input:?} printed as {printed:?}");
    assert_eq!(ImageReference::names_registry(input), ImageReference::names_registry(input));
}

fn digest(input: &str) {
    match input.parse::<Digest>() {
        // Only the canonical form parses: lowercase hex after `sha256:`.
        Ok(digest) => assert_eq!(digest.to_string(), input),
        Err(e) => check_message("digest error", &e.to_string()),
    }
}

fn platform(input: &str) {
    match Platform::parse(input) {
        Ok(platform) => {
            let printed = platform.to_string();
            assert_eq!(Platform::parse(&printed).as_ref(), Ok(&platform), "{input:?} printed as {printed:?}");
            let normal = platform.normalized();
            assert_eq!(normal.normalized(), normal, "normalising {platform} twice changed it");
            assert!(platform.matches(&platform));
        }
        Err(e) => check_message("platform error", &e.to_string()),
    }
    match PlatformSelection::parse(input) {
        Ok(selection) => {
            let printed = selection.to_string();
            assert_eq!(PlatformSelection::parse(&printed).as_ref(), Ok(&selection), "{input:?} printed as {printed:?}");
        }
        Err(e) => check_message("platform selection error", &e.to_string()),
    }
}
