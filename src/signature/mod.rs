//! Signatures as admission control reads them: cosign's simple signing payloads
//! (the legacy `.sig` tag, [`cosign`]) and sigstore bundles holding a DSSE envelope
//! ([`bundle`]), checked against the image digest and, when keys are configured,
//! verified with ECDSA P-256 over SHA-256.
//!
//! What it is not: it fetches nothing (the referrers probe does) and knows no
//! registry; it judges bytes already read. Keyless signing (Fulcio certificates,
//! Rekor inclusion proofs) is out of scope: a bundle's certificate or transparency
//! log entry is neither required nor checked.

pub mod bundle;
pub mod cosign;

use std::fmt;

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{DerSignature, Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

/// A public key that signatures may verify with: ECDSA P-256, as `cosign generate-key-pair` writes it.
#[derive(Clone)]
pub struct PublicKey {
    /// How probes.yaml names it (the path as written): `verified_with` in results.
    pub name: String,
    key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("name", &self.name).finish_non_exhaustive()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.key == other.key
    }
}

impl PublicKey {
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo) of an ECDSA P-256 key; anything else
    /// is refused with a message that says what it is instead.
    pub fn from_pem(name: &str, pem: &str) -> Result<PublicKey, String> {
        let label = pem.lines().map(str::trim).find(|l| l.starts_with("-----BEGIN ")).unwrap_or_default();
        if label.contains("PRIVATE KEY") {
            return Err("is a private key; give the public key (cosign.pub), never the private one".to_string());
        }
        if label.is_empty() {
            return Err("is not PEM: expected `-----BEGIN PUBLIC KEY-----` (an ECDSA P-256 public key)".to_string());
        }
        VerifyingKey::from_public_key_pem(pem).map(|key| PublicKey { name: name.to_string(), key }).map_err(|e| {
            format!(
                "is not an ECDSA P-256 public key (SubjectPublicKeyInfo, `-----BEGIN PUBLIC KEY-----`; \
                 RSA, Ed25519 and other curves are not supported): {e}"
            )
        })
    }

    /// Whether `signature` (ASN.1 DER, or the fixed 64-byte r‖s form) signs `message` (SHA-256).
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        if let Ok(der) = DerSignature::from_bytes(signature) {
            return self.key.verify(message, &der).is_ok();
        }
        Signature::from_slice(signature).is_ok_and(|fixed| self.key.verify(message, &fixed).is_ok())
    }
}

/// What checking one signature found, when it is well-formed and names the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It verifies with this key (its name as configured).
    VerifiedWith(String),
    /// No keys are configured: well-formed and naming the image is all that is asked.
    Unkeyed,
    /// Keys are configured and none of them verifies it (another signer, or forged).
    NoKeyVerifies,
}

/// Why a signature is not one for this image at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Check a base64 signature over `message` with `keys` (none: only its form is checked).
pub fn check(keys: &[PublicKey], message: &[u8], signature_base64: &str) -> Result<Outcome, Invalid> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(signature_base64.trim())
        .map_err(|e| Invalid(format!("the signature is not base64: {e}")))?;
    if DerSignature::from_bytes(&signature).is_err() && Signature::from_slice(&signature).is_err() {
        return Err(Invalid(format!(
            "the signature ({} bytes) is not an ECDSA signature (ASN.1 DER or 64-byte r‖s)",
            signature.len()
        )));
    }
    if keys.is_empty() {
        return Ok(Outcome::Unkeyed);
    }
    Ok(keys
        .iter()
        .find(|key| key.verifies(message, &signature))
        .map_or(Outcome::NoKeyVerifies, |key| Outcome::VerifiedWith(key.name.clone())))
}

/// Base64 (standard alphabet, padded, as cosign and DSSE write it) into bytes.
fn decode(what: &str, text: &str) -> Result<Vec<u8>, Invalid> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Invalid(format!("{what} is not base64: {e}")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A P-256 key pair made with `openssl ecparam -genkey -name prime256v1` and its
    /// public half (`openssl ec -pubout`); test data only.
    pub const PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqT3uI3RTpEAii23Vl30DZpYB7VgK
05NkhtChgo/UwVJrMeexK1A+36FckOYkE9bjLEY9vw6hWFdAj04bZ/aP6w==
-----END PUBLIC KEY-----
";
    /// `printf hello | openssl dgst -sha256 -sign key.pem | base64` with that key.
    pub const HELLO_SIGNATURE: &str =
        "MEUCIQDicMWPF8mO7W0qCPoaC5GkjQi8uUZJcqDTmJvrZY3W4wIgffYGNM3z7FespgQpu7UFwV4TkLCa6wcgnGlA4kkkAeo=";

    pub fn key() -> PublicKey {
        PublicKey::from_pem("cosign.pub", PUBLIC_PEM).expect("the test key")
    }

    #[test]
    fn an_openssl_signature_verifies_with_its_key_only() {
        assert_eq!(check(&[key()], b"hello", HELLO_SIGNATURE), Ok(Outcome::VerifiedWith("cosign.pub".into())));
        assert_eq!(check(&[key()], b"hellO", HELLO_SIGNATURE), Ok(Outcome::NoKeyVerifies));
        assert_eq!(check(&[], b"hellO", HELLO_SIGNATURE), Ok(Outcome::Unkeyed));
    }

    #[test]
    fn an_rsa_key_is_refused() {
        let rsa = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwHzvR8+tE/PrdcqPEZ+H
-----END PUBLIC KEY-----
";
        assert!(PublicKey::from_pem("rsa.pub", rsa).unwrap_err().contains("ECDSA P-256"));
    }

    #[test]
    fn a_p256_public_key_loads_and_others_are_named() {
        assert!(PublicKey::from_pem("k.pub", PUBLIC_PEM).is_ok());
        let private = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(PublicKey::from_pem("k", private).unwrap_err().contains("private key"));
        assert!(PublicKey::from_pem("k", "hello").unwrap_err().contains("not PEM"));
        let garbage = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(PublicKey::from_pem("k", garbage).unwrap_err().contains("ECDSA P-256"));
    }

    #[test]
    fn malformed_signatures_are_invalid_whatever_the_keys() {
        assert!(check(&[], b"m", "not base64!").is_err());
        assert!(check(&[], b"m", "AAAA").is_err());
    }
}
