//! The schedule: every probe on its own interval, started at an offset
//! spread over the interval (no thundering herd at start, and the same offset
//! after a restart), one run at a time per probe (a run that overruns its
//! interval makes the next one late, counted, never stacked), all probes
//! sharing one limit on concurrent pulls.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{Config, ProbeConfig};
use crate::digest::Digest;
use crate::probe::discover::Coverage;
use crate::probe::plan::{self, Overrides};
use crate::probe::run::{self, RoundOptions};
use crate::result::ProbeResult;
use crate::serve::alerts::AlertSender;
use crate::serve::state::ServeState;

/// Run every probe of `config` until `stop` turns true.
pub async fn run_schedule(state: Arc<ServeState>, alerts: Arc<AlertSender>, mut stop: watch::Receiver<bool>) {
    let config = state.config();
    let permits = Arc::new(Semaphore::new(config.defaults.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for probe in &config.probes {
        let (state, alerts, permits, probe, config) =
            (state.clone(), alerts.clone(), permits.clone(), probe.clone(), config.clone());
        let mut stop = stop.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = probe_loop(&state, &alerts, &config, &probe, permits) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
    let _ = stop.wait_for(|s| *s).await;
    // Dropping the set aborts every probe still running: in-flight pulls stop now.
    tasks.shutdown().await;
}

/// Where in its interval a probe starts: a stable hash of its name.
pub fn start_offset(name: &str, interval: Duration) -> Duration {
    let hash = Digest::of(name.as_bytes()).hex();
    let fraction = u64::from_str_radix(&hash[..8], 16).unwrap_or(0) as f64 / u64::from(u32::MAX) as f64;
    interval.mul_f64(fraction.clamp(0.0, 1.0))
}

async fn probe_loop(
    state: &ServeState,
    alerts: &AlertSender,
    config: &Config,
    probe: &ProbeConfig,
    permits: Arc<Semaphore>,
) {
    let interval = config.interval_for(probe);
    let mut ticker = tokio::time::interval_at(Instant::now() + start_offset(&probe.name, interval), interval);
    // A run longer than the interval delays the next one; missed ticks are not replayed.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Runs are numbered from the wall clock's slot at start (so a restart keeps the
    // rotation's place) and then counted: a run longer than the interval must not
    // skip a window of the catalog's sample or of the round budget, as reading the
    // clock again would.
    let mut round = plan::clock_slot(interval);
    loop {
        let scheduled = ticker.tick().await;
        if scheduled.elapsed() > interval / 10 + Duration::from_secs(1) {
            state.count_late_run(&probe.name);
        }
        let (results, coverage, owned) = run_once(state, config, probe, &permits, round).await;
        round = round.wrapping_add(1);
        state.record_owned(&probe.name, owned);
        if results.is_empty() && owned != Some(0) {
            // Nothing was probed (the probe could not be planned; logged): keep the
            // last series rather than wiping them, so staleness alerts see the gap.
            // (A probe all of whose images another shard owns has no series here.)
            continue;
        }
        for r in &results {
            tracing::info!(
                probe = %r.probe,
                image = %r.image,
                frontend = %r.frontend,
                platform = %r.platform,
                ok = r.ok,
                reason = r.reason.map(|x| x.as_str()).unwrap_or(""),
                duration_seconds = r.duration_seconds,
                bytes = r.bytes(),
                error = r.error.as_deref().unwrap_or(""),
                "probe result"
            );
        }
        state.record(&probe.name, &results, coverage.as_ref());
        alerts.after_run(config, probe, &results, coverage.as_ref(), &state.history(), interval).await;
    }
}

/// Run number `round` of `probe` (the images of this shard), planned and run
/// like any other, every job holding one of the shared permits: its results,
/// what a discovery rule stands for, and how many units this shard owns (`None`
/// when a discovery failed). No results when the probe cannot be planned (logged).
async fn run_once(
    state: &ServeState,
    config: &Config,
    probe: &ProbeConfig,
    permits: &Arc<Semaphore>,
    round: u64,
) -> (Vec<ProbeResult>, Option<Coverage>, Option<usize>) {
    let overrides = Overrides { shard: state.shard, ..Overrides::default() };
    let planned = match plan::check_probe_files(config, probe) {
        Ok(()) => plan::plan_probe(config, probe, &overrides, round).await,
        Err(e) => Err(e),
    };
    state.record_config_error(&probe.name, planned.is_err());
    let mut planned = match planned {
        Ok(planned) => planned,
        Err(e) => {
            // pullprobe's own problem: logged and exported, never paged to the registry's owners.
            tracing::error!(probe = %probe.name, error = %e, "cannot run the probe (pullprobe_config_error)");
            return (Vec::new(), None, None);
        }
    };
    let coverage = planned.coverage.remove(&probe.name);
    let owned = planned.owned.get(&probe.name).map(|units| units.len());
    let options = RoundOptions {
        permits: Some(permits.clone()),
        bandwidth: state.bandwidth(),
        ..RoundOptions::of(config, round)
    };
    (run::run(planned.jobs, options).await, coverage, owned)
}
