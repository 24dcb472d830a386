//! The TLS side of a frontend connection: which certificates are trusted
//! (system roots plus `tls.ca_file`, or nothing with `--insecure`), which
//! client certificate is offered (mTLS), and the verifier's reason for a
//! failed handshake, read from the rustls error type.
//!
//! pullprobe builds the rustls configuration itself (and hands it to reqwest)
//! for one thing reqwest cannot say: whether the frontend asked for a client
//! certificate that is not configured. nginx with `ssl_verify_client on`
//! finishes such a handshake and answers HTTP 400; knowing that the
//! certificate was asked for turns that 400 into a `tls_error` that says so.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::reason::{ProbeError, Reason};

/// What the TLS layer of one client learnt while connecting.
#[derive(Debug, Default)]
pub struct TlsObservations {
    /// A frontend sent a CertificateRequest and no client certificate was configured.
    client_cert_requested_without_one: AtomicBool,
}

impl TlsObservations {
    pub fn client_cert_missing(&self) -> bool {
        self.client_cert_requested_without_one.load(Ordering::Relaxed)
    }
}

/// The trust and identity settings of one frontend.
#[derive(Default)]
pub struct TlsSettings<'a> {
    pub insecure: bool,
    pub ca_file: Option<&'a Path>,
    /// More CA files, trusted like `ca_file`.
    pub extra_ca_files: &'a [std::path::PathBuf],
    pub client_cert: Option<&'a Path>,
    pub client_key: Option<&'a Path>,
}

/// A rustls client configuration for these settings, and where it reports what it saw.
pub fn client_config(settings: &TlsSettings) -> Result<(rustls::ClientConfig, Arc<TlsObservations>), ProbeError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_setup_error(format!("TLS protocol versions: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = if settings.insecure {
        Arc::new(AcceptAnyCertificate { provider: provider.clone() })
    } else {
        let mut extra_roots = match settings.ca_file {
            Some(path) => read_ca_file(path)?,
            None => Vec::new(),
        };
        for path in settings.extra_ca_files {
            extra_roots.extend(read_ca_file(path)?);
        }
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
            .map_err(|e| tls_setup_error(format!("TLS trust roots: {e}")))?;
        Arc::new(verifier)
    };
    let identity = match (settings.client_cert, settings.client_key) {
        (Some(cert), Some(key)) => Some(load_identity(&provider, cert, key)?),
        (None, None) => None,
        _ => return Err(tls_setup_error("tls: client_cert and client_key must be given together".to_string())),
    };
    let observations = Arc::new(TlsObservations::default());
    let resolver = Arc::new(ClientIdentity { identity, observations: observations.clone() });
    let mut config = builder.dangerous().with_custom_certificate_verifier(verifier).with_client_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, observations))
}

fn tls_setup_error(message: String) -> ProbeError {
    ProbeError::new(Reason::TlsError, message)
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, ProbeError> {
    std::fs::read(path).map_err(|e| tls_setup_error(format!("{what} {}: {e}", path.display())))
}

fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProbeError> {
    let pem = read_file(path, "tls ca_file")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_setup_error(format!("tls ca_file {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_setup_error(format!("tls ca_file {}: no PEM certificate in it", path.display())));
    }
    Ok(certs)
}

fn load_identity(provider: &CryptoProvider, cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, ProbeError> {
    let cert_pem = read_file(cert, "tls client_cert")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_setup_error(format!("tls client_cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(tls_setup_error(format!("tls client_cert {}: no PEM certificate in it", cert.display())));
    }
    let key_pem = read_file(key, "tls client_key")?;
    // The key's own error text may quote key material: name the file only.
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        tls_setup_error(format!("tls client_key {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in it", key.display()))
    })?;
    let signing_key = provider.key_provider.load_private_key(key_der).map_err(|_| {
        tls_setup_error(format!("tls client_key {}: a key type rustls cannot sign with", key.display()))
    })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        tls_setup_error(format!(
            "tls client_cert {} and client_key {} do not belong together",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}

/// Offers the configured client certificate, and notes a request for one that is not configured.
#[derive(Debug)]
struct ClientIdentity {
    identity: Option<Arc<CertifiedKey>>,
    observations: Arc<TlsObservations>,
}

impl ResolvesClientCert for ClientIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        if self.identity.is_none() {
            self.observations.client_cert_requested_without_one.store(true, Ordering::Relaxed);
        }
        self.identity.clone()
    }

    fn has_certs(&self) -> bool {
        // Always asked, so that a request for a certificate is seen even without one.
        true
    }
}

/// `--insecure`: any certificate, any name; the handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The verifier's reason for a failed handshake, in words an operator acts on.
pub fn describe(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => describe_certificate(cert),
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::CertificateRequired => {
                "the frontend requires a client certificate (alert certificate_required)".to_string()
            }
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::AccessDenied => {
                format!("the frontend rejected the client certificate (alert {})", alert_name(*alert))
            }
            other => format!("the frontend ended the handshake (alert {})", alert_name(*other)),
        },
        rustls::Error::NoCertificatesPresented => "the frontend presented no certificate".to_string(),
        rustls::Error::PeerIncompatible(e) => format!("no TLS parameters in common with the frontend ({e:?})"),
        other => format!("TLS protocol failure ({other})"),
    }
}

fn alert_name(alert: AlertDescription) -> String {
    let name = format!("{alert:?}");
    // CertificateRequired -> certificate_required, as the RFC names it.
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn describe_certificate(err: &CertificateError) -> String {
    match err {
        CertificateError::UnknownIssuer => {
            "unknown CA: the certificate is not signed by an authority in the system roots or tls.ca_file".to_string()
        }
        CertificateError::NotValidForName => "name mismatch: the certificate is not valid for this host".to_string(),
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "name mismatch: the certificate is not valid for {} (it names {})",
            server_name(expected),
            if presented.is_empty() { "nothing".to_string() } else { presented.join(", ") }
        ),
        CertificateError::Expired => "expired: the certificate is past its notAfter".to_string(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("expired: the certificate's notAfter is {}", rfc3339(*not_after))
        }
        CertificateError::NotValidYet => "not yet valid: the certificate's notBefore is in the future".to_string(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("not yet valid: the certificate's notBefore is {}", rfc3339(*not_before))
        }
        CertificateError::Revoked => "revoked: the certificate is revoked".to_string(),
        CertificateError::BadSignature => "bad signature: the certificate's signature does not verify".to_string(),
        CertificateError::BadEncoding => "bad encoding: the certificate cannot be parsed".to_string(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "invalid purpose: the certificate is not for TLS servers".to_string()
        }
        other => format!("certificate rejected ({other})"),
    }
}

fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => format!("{name:?}"),
    }
}

fn rfc3339(at: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(at.as_secs() as i64)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{} s after the epoch", at.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_reasons_are_named() {
        assert!(
            describe(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)).starts_with("unknown CA")
        );
        let expired = CertificateError::ExpiredContext {
            time: UnixTime::since_unix_epoch(std::time::Duration::from_secs(2_000_000_000)),
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(1_700_000_000)),
        };
        let text = describe(&rustls::Error::InvalidCertificate(expired));
        assert!(text.starts_with("expired") && text.contains("2023-11-14T22:13:20Z"), "{text}");
        let mismatch = CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("registry.example.org").unwrap(),
            presented: vec!["DnsName(\"other.example.org\")".into()],
        };
        let text = describe(&rustls::Error::InvalidCertificate(mismatch));
        assert!(text.starts_with("name mismatch") && text.contains("registry.example.org"), "{text}");
        let alert = describe(&rustls::Error::AlertReceived(AlertDescription::CertificateRequired));
        assert!(alert.contains("certificate_required"), "{alert}");
    }

    #[test]
    fn half_an_identity_is_refused() {
        let settings = TlsSettings {
            insecure: false,
            ca_file: None,
            extra_ca_files: &[],
            client_cert: Some(Path::new("/nonexistent")),
            client_key: None,
        };
        let err = client_config(&settings).expect_err("refused");
        assert_eq!(err.reason, Reason::TlsError);
        assert!(err.message.contains("together"), "{}", err.message);
    }
}
