//! Where results go besides stdout: Alertmanager, Pushgateway, and when to page.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::registry::{PasswordSource, TlsConfig};
use crate::reason::Reason;

/// `alerting:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertingConfig {
    pub alertmanager: Option<AlertmanagerConfig>,
    pub pushgateway: Option<PushgatewayConfig>,
    pub after: AlertAfter,
}

/// `alerting.alertmanager:`; every URL is a replica sent to independently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    pub urls: Vec<Url>,
    /// Static labels added to every alert (never an identity label).
    pub labels: BTreeMap<String, String>,
    pub runbook_url: Option<Url>,
    /// `endsAt` = now + this for alerts sent by `now` (CronJob mode).
    /// Default: 4 × `defaults.interval`, as `serve` uses.
    pub resolve_timeout: Duration,
    /// Credentials and TLS for every replica.
    pub access: EndpointAccess,
}

/// `alerting.pushgateway:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushgatewayConfig {
    pub url: Url,
    /// The `job` grouping label (default `pullprobe`).
    pub job: String,
    pub access: EndpointAccess,
}

/// How to reach an Alertmanager or a Pushgateway: `auth:` and `tls:` next to `urls:`/`url:`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointAccess {
    pub auth: Option<EndpointAuth>,
    /// `ca_file`, and `client_cert` + `client_key` for mTLS.
    pub tls: TlsConfig,
}

/// `auth: {username: x, password_file: …}` or `auth: {bearer_token_file: …}` (or `…_env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAuth {
    Basic { username: String, password: PasswordSource },
    Bearer(PasswordSource),
}

/// How many consecutive failed runs fire an alert: `after: 2` or
/// `after: {default: 2, integrity: 1}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertAfter {
    /// For every reason that is not an integrity reason (default 1).
    pub default: u32,
    /// For integrity reasons ([`Reason::is_integrity`]); defaults to `default`.
    pub integrity: u32,
}

impl AlertAfter {
    /// The number of consecutive failed runs after which a failure with `reason` pages.
    pub fn for_reason(&self, reason: Reason) -> u32 {
        if reason.is_integrity() { self.integrity } else { self.default }
    }
}

impl Default for AlertAfter {
    fn default() -> Self {
        AlertAfter { default: 1, integrity: 1 }
    }
}

/// Labels that make up an alert's identity or are set by pullprobe itself.
pub const RESERVED_LABELS: [&str; 8] =
    ["alertname", "probe", "image", "registry", "frontend", "platform", "location", "severity"];

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<super::super::Config, String> {
        super::super::Config::from_str_named(text, "probes.yaml").map_err(|e| e.to_string())
    }

    #[test]
    fn endpoint_auth_and_tls() {
        let config = load(
            "alerting:\n  alertmanager:\n    urls: [http://am:9093]\n    auth: {username: pp, password_env: AM_PW}\n\
             \x20   tls: {ca_file: /etc/ssl/am.pem}\n  pushgateway:\n    url: http://pg:9091\n\
             \x20   auth: {bearer_token_file: /run/secrets/pg}\n",
        )
        .unwrap();
        let am = config.alerting.alertmanager.unwrap();
        assert_eq!(
            am.access.auth,
            Some(EndpointAuth::Basic { username: "pp".into(), password: PasswordSource::Env("AM_PW".into()) })
        );
        assert_eq!(am.access.tls.ca_file.as_deref(), Some(std::path::Path::new("/etc/ssl/am.pem")));
        let pg = config.alerting.pushgateway.unwrap();
        assert_eq!(pg.access.auth, Some(EndpointAuth::Bearer(PasswordSource::File("/run/secrets/pg".into()))));

        let both = load(
            "alerting:\n  pushgateway:\n    url: http://pg:9091\n    auth: {username: a, password_env: B, bearer_token_env: C}\n",
        );
        assert!(both.unwrap_err().contains("alternatives"));
        let user_only = load("alerting:\n  alertmanager:\n    urls: [http://am:9093]\n    auth: {username: a}\n");
        assert!(user_only.unwrap_err().starts_with("probes.yaml:4:"));
        let inline = load("alerting:\n  alertmanager:\n    urls: [http://am:9093]\n    auth: {password: x}\n");
        assert!(inline.is_err(), "an inline password is refused");
    }

    #[test]
    fn after_by_reason() {
        let after = AlertAfter { default: 2, integrity: 1 };
        assert_eq!(after.for_reason(Reason::BlobDigestMismatch), 1);
        assert_eq!(after.for_reason(Reason::ConnectError), 2);
        assert_eq!(AlertAfter::default().for_reason(Reason::Timeout), 1);
    }
}
