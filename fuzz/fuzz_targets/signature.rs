//! What a registry serves as a signature: a cosign simple signing payload with
//! its annotation's signature (the first input byte even), or a sigstore bundle
//! (odd). The rest of the input is the payload or bundle, then after a NUL byte
//! the signature text (none without a NUL). Checked against one configured key
//! and a fixed image digest: a refusal is bounded and on one line, whatever the
//! payload quotes; nothing panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::digest::Digest;
use pullprobe::signature::{PublicKey, bundle, cosign};
use pullprobe_fuzz::check_message_within;

/// A P-256 public key (test data only).
const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqT3uI3RTpEAii23Vl30DZpYB7VgK
05NkhtChgo/UwVJrMeexK1A+36FckOYkE9bjLEY9vw6hWFdAj04bZ/aP6w==
-----END PUBLIC KEY-----
";
const IMAGE: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// A refusal names what is wrong and quotes at most a short piece of the input.
const MAX_REFUSAL_CHARS: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let key = PublicKey::from_pem("release", PUBLIC_PEM).expect("the test key parses");
    let image: Digest = IMAGE.parse().expect("a digest");
    let (body, signature) = match rest.iter().position(|b| *b == 0) {
        Some(nul) => (&rest[..nul], Some(String::from_utf8_lossy(&rest[nul + 1..]).into_owned())),
        None => (rest, None),
    };
    for keys in [&[][..], std::slice::from_ref(&key)] {
        let outcome = if first % 2 == 0 {
            cosign::check(body, signature.as_deref(), &image, keys)
        } else {
            bundle::check(body, &image, keys)
        };
        if let Err(invalid) = outcome {
            check_message_within("signature", &invalid.0, MAX_REFUSAL_CHARS);
            assert!(!invalid.0.contains('\n'), "a refusal on one line: {}", invalid.0);
        }
    }
});
