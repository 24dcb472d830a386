//! Certificates and keys made at test time (rcgen): a test CA, server
//! certificates with an IP SAN for 127.0.0.1 (valid, expired, for another
//! name), client certificates for mTLS, a second CA nobody trusts, and an
//! ES256 key whose self-signed certificate is a token server's
//! `rootcertbundle` (JWTs for distribution's `auth: token`).

use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SigningKey,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority that signs test certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file): what a client trusts with `tls.ca_file`.
    pub cert: PathBuf,
    dir: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, format!("pullprobe test CA {name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("writing the CA certificate");
        TestCa { issuer: Issuer::new(params, key), cert: path, dir: dir.to_path_buf() }
    }

    /// A server certificate for `names` (IP addresses become IP SANs), valid from two days
    /// ago for `valid_days` (negative: it expired).
    pub fn server(&self, file: &str, names: &[&str], valid_days: i64) -> PemPair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("server params");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = if valid_days < 0 {
            OffsetDateTime::now_utc() - Duration::days(1)
        } else {
            OffsetDateTime::now_utc() + Duration::days(valid_days)
        };
        self.sign(file, params)
    }

    /// A client certificate (mTLS) with this common name.
    pub fn client(&self, file: &str, common_name: &str) -> PemPair {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client params");
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        self.sign(file, params)
    }

    fn sign(&self, file: &str, params: CertificateParams) -> PemPair {
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signing a certificate");
        let pair =
            PemPair { cert: self.dir.join(format!("{file}.pem")), key: self.dir.join(format!("{file}-key.pem")) };
        std::fs::write(&pair.cert, cert.pem()).expect("writing a certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("writing a key");
        pair
    }
}

/// An ES256 key and its self-signed certificate: signs JWTs that distribution's
/// `auth: token` accepts when the certificate is its `rootcertbundle`.
pub struct TokenSigner {
    key: KeyPair,
    cert_der: Vec<u8>,
    /// The certificate as PEM: the registry's `rootcertbundle`.
    pub bundle: PathBuf,
}

impl TokenSigner {
    pub fn new(dir: &Path) -> TokenSigner {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("signer params");
        params.distinguished_name.push(DnType::CommonName, "pullprobe test token issuer");
        params.not_before = OffsetDateTime::now_utc() - Duration::days(2);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(30);
        let key = KeyPair::generate().expect("signer key");
        let cert = params.self_signed(&key).expect("signer certificate");
        let bundle = dir.join("token-signer.pem");
        std::fs::write(&bundle, cert.pem()).expect("writing the rootcertbundle");
        TokenSigner { key, cert_der: cert.der().to_vec(), bundle }
    }

    /// A compact JWS (ES256, the certificate in `x5c`) over `claims`.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = serde_json::json!({
            "alg": "ES256",
            "typ": "JWT",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)],
        });
        let signing_input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(&header).expect("header JSON")),
            b64(&serde_json::to_vec(claims).expect("claims JSON"))
        );
        let der = self.key.sign(signing_input.as_bytes()).expect("signing");
        format!("{signing_input}.{}", b64(&ecdsa_der_to_fixed(&der)))
    }
}

/// An ASN.1 ECDSA signature (`SEQUENCE { INTEGER r, INTEGER s }`) as JWS wants it: r ‖ s, 32 bytes each.
fn ecdsa_der_to_fixed(der: &[u8]) -> Vec<u8> {
    fn integer(bytes: &[u8]) -> (&[u8], &[u8]) {
        assert_eq!(bytes[0], 0x02, "an ASN.1 INTEGER");
        let len = bytes[1] as usize;
        (&bytes[2..2 + len], &bytes[2 + len..])
    }
    assert_eq!(der[0], 0x30, "an ASN.1 SEQUENCE");
    let body = &der[2..];
    let (r, rest) = integer(body);
    let (s, _) = integer(rest);
    let mut out = vec![0u8; 64];
    for (value, offset) in [(r, 0), (s, 32)] {
        let value = &value[value.len().saturating_sub(32)..];
        out[offset + 32 - value.len()..offset + 32].copy_from_slice(value);
    }
    out
}
