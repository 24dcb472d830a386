//! Paging from `serve`: after each run of a probe, its results go to every
//! configured Alertmanager replica (each on its own), with the history serve
//! keeps in memory. A firing alert is re-sent every run with
//! `endsAt` = now + 4 × interval, so it expires by itself if serve dies; a
//! passing run resolves it.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::{Config, ProbeConfig};
use crate::output::alertmanager::{self, AlertSettings, Alertmanager};
use crate::output::history::{History, unix_seconds};
use crate::output::http::RetryPolicy;
use crate::probe::discover::Coverage;
use crate::result::ProbeResult;
use crate::shard::Shard;

/// Sends this shard's alerts; counts delivery failures by replica since start (for `/metrics`).
#[derive(Default)]
pub struct AlertSender {
    /// Alerts of another shard's images are that shard's to resolve.
    shard: Shard,
    failures: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl AlertSender {
    pub fn new(shard: Shard) -> Self {
        AlertSender { shard, failures: Default::default() }
    }

    pub async fn after_run(
        &self,
        config: &Config,
        probe: &ProbeConfig,
        results: &[ProbeResult],
        coverage: Option<&Coverage>,
        after: &History,
        interval: Duration,
    ) {
        let Some(am) = &config.alerting.alertmanager else { return };
        if results.is_empty() {
            return;
        }
        let replicas = match Alertmanager::replicas(am, RetryPolicy::default()) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(alertmanager = %e.endpoint, error = %e.message, "cannot set up the Alertmanager client");
                self.count(&e.endpoint);
                return;
            }
        };
        let mut settings = AlertSettings::from_config(am, config.alerting.after);
        settings.severities.insert(probe.name.clone(), probe.severity);
        settings.owned_probes = BTreeSet::from([probe.name.clone()]);
        settings.shard = self.shard;
        if let Some(coverage) = coverage {
            settings.carried = coverage.candidates.iter().map(|image| (probe.name.clone(), image.clone())).collect();
        }
        let now = unix_seconds(OffsetDateTime::now_utc());
        let ends_at = now + 4.0 * interval.as_secs_f64();
        for outcome in alertmanager::deliver(&replicas, results, Some(after), &settings, ends_at, now).await {
            if outcome.delivered.is_err() {
                self.count(&outcome.endpoint);
            }
        }
    }

    fn count(&self, endpoint: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        *f.entry(endpoint.to_string()).or_default() += 1;
    }

    pub fn failures(&self) -> std::collections::BTreeMap<String, u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}
