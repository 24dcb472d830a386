//! Sigstore bundles (`application/vnd.dev.sigstore.bundle.v0.3+json`, cosign v3's
//! default): one layer holding the bundle JSON, whose `dsseEnvelope` carries an
//! in-toto statement about the image. The DSSE signature is over the envelope's
//! pre-authentication encoding, `PAE(payloadType, payload)`; the statement's
//! `subject` must name the image digest.
//!
//! A bundle's verification material (a Fulcio certificate, Rekor entries) is not
//! checked: keyless verification is out of scope. A bundle with a
//! `messageSignature` instead of a DSSE envelope is not verified either.

use serde::Deserialize;

use super::{Invalid, Outcome, PublicKey, decode};
use crate::digest::Digest;

/// The artifactType (and layer media type) of a sigstore bundle, v0.3.
pub const BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The payload type of an in-toto statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle {
    #[serde(default)]
    dsse_envelope: Option<Envelope>,
    #[serde(default)]
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    payload: String,
    payload_type: String,
    #[serde(default)]
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
struct EnvelopeSignature {
    sig: String,
}

#[derive(Deserialize)]
struct Statement {
    #[serde(default)]
    subject: Vec<Subject>,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// DSSE's pre-authentication encoding: `DSSEv1 <len(type)> <type> <len(body)> <body>`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Judge one bundle: a DSSE envelope whose in-toto statement names `image`, and
/// one of whose signatures verifies with one of `keys` (none: well-formed is enough).
pub fn check(bundle: &[u8], image: &Digest, keys: &[PublicKey]) -> Result<Outcome, Invalid> {
    let parsed: Bundle = serde_json::from_slice(bundle)
        .map_err(|e| Invalid(format!("the bundle is not sigstore bundle JSON: {}", crate::redact::json_error(&e))))?;
    let Some(envelope) = parsed.dsse_envelope else {
        let what = if parsed.message_signature.is_some() {
            "a messageSignature bundle (not a DSSE envelope): not verified"
        } else {
            "the bundle has no dsseEnvelope"
        };
        return Err(Invalid(what.to_string()));
    };
    if envelope.payload_type != IN_TOTO {
        return Err(Invalid(format!(
            "the envelope's payloadType is {}, not {IN_TOTO:?}",
            crate::redact::quoted(&envelope.payload_type, 100)
        )));
    }
    let payload = decode("the envelope's payload", &envelope.payload)?;
    let statement: Statement = serde_json::from_slice(&payload).map_err(|e| {
        Invalid(format!("the envelope's payload is not an in-toto statement: {}", crate::redact::json_error(&e)))
    })?;
    let hex = image.hex();
    if !statement.subject.iter().any(|s| s.digest.get("sha256") == Some(&hex)) {
        let named: Vec<String> = statement
            .subject
            .iter()
            .filter_map(|s| s.digest.get("sha256"))
            .take(3)
            .map(|h| crate::redact::quoted(&format!("sha256:{h}"), 71))
            .collect();
        return Err(Invalid(format!(
            "the statement's subject names {}, not this image {image}",
            if named.is_empty() { "no sha256 digest".to_string() } else { named.join(", ") }
        )));
    }
    if envelope.signatures.is_empty() {
        return Err(Invalid("the envelope has no signatures".to_string()));
    }
    let signed = pae(&envelope.payload_type, &payload);
    let mut outcome = Outcome::NoKeyVerifies;
    for signature in &envelope.signatures {
        match super::check(keys, &signed, &signature.sig)? {
            Outcome::NoKeyVerifies => {}
            found => {
                outcome = found;
                break;
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_is_dsse_v1() {
        // The example of the DSSE specification (protocol.md).
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn a_statement_about_another_image_is_invalid() {
        use base64::Engine as _;
        let image: Digest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        let statement = format!(
            r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"name":"x","digest":{{"sha256":"{}"}}}}]}}"#,
            "b".repeat(64)
        );
        let payload = base64::engine::general_purpose::STANDARD.encode(statement);
        let bundle = format!(
            r#"{{"dsseEnvelope":{{"payload":"{payload}","payloadType":"{IN_TOTO}","signatures":[{{"sig":"AAAA"}}]}}}}"#
        );
        let err = check(bundle.as_bytes(), &image, &[]).unwrap_err();
        assert!(err.0.contains("not this image"), "{err}");
        assert!(check(br#"{"messageSignature":{}}"#, &image, &[]).unwrap_err().0.contains("messageSignature"));
    }
}
