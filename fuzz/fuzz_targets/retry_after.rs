//! `Retry-After` as a rate-limiting registry sends it: delta-seconds or an HTTP
//! date. The pause never exceeds the cap that keeps deadline arithmetic from
//! overflowing, and digits mean exactly that many seconds; a refusal that carries
//! it is `rate_limited` with the pause kept.

#![no_main]

use http::HeaderMap;
use http::header::{HeaderValue, RETRY_AFTER};
use libfuzzer_sys::fuzz_target;
use pullprobe::reason::Reason;
use pullprobe::registry::errors::{MAX_RETRY_AFTER_SECONDS, RequestKind, classify_status, retry_after};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else { return };
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, value.clone());
    let seconds = retry_after(&headers);
    if let Some(seconds) = seconds {
        assert!(seconds <= MAX_RETRY_AFTER_SECONDS, "{seconds} s");
    }
    // Header values that are not visible ASCII are ignored as a whole.
    if let Ok(text) = value.to_str() {
        let trimmed = text.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let want = trimmed.parse::<u64>().unwrap_or(u64::MAX).min(MAX_RETRY_AFTER_SECONDS);
            assert_eq!(seconds, Some(want), "{text:?}");
        }
    }
    let refused = classify_status(429, b"", RequestKind::Manifest, seconds);
    assert_eq!((refused.reason, refused.retry_after), (Reason::RateLimited, seconds));
});
