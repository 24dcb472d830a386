//! Outputs: where results go. Every output is a function of results (and,
//! for metrics and alerts, of the series' [`history`]); `json`, `table`,
//! `metrics` and `icinga` only render, while `pushgateway` and `alertmanager`
//! also deliver what they render, and `delivery` runs both for one `now` run.

pub mod alertmanager;
pub mod delivery;
pub mod history;
pub mod http;
pub mod icinga;
pub mod json;
pub mod metrics;
pub mod pushgateway;
pub mod table;

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
