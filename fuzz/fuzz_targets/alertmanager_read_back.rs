//! The Alertmanager read-back (`GET /api/v2/alerts`): the active alerts a replica
//! holds, which decide `failing_since` and what to resolve. A body that is refused
//! says so in a bounded message; a list that parses prints as JSON that parses to
//! the same alerts; the batch computed against it
//! for one passing and two failing results sends each of their series at most
//! once, every time in it is RFC 3339, and no firing alert ends before it starts.

#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use pullprobe::config::AlertAfter;
use pullprobe::output::alertmanager::{AlertSettings, batch, parse_alerts};
use pullprobe::output::history::{SeriesKey, parse_rfc3339};
use pullprobe_fuzz::{check_message, results};

/// 2026-11-23T06:05:00Z and five minutes on.
const NOW: f64 = 1_795_413_900.0;
const ENDS_AT: f64 = NOW + 300.0;

fuzz_target!(|body: &[u8]| {
    let active = match parse_alerts(body) {
        Ok(active) => active,
        Err(message) => return check_message("alerts", &message),
    };
    let printed = serde_json::to_vec(&active).expect("JSON into memory");
    let again = parse_alerts(&printed).expect("printed alerts parse");
    assert_eq!(again, active);

    let results = results();
    let settings = AlertSettings {
        static_labels: BTreeMap::from([("team".to_string(), "sre".to_string())]),
        runbook_url: Some("https://wiki.example.org/pullprobe".into()),
        after: AlertAfter::default(),
        severities: BTreeMap::new(),
        owned_probes: BTreeSet::from(["golden-base".to_string()]),
        carried: BTreeSet::new(),
        shard: pullprobe::shard::Shard::ALL,
    };
    let sent = batch(&results, None, Some(&active), &settings, ENDS_AT, NOW);
    assert!(sent.fired.is_disjoint(&sent.held));
    let ours: BTreeSet<SeriesKey> = results.iter().map(SeriesKey::of).collect();
    let mut seen = BTreeSet::new();
    for alert in &sent.alerts {
        let ends = alert.ends_at.as_deref().and_then(parse_rfc3339).expect("every alert sent has an end");
        if let Some(starts) = alert.starts_at.as_deref() {
            let starts = parse_rfc3339(starts).unwrap_or_else(|| panic!("startsAt {starts:?}"));
            assert!(starts <= ends, "{alert:?}");
        }
        if let Some(since) = alert.annotations.get("failing_since").filter(|_| alert.starts_at.is_some()) {
            assert!(parse_rfc3339(since).is_some(), "failing_since {since:?}");
        }
        let Some(key) = SeriesKey::from_labels(&alert.labels) else { continue };
        if ours.contains(&key) && alert.labels.get("location").map(String::as_str) == Some("eqiad") {
            let name = alert.labels.get("alertname").cloned().unwrap_or_default();
            assert!(seen.insert((name, key)), "one series sent twice: {:?}", sent.alerts);
        }
    }
});
