//! Outputs: where results go. Every output is a function of results (and,
//! for metrics and alerts, of the series' [`history`]); `json`, `table`,
//! `metrics` and `icinga` only render, while `pushgateway` and `alertmanager`
//! also deliver what they render, and `delivery` runs both for one `now` run.

pub mod alertmanager;
pub mod canary_metrics;
pub mod delivery;
pub mod gauge_family;
pub mod history;
pub mod http;
pub mod icinga;
pub mod json;
pub mod metrics;
pub mod pushgateway;
pub mod table;

/// One line for a human about one result: probe, frontend, reason and the
/// failing layer (`golden-base 10.0.0.1: blob_digest_mismatch layer sha256:…`),
/// or `golden-base 10.0.0.1: ok in 1.93s`. Alert summaries and the `check`
/// status line use it.
pub fn one_line(result: &crate::result::ProbeResult) -> String {
    let head = format!("{} {}", result.probe, result.frontend);
    let Some(reason) = result.reason else {
        return format!("{head}: ok in {:.2}s", result.duration_seconds);
    };
    let mut line = format!("{head}: {reason}");
    let failed_referrer = result.referrers.iter().flatten().find(|r| !r.ok && r.reason == result.reason);
    if let Some(layer) = result.layers.iter().find(|l| !l.ok && l.reason.is_some()) {
        line.push_str(&format!(" layer {}", layer.digest));
    } else if let Some(referrer) = failed_referrer {
        line.push_str(&format!(" referrer {} ({})", referrer.digest, referrer.source.as_str()));
    } else if let (Some(crate::reason::Reason::SignatureMissing), Some(error)) = (result.reason, &result.error) {
        // What is missing, without where it was looked for (the description has that).
        let what: String = error.split(';').next().unwrap_or_default().chars().take(200).collect();
        line.push_str(&format!(": {what}"));
    } else if let Some(code) = &result.registry_error {
        line.push_str(&format!(" ({code})"));
    }
    line
}

/// Bytes for humans: `412 B`, `3.1 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_bytes_picks_units() {
        assert_eq!(super::human_bytes(412), "412 B");
        assert_eq!(super::human_bytes(3 * 1024 * 1024 + 100 * 1024), "3.1 MiB");
    }
}
