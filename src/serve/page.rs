//! The status page at `/`: each probe, its frontends, the last result with its
//! reason and duration, and the last few results in full JSON (like
//! blackbox_exporter's debug output). A function of results; plain HTML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::output::human_bytes;
use crate::result::ProbeResult;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(config: &Config, latest: &[ProbeResult], recent: &BTreeMap<String, Vec<ProbeResult>>) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pullprobe</title>\n<style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}\
         .ok{color:#1a7f37}.fail{color:#cf222e;font-weight:bold}pre{max-height:30em;overflow:auto;background:#f6f8fa;padding:.5em}\
         </style></head><body>\n<h1>pullprobe</h1>\n",
    );
    let _ = writeln!(
        out,
        "<p>location <b>{}</b> · {} probes · <a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a></p>",
        escape(&config.defaults.location),
        config.probes.len()
    );
    out.push_str(
        "<table><tr><th>probe</th><th>image</th><th>frontend</th><th>platform</th><th>result</th>\
         <th>duration</th><th>bytes</th><th>started</th></tr>\n",
    );
    for probe in &config.probes {
        let rows: Vec<&ProbeResult> = latest.iter().filter(|r| r.probe == probe.name).collect();
        if rows.is_empty() {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td colspan=\"7\">no result yet ({} probe)</td></tr>",
                escape(&probe.name),
                probe.kind.key()
            );
        }
        for r in rows {
            let result = match (&r.reason, &r.error) {
                (Some(reason), error) => format!(
                    "<span class=\"fail\">{}</span><br>{}",
                    escape(reason.as_str()),
                    escape(error.as_deref().unwrap_or(""))
                ),
                (None, _) => "<span class=\"ok\">ok</span>".to_string(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{result}</td><td>{:.2}s</td><td>{}</td><td>{}</td></tr>",
                escape(&r.probe),
                escape(&r.image),
                escape(&r.frontend),
                escape(&r.platform),
                r.duration_seconds,
                human_bytes(r.bytes()),
                escape(&r.started_at_rfc3339())
            );
        }
    }
    out.push_str("</table>\n<h2>Recent results</h2>\n");
    for (probe, results) in recent {
        let _ = writeln!(out, "<h3>{}</h3>", escape(probe));
        for r in results.iter().rev() {
            let json = serde_json::to_string_pretty(r).unwrap_or_default();
            let status = match r.reason {
                Some(reason) => format!("<span class=\"fail\">{reason}</span>"),
                None => "<span class=\"ok\">ok</span>".to_string(),
            };
            let _ = writeln!(
                out,
                "<details><summary>{} {} {} {status}</summary><pre>{}</pre></details>",
                escape(&r.started_at_rfc3339()),
                escape(&r.frontend),
                escape(&r.platform),
                escape(&json)
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}
