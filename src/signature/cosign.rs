//! cosign's legacy signatures: the manifest behind tag `sha256-<hex>.sig` whose
//! layers are `application/vnd.dev.cosign.simplesigning.v1+json` payloads, each
//! signed in its layer annotation `dev.cosignproject.cosign/signature` (base64 of
//! an ASN.1 DER ECDSA signature over the payload bytes, SHA-256). The payload
//! names the image it signs: `critical.image.docker-manifest-digest`, with
//! `critical.type` = `cosign container image signature`.

use serde::Deserialize;

use super::{Invalid, Outcome, PublicKey};
use crate::digest::Digest;

/// The layer media type of a simple signing payload.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of an image signature.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";
/// The artifactType cosign gives a simple signing signature stored as an OCI 1.1 referrer.
pub const REFERRER_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    image: CriticalImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct CriticalImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Judge one simple signing layer: its payload must sign `image`, and its
/// signature (`signature`, the annotation's value; `None` if absent) verify with one of `keys`.
pub fn check(payload: &[u8], signature: Option<&str>, image: &Digest, keys: &[PublicKey]) -> Result<Outcome, Invalid> {
    let parsed: Payload = serde_json::from_slice(payload).map_err(|e| {
        Invalid(format!(
            "the simple signing payload is not JSON with critical.image and critical.type: {}",
            crate::redact::json_error(&e)
        ))
    })?;
    if parsed.critical.kind != SIGNATURE_TYPE {
        return Err(Invalid(format!(
            "the payload's critical.type is {}, not {SIGNATURE_TYPE:?}",
            crate::redact::quoted(&parsed.critical.kind, 100)
        )));
    }
    let named = parsed.critical.image.docker_manifest_digest;
    if named != image.to_string() {
        return Err(Invalid(format!(
            "the payload signs {}, not this image {image} (a signature copied from another image)",
            crate::redact::quoted(&named, 80)
        )));
    }
    let Some(signature) = signature else {
        return Err(Invalid(format!("the layer has no `{SIGNATURE_ANNOTATION}` annotation")));
    };
    super::check(keys, payload, signature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::tests::key;

    /// A simple signing payload as cosign writes it, for `digest`.
    fn payload(digest: &str) -> Vec<u8> {
        format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry.example.org/app"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},"optional":null}}"#
        )
        .into_bytes()
    }

    const IMAGE: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OTHER: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    /// A signature cosign made, with its public key and the payload it signed, carried
    /// over from sigstore-rs's test data (`src/cosign/signature_layers.rs`,
    /// `build_correct_signature_layer_without_bundle`; the payload is that JSON value
    /// serialised compactly, as cosign writes it). `openssl dgst -sha256 -verify` agrees.
    const COSIGN_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAENptdY/l3nB0yqkXLBWkZWQwo6+cu
OSWS1X9vPavpiQOoTTGC0xX57OojUadxF1cdQmrsiReWg2Wn4FneJfa8xw==
-----END PUBLIC KEY-----
";
    const COSIGN_SIGNATURE: &str =
        "MEUCIQD6q/COgzOyW0YH1Dk+CCYSt4uAhm3FDHUwvPI55zwnlwIgE0ZK58ZOWpZw8YVmBapJhBqCfdPekIknimuO0xH8Jh8=";
    const COSIGN_DIGEST: &str = "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b";

    #[test]
    fn a_signature_made_by_cosign_verifies() {
        let payload = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"registry-testing.svc.lan/busybox"}},"image":{{"docker-manifest-digest":"{COSIGN_DIGEST}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        let cosign_key = PublicKey::from_pem("sigstore-rs.pub", COSIGN_PUBLIC_KEY).unwrap();
        let image: Digest = COSIGN_DIGEST.parse().unwrap();
        let outcome = check(payload.as_bytes(), Some(COSIGN_SIGNATURE), &image, &[key(), cosign_key.clone()]);
        assert_eq!(outcome, Ok(Outcome::VerifiedWith("sigstore-rs.pub".into())));
        assert_eq!(check(payload.as_bytes(), Some(COSIGN_SIGNATURE), &image, &[key()]), Ok(Outcome::NoKeyVerifies));
        let tampered = payload.replace("busybox", "busyb0x");
        assert_eq!(
            check(tampered.as_bytes(), Some(COSIGN_SIGNATURE), &image, &[cosign_key]),
            Ok(Outcome::NoKeyVerifies)
        );
    }

    #[test]
    fn a_payload_for_another_image_is_invalid() {
        let image: Digest = IMAGE.parse().unwrap();
        let err = check(&payload(OTHER), Some("AAAA"), &image, &[]).unwrap_err();
        assert!(err.0.contains("copied from another image"), "{err}");
    }

    #[test]
    fn the_type_and_the_annotation_are_required() {
        let image: Digest = IMAGE.parse().unwrap();
        let wrong_type = String::from_utf8(payload(IMAGE)).unwrap().replace("container image signature", "x");
        assert!(check(wrong_type.as_bytes(), Some("AAAA"), &image, &[]).unwrap_err().0.contains("critical.type"));
        assert!(check(&payload(IMAGE), None, &image, &[key()]).unwrap_err().0.contains("annotation"));
        assert!(check(b"{}", None, &image, &[]).is_err());
    }

    /// serde_json quotes a string where an object belongs, whole: a refusal must not
    /// grow with what the registry serves.
    #[test]
    fn a_refusal_quotes_at_most_a_short_piece_of_the_payload() {
        let image: Digest = IMAGE.parse().unwrap();
        let payload = format!(r#"{{"critical":"{}"}}"#, "x".repeat(20_000));
        let err = check(payload.as_bytes(), None, &image, &[]).unwrap_err();
        assert!(err.0.starts_with("the simple signing payload is not JSON"), "{err}");
        assert!(err.0.chars().count() < 500, "{} characters", err.0.chars().count());
        let bundle = format!(r#"{{"dsseEnvelope":"{}"}}"#, "x".repeat(20_000));
        let err = crate::signature::bundle::check(bundle.as_bytes(), &image, &[]).unwrap_err();
        assert!(err.0.chars().count() < 500, "{} characters", err.0.chars().count());
    }
}
