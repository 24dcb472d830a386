//! The headers a pull records from every response: `RateLimit-Remaining`
//! (Docker Hub's `76;w=21600`) and the cache status of nginx, Varnish, CloudFront
//! and Cloudflare (`X-Cache-Status`, `X-Cache`, `CF-Cache-Status`), one header
//! per input line as `name: value`. A cache status is `HIT`, `MISS` or a short
//! uppercase word, never empty; a remaining count is the number sent.

#![no_main]

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pullprobe::registry::client::cache_status;
use pullprobe::registry::transport::ratelimit_remaining;

const NAMES: [&str; 4] = ["ratelimit-remaining", "x-cache-status", "x-cache", "cf-cache-status"];

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some((&first, value)) = line.split_first() else { continue };
        let name = HeaderName::from_static(NAMES[usize::from(first) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    if let Some(status) = cache_status(&headers) {
        assert!(!status.is_empty(), "an empty cache status for {headers:?}");
        assert!(status.len() <= 32, "{status:?}");
        assert!(status.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'), "{status:?}");
    }
    if let Some(remaining) = ratelimit_remaining(&headers) {
        let sent = headers.get("ratelimit-remaining").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let count = sent.split(';').next().unwrap_or_default().trim();
        assert_eq!(count.parse::<u64>().ok(), Some(remaining), "{sent:?}");
    }
});
