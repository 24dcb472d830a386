//! `WWW-Authenticate` challenges, as a registry or a hostile server sends them
//! (one header value per input line). At most 16 challenges of at most 32
//! parameters come out, whatever the input; a value that is read prints as a
//! header that reads back the same.

#![no_main]

use http::HeaderMap;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use libfuzzer_sys::fuzz_target;
use pullprobe::registry::challenge::{
    Challenge, MAX_CHALLENGE_TEXT, MAX_CHALLENGES, MAX_PARAMS, challenges, parse_challenges,
};
use pullprobe_fuzz::text;

fuzz_target!(|data: &[u8]| {
    if let Some(value) = text(data) {
        let parsed = parse_challenges(value);
        check_bounds(&parsed);
        let printed = print(&parsed);
        if printed.chars().count() <= MAX_CHALLENGE_TEXT {
            assert_eq!(parse_challenges(&printed), parsed, "{value:?} printed as {printed:?}");
        }
    }
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(WWW_AUTHENTICATE, value);
        }
    }
    check_bounds(&challenges(&headers));
});

fn check_bounds(parsed: &[Challenge]) {
    assert!(parsed.len() <= MAX_CHALLENGES, "{} challenges", parsed.len());
    for challenge in parsed {
        assert!(!challenge.scheme.is_empty(), "{parsed:?}");
        assert_eq!(challenge.scheme, challenge.scheme.to_ascii_lowercase());
        assert!(challenge.params.len() <= MAX_PARAMS, "{} parameters", challenge.params.len());
        for (name, _) in &challenge.params {
            assert!(!name.is_empty() && *name == name.to_ascii_lowercase(), "{parsed:?}");
        }
    }
}

/// `scheme name="value", name="value", scheme2, …` with `"` and `\` escaped.
fn print(parsed: &[Challenge]) -> String {
    let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
    let challenges: Vec<String> = parsed
        .iter()
        .map(|c| {
            let params: Vec<String> = c.params.iter().map(|(k, v)| format!("{k}={}", quote(v))).collect();
            if params.is_empty() { c.scheme.clone() } else { format!("{} {}", c.scheme, params.join(", ")) }
        })
        .collect();
    challenges.join(", ")
}
