//! `Link: <…>; rel="next"` of tag and catalog listings: the next page is on the
//! same origin as the request and is not the request itself, or the listing
//! ends, or the error (a page on another host) says so in a bounded message.

#![no_main]

use http::HeaderMap;
use http::header::{HeaderValue, LINK};
use libfuzzer_sys::fuzz_target;
use pullprobe::reason::Reason;
use pullprobe::registry::tags::next_page;
use pullprobe_fuzz::check_error;
use url::Url;

/// Listings as pullprobe requests them: plain HTTP on loopback, HTTPS with a port and a path prefix.
const REQUESTS: [&str; 3] = [
    "http://127.0.0.1:5000/v2/team/app/tags/list?n=1000",
    "https://registry.example.org/v2/_catalog?n=1000",
    "https://[::1]:8443/prefix/v2/a/b/c/tags/list?n=2&last=x",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, value)) = data.split_first() else { return };
    let Ok(request) = Url::parse(REQUESTS[usize::from(first) % REQUESTS.len()]) else { return };
    let mut headers = HeaderMap::new();
    for line in value.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(LINK, value);
        }
    }
    match next_page(&request, &headers, "GET tags of team/app") {
        Ok(Some(next)) => {
            assert_eq!(next.origin(), request.origin(), "{next} is not on the origin of {request}");
            assert_ne!(next, request, "a page naming itself loops");
        }
        Ok(None) => {}
        Err(e) => check_error("link", &e, &[Reason::HttpStatus]),
    }
});
