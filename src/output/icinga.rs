//! The output of `pullprobe check`, a Monitoring Plugins / Icinga / Nagios
//! plugin: one status line `PULLPROBE OK|WARNING|CRITICAL|UNKNOWN - …` with the
//! worst result first and perfdata after `|`, then one line per result (the
//! plugin "long output"), and the exit code of the state.
//!
//! A failed pull (any registry-side reason, `connect_error` included) is
//! CRITICAL; `-w`/`-c` compare the slowest frontend's time; UNKNOWN is for
//! pullprobe's own problems and is rendered by [`unknown`].

use std::fmt::Write as _;

use crate::output::one_line;
use crate::result::ProbeResult;

/// Plugin states; the discriminant is the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PluginState {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl PluginState {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginState::Ok => "OK",
            PluginState::Warning => "WARNING",
            PluginState::Critical => "CRITICAL",
            PluginState::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> u8 {
        self as u8
    }
}

/// `-w` and `-c`: the slowest frontend's seconds above which the check warns / is critical.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

/// The plugin's verdict: its state and everything it prints.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutput {
    pub state: PluginState,
    pub text: String,
}

/// The status line for pullprobe's own problems (bad config, cannot start).
pub fn unknown(message: &str) -> CheckOutput {
    CheckOutput { state: PluginState::Unknown, text: format!("PULLPROBE UNKNOWN - {}\n", plain(message)) }
}

/// Nothing to judge because another shard owns every image asked for (`--shard`).
pub fn not_owned(shard: &str) -> CheckOutput {
    CheckOutput {
        state: PluginState::Ok,
        text: format!("PULLPROBE OK - shard {} owns none of these images; another shard checks them\n", plain(shard)),
    }
}

/// The check ran out of time (`-t`) before every pull had a result: a pull that
/// does not finish in time is a registry-side `timeout`, so CRITICAL.
pub fn timed_out(seconds: f64, thresholds: Thresholds) -> CheckOutput {
    let text = format!(
        "PULLPROBE CRITICAL - timeout: no result within {s}s | time={s}s;{};{};0\n",
        thresholds.warning.map(number).unwrap_or_default(),
        thresholds.critical.map(number).unwrap_or_default(),
        s = number(seconds),
    );
    CheckOutput { state: PluginState::Critical, text }
}

/// The check's output for `results` (of one image or one probe).
pub fn render(results: &[ProbeResult], thresholds: Thresholds) -> CheckOutput {
    if results.is_empty() {
        return unknown("nothing was probed");
    }
    // Worst first: failures in the order they came, then passes, slowest first.
    let mut ordered: Vec<&ProbeResult> = results.iter().collect();
    ordered.sort_by(|a, b| a.ok.cmp(&b.ok).then(b.duration_seconds.total_cmp(&a.duration_seconds)));
    let slowest = ordered.iter().map(|r| r.duration_seconds).fold(0.0, f64::max);
    let failed = results.iter().filter(|r| !r.ok).count();
    let mut frontends_failed: Vec<&str> = results.iter().filter(|r| !r.ok).map(|r| r.frontend.as_str()).collect();
    frontends_failed.sort_unstable();
    frontends_failed.dedup();

    let over = |limit: Option<f64>| limit.is_some_and(|l| slowest > l);
    let state = if failed > 0 || over(thresholds.critical) {
        PluginState::Critical
    } else if over(thresholds.warning) {
        PluginState::Warning
    } else {
        PluginState::Ok
    };

    let worst = ordered[0];
    let mut summary = if failed > 0 {
        one_line(worst)
    } else {
        format!("{} {}: slowest of {} in {:.2}s", worst.probe, worst.frontend, results.len(), slowest)
    };
    if failed > 0 && results.len() > 1 {
        let _ = write!(summary, " ({failed} of {} failed)", results.len());
    }
    if failed == 0 && state != PluginState::Ok {
        let limit = if state == PluginState::Critical { thresholds.critical } else { thresholds.warning };
        let _ = write!(summary, " (over {}s)", number(limit.unwrap_or_default()));
    }

    let mut layers: Vec<&str> = results.iter().flat_map(|r| r.layers.iter().map(|l| l.digest.as_str())).collect();
    layers.sort_unstable();
    layers.dedup();
    let bytes: u64 = results.iter().map(ProbeResult::bytes).sum();
    let frontends = {
        let mut all: Vec<&str> = results.iter().map(|r| r.frontend.as_str()).collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    };
    let perfdata = format!(
        "time={}s;{};{};0 bytes={bytes}B;;;0 layers={};;;0 frontends_failed={};;;0;{frontends}",
        number(slowest),
        thresholds.warning.map(number).unwrap_or_default(),
        thresholds.critical.map(number).unwrap_or_default(),
        layers.len(),
        frontends_failed.len(),
    );

    let mut text = format!("PULLPROBE {} - {} | {perfdata}\n", state.as_str(), plain(&summary));
    for result in &ordered {
        let _ = writeln!(text, "{} [{}] {}", plain(&one_line(result)), result.platform, result.image);
        if let Some(error) = &result.error {
            let _ = writeln!(text, "  {}", plain(error));
        }
    }
    CheckOutput { state, text }
}

/// A number as perfdata writes it: `1.93`, `5`, no exponent.
fn number(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() { "0".to_string() } else { text.to_string() }
}

/// Text fit for plugin output: `|` separates perfdata, so it never appears in text.
fn plain(text: &str) -> String {
    text.replace('|', "/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::history::tests::result;
    use crate::reason::Reason;

    #[test]
    fn failure_is_critical_and_first() {
        let ok = result("10.0.0.2", None, "2026-11-23T06:00:00Z");
        let mut bad = result("10.0.0.1", Some(Reason::ConnectError), "2026-11-23T06:00:00Z");
        bad.duration_seconds = 0.5;
        let out = render(&[ok, bad], Thresholds { warning: Some(5.0), critical: Some(10.0) });
        assert_eq!(out.state, PluginState::Critical);
        let first = out.text.lines().next().unwrap();
        assert_eq!(
            first,
            "PULLPROBE CRITICAL - golden-base 10.0.0.1: connect_error (1 of 2 failed) | \
             time=2s;5;10;0 bytes=0B;;;0 layers=0;;;0 frontends_failed=1;;;0;2"
        );
    }

    #[test]
    fn thresholds_apply_to_the_slowest() {
        let mut slow = result("10.0.0.1", None, "2026-11-23T06:00:00Z");
        slow.duration_seconds = 6.25;
        let warn = render(std::slice::from_ref(&slow), Thresholds { warning: Some(5.0), critical: Some(10.0) });
        assert_eq!(warn.state, PluginState::Warning);
        assert!(warn.text.starts_with("PULLPROBE WARNING - golden-base 10.0.0.1: slowest of 1 in 6.25s (over 5s) |"));
        let crit = render(std::slice::from_ref(&slow), Thresholds { warning: None, critical: Some(6.0) });
        assert_eq!(crit.state, PluginState::Critical);
        let ok = render(&[slow], Thresholds::default());
        assert_eq!(ok.state, PluginState::Ok);
        assert!(ok.text.contains("| time=6.25s;;;0 "), "{}", ok.text);
    }

    #[test]
    fn unknown_is_three() {
        let out = unknown("probes.yaml:3:1: bad | thing");
        assert_eq!(out.state.exit_code(), 3);
        assert_eq!(out.text, "PULLPROBE UNKNOWN - probes.yaml:3:1: bad / thing\n");
    }
}
