//! The Pushgateway read-back (`GET /api/v1/metrics`) that gives a CronJob run the
//! history of its series and its groups. Only our job's and location's groups
//! are read; every value kept is finite;
//! the history written back in the same JSON reads back the same; the next run's
//! history and gauges follow from it without a panic; a refused body is a bounded
//! message.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::output::history::{History, SeriesHistory, advance};
use pullprobe::output::metrics::{self, CONSECUTIVE_FAILURES, FAILING_SINCE, LAST_FAILURE_INFO, LAST_SUCCESS};
use pullprobe::output::pushgateway::{encode_protobuf, parse_read_back};
use pullprobe_fuzz::{check_message, results};
use serde_json::{Value, json};

fuzz_target!(|body: &[u8]| {
    let read = match parse_read_back(body, "pullprobe", "eqiad") {
        Ok(read) => read,
        Err(message) => return check_message("read-back", &message),
    };
    for group in &read.groups {
        assert_eq!((group.get("job"), group.get("location").unwrap_or_default()), (Some("pullprobe"), "eqiad"));
        assert!(group.path().starts_with("/metrics/job@base64/"), "{group:?}");
    }
    let history = read.history;
    for state in history.values() {
        assert!(state.last_success.is_none_or(f64::is_finite), "{state:?}");
        assert!(state.failing_since.is_none_or(f64::is_finite), "{state:?}");
    }
    let printed = serde_json::to_vec(&print(&history)).expect("JSON into memory");
    let again = parse_read_back(&printed, "pullprobe", "eqiad").expect("a printed read-back parses");
    assert_eq!(again.history, history, "printed as {}", String::from_utf8_lossy(&printed));

    let results = results();
    let next = advance(&history, &results);
    let gauges = metrics::gauge_families(&results, &next);
    let _ = encode_protobuf(&gauges);
    let _ = metrics::encode_text(&gauges, None);
});

/// The history as `/api/v1/metrics` shows it: one group with a family per gauge.
fn print(history: &History) -> Value {
    let mut families: Vec<(&str, Vec<Value>)> = vec![
        (CONSECUTIVE_FAILURES, vec![]),
        (LAST_SUCCESS, vec![]),
        (FAILING_SINCE, vec![]),
        (LAST_FAILURE_INFO, vec![]),
    ];
    for (key, state) in history {
        let labels: serde_json::Map<String, Value> =
            key.labels().iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect();
        let sample = |labels: &serde_json::Map<String, Value>, value: String| json!({"labels": labels, "value": value});
        let SeriesHistory { consecutive_failures, last_success, failing_since, last_reason } = state;
        families[0].1.push(sample(&labels, consecutive_failures.to_string()));
        if let Some(at) = last_success {
            families[1].1.push(sample(&labels, at.to_string()));
        }
        if let Some(at) = failing_since {
            families[2].1.push(sample(&labels, at.to_string()));
        }
        if let Some(reason) = last_reason {
            let mut labels = labels.clone();
            labels.insert("reason".into(), Value::String(reason.as_str().into()));
            families[3].1.push(sample(&labels, "1".into()));
        }
    }
    let mut group = serde_json::Map::new();
    group.insert("labels".into(), json!({"job": "pullprobe", "probe": "golden-base", "location": "eqiad"}));
    for (name, samples) in families {
        group.insert(metrics::full_name(name), json!({"type": "GAUGE", "metrics": samples}));
    }
    json!({"status": "success", "data": [group]})
}
