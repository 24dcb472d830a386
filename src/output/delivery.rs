//! Delivery of one `now` run (CronJob mode) to the outputs of `alerting:`:
//! read the history back from the Pushgateway, then push the gauges and send
//! the alerts, concurrently. The caller decides the exit code from the
//! [`DeliveryReport`].
//!
//! Each image's series have a Pushgateway group of their own
//! ([`Group::image`]), so a run rewrites only what it probed: a catalog
//! sample or one shard of the images leaves the others' series and history as
//! they were. A shard deletes the groups it owns that its probes no longer
//! stand for (an image gone from the catalog, a probe's changed `image:`);
//! shard 0 also deletes the groups of shards beyond the current count and the
//! one-group-per-probe groups of earlier versions (after reading their history).

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::config::{AlertingConfig, Severity};
use crate::output::alertmanager::{self, AlertSettings, Alertmanager};
use crate::output::history::{self, History, SeriesKey, unix_seconds};
use crate::output::http::{DeliveryError, RetryPolicy};
use crate::output::metrics;
use crate::output::pushgateway::{Group, Pushgateway};
use crate::result::ProbeResult;
use crate::shard::{self, Shard};

/// What the run knows about its probes besides the results.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// Severity per probe name (from probes.yaml; ad-hoc images are `critical`).
    pub severities: BTreeMap<String, Severity>,
    /// Probes whose vanished series may be resolved (see [`AlertSettings::owned_probes`]).
    pub owned_probes: BTreeSet<String>,
    /// (probe, image) series a discovery rule still stands for but did not probe
    /// this run (see [`AlertSettings::carried`]).
    pub carried: BTreeSet<(String, String)>,
    /// The shard of the run ([`Shard::ALL`] unless `--shard`).
    pub shard: Shard,
    /// The prober's `location`.
    pub location: String,
    /// Per probe whose images are all known this run (none when the command line
    /// narrowed frontends or platforms): the `image` labels this shard owns.
    /// Its other groups of these probes are deleted from the Pushgateway.
    pub owned: BTreeMap<String, BTreeSet<String>>,
    /// Probes that are canaries (their shard unit is the probe name).
    pub canaries: BTreeSet<String>,
}

impl RunContext {
    /// Whether this shard owns `group`'s series.
    fn owns(&self, group: &Group) -> bool {
        let probe = group.get("probe").unwrap_or_default();
        let image = group.get("image").unwrap_or_default();
        self.shard.owns(shard::unit(self.canaries.contains(probe), probe, image))
    }

    /// Groups this run deletes: its own that its probes no longer stand for; for
    /// shard 0 also those of shards beyond the count and of earlier versions.
    fn stale<'a>(&'a self, groups: &'a [Group]) -> impl Iterator<Item = &'a Group> + 'a {
        let first = self.shard.index == 0;
        groups.iter().filter(move |group| match (group.get("probe"), group.get("image"), group.get("index")) {
            (Some(probe), Some(image), _) => {
                self.owned.get(probe).is_some_and(|images| !images.contains(image)) && self.owns(group)
            }
            (Some(_), None, _) => first,
            (None, _, Some(index)) => first && index.parse::<u32>().is_ok_and(|i| i >= self.shard.total),
            _ => false,
        })
    }
}

/// How delivery went.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Every output (endpoint) that did not take what it was sent.
    pub failures: Vec<DeliveryError>,
    /// Failed series that Alertmanager has: sent as firing and accepted by at
    /// least one replica, or held back below `alerting.after` while a replica answered.
    pub paged: BTreeSet<SeriesKey>,
    pub alertmanager_configured: bool,
}

impl DeliveryReport {
    /// Whether every failed result reached Alertmanager (what `--no-fail` needs).
    pub fn every_failure_paged(&self, results: &[ProbeResult]) -> bool {
        self.alertmanager_configured && results.iter().filter(|r| !r.ok).all(|r| self.paged.contains(&SeriesKey::of(r)))
    }
}

/// Deliver `results` to the configured Alertmanager replicas and Pushgateway.
pub async fn deliver_now(
    results: &[ProbeResult],
    alerting: &AlertingConfig,
    context: &RunContext,
    policy: RetryPolicy,
) -> DeliveryReport {
    let mut report =
        DeliveryReport { alertmanager_configured: alerting.alertmanager.is_some(), ..DeliveryReport::default() };
    // A shard that owns nothing still reports itself (and cleans up) to the Pushgateway.
    let nothing_to_send = results.is_empty() && alerting.pushgateway.is_none();
    if nothing_to_send || (alerting.alertmanager.is_none() && alerting.pushgateway.is_none()) {
        return report;
    }

    // The history: only a Pushgateway keeps it between CronJob runs.
    let mut pushgateway = None;
    let mut history: Option<History> = None;
    if let Some(config) = &alerting.pushgateway {
        match Pushgateway::new(config, policy) {
            Ok(pg) => {
                match pg.read_back(&context.location).await {
                    Ok(previous) => {
                        history = Some(history::advance(&previous.history, results));
                        pushgateway = Some((pg, previous.groups));
                    }
                    Err(e) => {
                        // Pushing without the history would reset the last success and the
                        // failure count of every failing series: push nothing this run.
                        tracing::error!(pushgateway = %e.endpoint, error = %e.message, "cannot read back the pushed groups; not pushing");
                        report.failures.push(e);
                    }
                }
            }
            Err(e) => {
                tracing::error!(pushgateway = %e.endpoint, error = %e.message, "cannot set up the Pushgateway client");
                report.failures.push(e);
            }
        }
    }

    let now = unix_seconds(OffsetDateTime::now_utc());
    let push = async {
        let Some((pg, existing)) = &pushgateway else { return Vec::new() };
        let Some(history) = &history else { return Vec::new() };
        push_and_clean(pg, existing, results, history, context).await
    };
    let alert = async {
        let Some(config) = &alerting.alertmanager else { return Ok(Vec::new()) };
        let replicas = Alertmanager::replicas(config, policy)?;
        let mut settings = AlertSettings::from_config(config, alerting.after);
        settings.severities = context.severities.clone();
        settings.owned_probes = context.owned_probes.clone();
        settings.carried = context.carried.clone();
        settings.shard = context.shard;
        let ends_at = now + config.resolve_timeout.as_secs_f64();
        Ok::<_, DeliveryError>(
            alertmanager::deliver(&replicas, results, history.as_ref(), &settings, ends_at, now).await,
        )
    };
    let (pushed, alerted) = tokio::join!(push, alert);

    for outcome in pushed {
        if let Err(e) = outcome {
            tracing::error!(pushgateway = %e.endpoint, attempts = e.attempts, error = %e.message, "push failed");
            report.failures.push(e);
        }
    }
    match alerted {
        Ok(outcomes) => {
            for outcome in outcomes {
                if outcome.delivered.is_ok() {
                    report.paged.extend(outcome.batch.fired.iter().cloned());
                }
                if outcome.reachable {
                    report.paged.extend(outcome.batch.held.iter().cloned());
                }
                if let Err(e) = outcome.delivered {
                    report.failures.push(e);
                }
            }
        }
        Err(e) => {
            tracing::error!(alertmanager = %e.endpoint, error = %e.message, "cannot set up the Alertmanager client");
            report.failures.push(e);
        }
    }
    report
}

/// Push each image's series to its group and this shard's own gauges to its
/// group, then delete the groups that are gone ([`RunContext::stale`]): the
/// outcome of every request.
async fn push_and_clean(
    pg: &Pushgateway,
    existing: &[Group],
    results: &[ProbeResult],
    history: &History,
    context: &RunContext,
) -> Vec<Result<(), DeliveryError>> {
    let mut by_image: BTreeMap<Group, Vec<ProbeResult>> = BTreeMap::new();
    for result in results {
        let group = Group::image(&pg.job, &result.probe, &result.location, &result.image);
        by_image.entry(group).or_default().push(result.clone());
    }
    let pushes = by_image.iter().map(|(group, mine)| async move {
        let mut families = metrics::gauge_families(mine, history);
        families.push(metrics::probe_info(mine, &context.severities));
        pg.push(group, &families).await
    });
    let owned = context.owned.values().map(BTreeSet::len).sum();
    let shard_group = Group::shard(&pg.job, &context.location, context.shard.index);
    let shard_families = metrics::shard_families(context.shard, &context.location, owned);
    let (mut outcomes, shard_pushed) =
        tokio::join!(futures_util::future::join_all(pushes), pg.push(&shard_group, &shard_families));
    outcomes.push(shard_pushed);
    let stale: Vec<&Group> = context.stale(existing).filter(|g| !by_image.contains_key(*g)).collect();
    if !stale.is_empty() {
        tracing::info!(groups = stale.len(), "deleting Pushgateway groups no longer probed");
    }
    outcomes.extend(futures_util::future::join_all(stale.into_iter().map(|group| pg.delete(group))).await);
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(labels: &[(&str, &str)]) -> Group {
        match labels {
            [("probe", probe), ("image", image)] => Group::image("pullprobe", probe, "eqiad", image),
            [("index", index)] => Group::shard("pullprobe", "eqiad", index.parse().unwrap()),
            _ => unreachable!("a test group"),
        }
    }

    #[test]
    fn a_shard_deletes_only_its_own_stale_groups() {
        let images: Vec<String> = (0..40).map(|i| format!("r.example.org/app-{i}:1")).collect();
        let groups: Vec<Group> = images.iter().map(|i| group(&[("probe", "catalog"), ("image", i)])).collect();
        for index in 0..3 {
            let shard = Shard { index, total: 3 };
            // The catalog now stands for the first 30 images; a run of shard `index` probed some.
            let owned = images[..30].iter().filter(|i| shard.owns(i)).cloned().collect();
            let context =
                RunContext { shard, owned: BTreeMap::from([("catalog".to_string(), owned)]), ..RunContext::default() };
            let stale: Vec<&str> = context.stale(&groups).filter_map(|g| g.get("image")).collect();
            let expected: Vec<&str> = images[30..].iter().map(String::as_str).filter(|i| shard.owns(i)).collect();
            assert_eq!(stale, expected, "shard {shard}");
        }
        let unknown = RunContext { shard: Shard { index: 0, total: 3 }, ..RunContext::default() };
        assert_eq!(unknown.stale(&groups).count(), 0, "a probe whose images are not known this run keeps its groups");
    }

    #[test]
    fn shard_zero_deletes_groups_of_shards_that_no_longer_exist() {
        let groups: Vec<Group> = (0..4).map(|i| group(&[("index", &i.to_string())])).collect();
        let zero = RunContext { shard: Shard { index: 0, total: 2 }, ..RunContext::default() };
        let stale: Vec<&str> = zero.stale(&groups).filter_map(|g| g.get("index")).collect();
        assert_eq!(stale, ["2", "3"]);
        let one = RunContext { shard: Shard { index: 1, total: 2 }, ..RunContext::default() };
        assert_eq!(one.stale(&groups).count(), 0);
    }
}
