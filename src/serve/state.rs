//! What `serve` remembers between rounds: the current config, each series'
//! last result and history, the last few results of every probe (for `/`),
//! and the counters only a long-running process can keep. Everything here is
//! bounded by the config: one entry per series, [`RECENT_RESULTS`] per probe.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::config::Config;
use crate::output::gauge_family::{GaugeFamily, Sample};
use crate::output::history::{self, History, SeriesKey};
use crate::output::metrics::{self, RunCounters};
use crate::probe::bandwidth::Bandwidth;
use crate::probe::discover;
use crate::result::{Check, ProbeResult};
use crate::shard::Shard;

/// Results kept per probe for the status page.
pub const RECENT_RESULTS: usize = 10;

pub struct ServeState {
    pub config_path: PathBuf,
    /// The share of the images this process probes (`--shard`).
    pub shard: Shard,
    config: RwLock<Arc<Config>>,
    series: Mutex<Series>,
    counters: RwLock<RunCounters>,
    /// `limits.max_bytes_per_second`, shared by every pull of the process.
    bandwidth: RwLock<Option<Arc<Bandwidth>>>,
}

#[derive(Default)]
struct Series {
    latest: BTreeMap<SeriesKey, ProbeResult>,
    history: History,
    recent: BTreeMap<String, VecDeque<ProbeResult>>,
    late_runs: BTreeMap<String, u64>,
    reloads: BTreeMap<&'static str, u64>,
    /// When each (series, layer digest) was last read in full through its frontend
    /// (or first seen, if never): the coverage the round budget's rotation promises.
    layer_reads: BTreeMap<(SeriesKey, String), f64>,
    /// Per discovery probe: what its rule stands for now, and when each was last probed.
    discovery: BTreeMap<String, RuleCoverage>,
    /// Per probe: the units (images, canaries) this shard owned at its last run.
    owned: BTreeMap<String, usize>,
    /// Per probe: whether its last run could not start for a problem of
    /// pullprobe's own (a file it names, a probe it cannot plan).
    config_errors: BTreeMap<String, bool>,
}

/// A discovery rule's candidates and when each was last probed (or first seen,
/// if not yet): the catalog's rotation promises every one within a bounded number of runs.
#[derive(Debug, Clone, Default)]
struct RuleCoverage {
    registry: String,
    rounds_to_cover: u64,
    probed: BTreeMap<String, f64>,
}

/// `limits.max_bytes_per_second` as a cap every pull shares; none for 0.
fn bandwidth_cap(config: &Config) -> Option<Arc<Bandwidth>> {
    let rate = config.limits.max_bytes_per_second;
    (rate > 0).then(|| Arc::new(Bandwidth::new(rate)))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ServeState {
    pub fn new(config_path: PathBuf, config: Config, shard: Shard) -> Self {
        ServeState {
            config_path,
            shard,
            bandwidth: RwLock::new(bandwidth_cap(&config)),
            config: RwLock::new(Arc::new(config)),
            series: Mutex::new(Series::default()),
            counters: RwLock::new(RunCounters::default()),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The cap on bytes per second every pull shares, if configured.
    pub fn bandwidth(&self) -> Option<Arc<Bandwidth>> {
        self.bandwidth.read().map(|b| b.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The counters only serve keeps (cheap to clone: clones share the counts).
    pub fn counters(&self) -> RunCounters {
        self.counters.read().map(|c| c.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Swap in a new config; series of probes it no longer has disappear. The
    /// run counters then start again from zero (Prometheus handles the reset),
    /// so no series of a removed probe lingers.
    pub fn replace_config(&self, config: Config) {
        let names: Vec<String> = config.probes.iter().map(|p| p.name.clone()).collect();
        let removed = self.config().probes.iter().any(|p| !names.contains(&p.name));
        if removed {
            match self.counters.write() {
                Ok(mut c) => *c = RunCounters::default(),
                Err(p) => *p.into_inner() = RunCounters::default(),
            }
        }
        if self.bandwidth().map(|b| b.rate()).unwrap_or(0) != config.limits.max_bytes_per_second {
            let cap = bandwidth_cap(&config);
            match self.bandwidth.write() {
                Ok(mut b) => *b = cap,
                Err(p) => *p.into_inner() = cap,
            }
        }
        match self.config.write() {
            Ok(mut c) => *c = Arc::new(config),
            Err(p) => *p.into_inner() = Arc::new(config),
        }
        let mut s = lock(&self.series);
        s.latest.retain(|k, _| names.contains(&k.probe));
        s.history.retain(|k, _| names.contains(&k.probe));
        s.recent.retain(|k, _| names.contains(k));
        s.late_runs.retain(|k, _| names.contains(k));
        s.layer_reads.retain(|k, _| names.contains(&k.0.probe));
        s.discovery.retain(|k, _| names.contains(k));
        s.owned.retain(|k, _| names.contains(k));
        s.config_errors.retain(|k, _| names.contains(k));
        s.reloads.entry("success").and_modify(|n| *n += 1).or_insert(1);
    }

    pub fn reload_failed(&self) {
        *lock(&self.series).reloads.entry("failure").or_default() += 1;
    }

    /// Record one run of `probe`. Its series not in `results` (a `dns` frontend
    /// that left DNS, a platform no longer in the index) disappear, except those of
    /// images its discovery rule (`coverage`) still stands for but did not probe this run.
    pub fn record(&self, probe: &str, results: &[ProbeResult], coverage: Option<&discover::Coverage>) {
        self.counters().observe(results);
        let mut s = lock(&self.series);
        let probed: BTreeSet<&str> = results.iter().map(|r| r.image.as_str()).collect();
        let carried: BTreeSet<&str> = coverage
            .map(|c| c.candidates.iter().map(String::as_str).filter(|i| !probed.contains(i)).collect())
            .unwrap_or_default();
        let replaced = |k: &SeriesKey| k.probe == probe && !carried.contains(k.image.as_str());
        let previous: History =
            s.history.iter().filter(|(k, _)| replaced(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
        let next = history::advance(&previous, results);
        s.history.retain(|k, _| !replaced(k));
        s.history.extend(next);
        s.latest.retain(|k, _| !replaced(k));
        for r in results {
            s.latest.insert(SeriesKey::of(r), r.clone());
        }
        let now = history::unix_seconds(time::OffsetDateTime::now_utc());
        let mut current = std::collections::BTreeSet::new();
        for r in results {
            let key = SeriesKey::of(r);
            for layer in &r.layers {
                let slot = (key.clone(), layer.digest.clone());
                let read = layer.check.is_some_and(|c| c != Check::Skipped) && layer.bytes >= layer.size;
                match s.layer_reads.get_mut(&slot) {
                    Some(at) if read => *at = now,
                    Some(_) => {}
                    None => {
                        s.layer_reads.insert(slot.clone(), now);
                    }
                }
                current.insert(slot);
            }
        }
        s.layer_reads.retain(|slot, _| !replaced(&slot.0) || current.contains(slot));
        match coverage {
            Some(rule) => {
                let registry = results.first().map(|r| r.registry.clone()).unwrap_or_default();
                let coverage = s.discovery.entry(probe.to_string()).or_default();
                if !registry.is_empty() {
                    coverage.registry = registry;
                }
                coverage.rounds_to_cover = rule.rounds_to_cover;
                coverage.probed.retain(|image, _| rule.candidates.contains(image));
                for image in &rule.candidates {
                    let at = coverage.probed.entry(image.clone()).or_insert(now);
                    if probed.contains(image.as_str()) {
                        *at = now;
                    }
                }
            }
            None => {
                s.discovery.remove(probe);
            }
        }
        let recent = s.recent.entry(probe.to_string()).or_default();
        for r in results {
            if recent.len() == RECENT_RESULTS {
                recent.pop_front();
            }
            recent.push_back(r.clone());
        }
    }

    /// How many units of `probe` this shard owns now (`None`: unknown this run, a
    /// discovery failed; the last count stands).
    pub fn record_owned(&self, probe: &str, owned: Option<usize>) {
        if let Some(owned) = owned {
            lock(&self.series).owned.insert(probe.to_string(), owned);
        }
    }

    /// Whether the last run of `probe` could not start for a problem of pullprobe's own.
    pub fn record_config_error(&self, probe: &str, failed: bool) {
        lock(&self.series).config_errors.insert(probe.to_string(), failed);
    }

    pub fn count_late_run(&self, probe: &str) {
        *lock(&self.series).late_runs.entry(probe.to_string()).or_default() += 1;
    }

    /// Every series' history (alerts need the state before a run too).
    pub fn history(&self) -> History {
        lock(&self.series).history.clone()
    }

    /// The last result of every series, in label order.
    pub fn latest(&self) -> Vec<ProbeResult> {
        lock(&self.series).latest.values().cloned().collect()
    }

    /// The last results of each probe, newest last.
    pub fn recent(&self) -> BTreeMap<String, Vec<ProbeResult>> {
        lock(&self.series).recent.iter().map(|(k, v)| (k.clone(), v.iter().cloned().collect())).collect()
    }

    /// `/metrics`: the gauges of every series' last run, the run counters, and serve's own.
    pub fn metric_families(&self) -> Vec<GaugeFamily> {
        let (latest, history, late, reloads, reads, discovery, owned, config_errors) = {
            let s = lock(&self.series);
            (
                s.latest.values().cloned().collect::<Vec<_>>(),
                s.history.clone(),
                s.late_runs.clone(),
                s.reloads.clone(),
                s.layer_reads.clone(),
                s.discovery.clone(),
                s.owned.values().sum::<usize>(),
                s.config_errors.clone(),
            )
        };
        let now = history::unix_seconds(time::OffsetDateTime::now_utc());
        let mut oldest: BTreeMap<SeriesKey, f64> = BTreeMap::new();
        for ((key, _), at) in reads {
            let age = (now - at).max(0.0);
            let entry = oldest.entry(key).or_insert(age);
            *entry = entry.max(age);
        }
        let mut families = metrics::gauge_families(&latest, &history);
        let config = self.config();
        let severities = config.probes.iter().map(|p| (p.name.clone(), p.severity)).collect();
        families.push(metrics::probe_info(&latest, &severities));
        families.extend(metrics::shard_families(self.shard, &config.defaults.location, owned));
        families.push(GaugeFamily {
            name: "coverage_oldest_layer_read_age_seconds",
            help: "Seconds since the least recently read layer of the image was last read in full through this frontend",
            samples: oldest
                .into_iter()
                .map(|(key, age)| Sample {
                    labels: key.labels().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                    value: age,
                })
                .collect(),
        });
        let labels = |probe: &str, coverage: &RuleCoverage| {
            vec![("probe".to_string(), probe.to_string()), ("registry".to_string(), coverage.registry.clone())]
        };
        families.push(GaugeFamily {
            name: "discovery_candidates",
            help: "Images a discovery rule (tags, catalog, kubernetes) stands for now, probed this run or not",
            samples: discovery
                .iter()
                .map(|(probe, c)| Sample { labels: labels(probe, c), value: c.probed.len() as f64 })
                .collect(),
        });
        families.push(GaugeFamily {
            name: "discovery_rounds_to_cover",
            help: "Runs a discovery rule needs to probe every candidate once (above 1 for a catalog sample)",
            samples: discovery
                .iter()
                .map(|(probe, c)| Sample { labels: labels(probe, c), value: c.rounds_to_cover as f64 })
                .collect(),
        });
        families.push(GaugeFamily {
            name: "discovery_coverage_age_seconds",
            help: "Seconds since the least recently probed candidate of a discovery rule was last probed (or first seen)",
            samples: discovery
                .iter()
                .map(|(probe, c)| {
                    let oldest = c.probed.values().fold(now, |a, b| a.min(*b));
                    Sample { labels: labels(probe, c), value: (now - oldest).max(0.0) }
                })
                .collect(),
        });
        let waited = self.bandwidth().map(|b| b.waited().as_secs_f64());
        families.push(GaugeFamily {
            name: "serve_bandwidth_wait_seconds",
            help: "Seconds pulls have waited for limits.max_bytes_per_second since the cap was set (slowed, never skipped)",
            samples: waited.map(|value| Sample { labels: Vec::new(), value }).into_iter().collect(),
        });
        families.push(GaugeFamily {
            name: "config_error",
            help: "1 if the probe's last run could not start for a problem of pullprobe's own \
                   (a file its registry's tls: or auth: names, a probe that cannot be planned), else 0",
            samples: config_errors
                .into_iter()
                .map(|(probe, failed)| Sample {
                    labels: vec![("probe".into(), probe)],
                    value: f64::from(u8::from(failed)),
                })
                .collect(),
        });
        families.push(GaugeFamily {
            name: "serve_late_runs",
            help: "Scheduled runs of a probe that started late because its previous run overran the interval",
            samples: late
                .into_iter()
                .map(|(probe, n)| Sample { labels: vec![("probe".into(), probe)], value: n as f64 })
                .collect(),
        });
        families.push(GaugeFamily {
            name: "serve_config_reloads",
            help: "Config reloads by result since start (a failed reload keeps the old config)",
            samples: ["success", "failure"]
                .into_iter()
                .map(|r| Sample {
                    labels: vec![("result".into(), r.to_string())],
                    value: reloads.get(r).copied().unwrap_or(0) as f64,
                })
                .collect(),
        });
        families
    }
}
