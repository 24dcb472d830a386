//! The human table of `pullprobe now`: one line per result, failures explained under it.

use std::fmt::Write as _;

use crate::output::human_bytes;
use crate::result::ProbeResult;

pub fn render(results: &[ProbeResult]) -> String {
    let headers = ["PROBE", "FRONTEND", "PLATFORM", "RESULT", "TIME", "BYTES", "LAYERS"];
    let rows: Vec<[String; 7]> = results
        .iter()
        .map(|r| {
            let layers_ok = r.layers.iter().filter(|l| l.ok).count();
            [
                r.probe.clone(),
                r.frontend.clone(),
                r.platform.clone(),
                match r.reason {
                    Some(reason) => format!("FAIL {reason}"),
                    None => "ok".to_string(),
                },
                format!("{:.2}s", r.duration_seconds),
                human_bytes(r.bytes()),
                format!("{layers_ok}/{}", r.layers.len()),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let _ = write!(s, "{cell:<width$}  ", width = widths[i]);
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&headers.map(String::from)));
    for (row, result) in rows.iter().zip(results) {
        let _ = writeln!(out, "{}", line(row));
        if let Some(error) = &result.error {
            let _ = writeln!(out, "  {}: {error}", result.image);
        }
        if let Some(code) = &result.registry_error {
            let _ = writeln!(out, "  registry error: {code}");
        }
        if result.retries > 0 {
            let _ = writeln!(out, "  retried {} time(s)", result.retries);
        }
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    let _ = writeln!(out, "{} result(s), {} failed", results.len(), failed);
    out
}
