//! The reference pages against the code: every failure reason has its row in
//! docs/results.md, every metric family pullprobe exports has its row (with
//! its type and labels) in docs/metrics-and-alerts.md, neither page lists one
//! the code does not have, and every relative link in README.md and docs/
//! points at a file that exists.
//!
//! The reasons come from `Reason::ALL`; the metric families from rendering
//! sample results with pullprobe's own metric encoding, plus the families
//! that only `serve` builds (found in the source as `GaugeFamily` literals).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use pullprobe::output::history::{self, History};
use pullprobe::output::metrics::{self, RunCounters};
use pullprobe::reason::Reason;
use pullprobe::result::ProbeResult;
use regex::Regex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The rows of the Markdown tables in `text` whose header's first cell is
/// `header`: the code span of each row's first cell, and the row's other cells.
fn table_rows(text: &str, header: &str) -> BTreeMap<String, Vec<String>> {
    let cells = |line: &str| -> Vec<String> {
        line.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut rows = BTreeMap::new();
    let mut in_table = false;
    let mut previous_was_row = false;
    for line in text.lines() {
        let is_row = line.starts_with('|');
        if is_row && !previous_was_row {
            in_table = cells(line).first().map(String::as_str) == Some(header);
        } else if is_row && in_table {
            let row = cells(line);
            if let Some(code) = row.first().and_then(|c| c.strip_prefix('`')?.strip_suffix('`')) {
                let again = rows.insert(code.to_string(), row[1..].to_vec());
                assert!(again.is_none(), "`{code}` has two rows");
            }
        }
        previous_was_row = is_row;
    }
    assert!(!rows.is_empty(), "no table with the header `| {header} |`");
    rows
}

#[test]
fn every_reason_has_a_row_in_results() {
    let rows = table_rows(&read("docs/results.md"), "reason");
    let code: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    let missing: Vec<&&str> = code.iter().filter(|r| !rows.contains_key(**r)).collect();
    assert!(missing.is_empty(), "reasons without a row in docs/results.md: {missing:?}");
    let unknown: Vec<&String> = rows.keys().filter(|r| !code.contains(r.as_str())).collect();
    assert!(unknown.is_empty(), "docs/results.md has rows for reasons the code does not have: {unknown:?}");
}

/// One result as `now -o json` prints it, changed by `edit`.
fn result(edit: serde_json::Value) -> ProbeResult {
    let mut value = serde_json::json!({
        "probe": "golden-base", "kind": "pull", "image": "registry.example.org/base:1",
        "registry": "prod", "frontend": "10.0.0.1", "location": "eqiad", "platform": "linux/amd64",
        "ok": true, "reason": null, "phase": null, "error": null, "registry_error": null, "retries": 0,
        "manifest_digest": format!("sha256:{}", "a".repeat(64)),
        "started_at": "2026-11-23T06:00:00Z", "duration_seconds": 1.5,
        "phases": {"dns": 0.001, "connect": 0.01, "manifest": 0.02, "config": 0.01, "first_byte": 0.05, "transfer": 1.4},
        "tls_not_after": "2027-01-01T00:00:00Z", "ratelimit_remaining": 90,
        "layers": [{"digest": format!("sha256:{}", "c".repeat(64)),
                    "media_type": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 100, "ok": true,
                    "reason": null, "check": "full", "bytes": 100, "uncompressed_bytes": 300,
                    "duration_seconds": 0.4, "cache_status": "HIT", "served_by": "10.0.0.1"}]
    });
    for (key, v) in edit.as_object().expect("an object") {
        value[key] = v.clone();
    }
    serde_json::from_value(value).expect("a result")
}

/// Families by full name: their type, and the label names of their samples
/// (`None` when the code built the family but no sample shows its labels).
fn families_in_code() -> BTreeMap<String, (String, Option<BTreeSet<String>>)> {
    let results = [
        result(serde_json::json!({"referrers": [{
            "digest": format!("sha256:{}", "d".repeat(64)), "artifact_type": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "source": "referrers_api", "ok": true, "reason": null, "verified_with": "/etc/pullprobe/cosign.pub",
            "subject": format!("sha256:{}", "a".repeat(64)),
        }]})),
        result(serde_json::json!({
            "frontend": "10.0.0.2", "ok": false, "reason": "blob_digest_mismatch", "phase": "blob", "retries": 1,
            "error": "layer 1: got another digest", "manifest_digest": format!("sha256:{}", "b".repeat(64)),
        })),
        result(serde_json::json!({
            "probe": "write-path", "kind": "canary", "image": "registry.example.org/pullprobe/canary",
            "phases": {"push": 0.5, "visible": 0.2},
        })),
        result(serde_json::json!({
            "probe": "write-path", "kind": "canary", "image": "registry.example.org/pullprobe/canary",
            "frontend": "10.0.0.2", "ok": false, "reason": "not_replicated", "phase": "consistency",
            "phases": {"push": 0.5},
        })),
    ];
    let history = history::advance(&History::new(), &results);
    let mut gauges = metrics::gauge_families(&results, &history);
    gauges.extend(metrics::shard_families(pullprobe::shard::Shard { index: 1, total: 2 }, "eqiad", 3));
    let counters = RunCounters::default();
    counters.observe(&results);
    let text = metrics::encode_text(&gauges, Some(&counters));

    let mut families: BTreeMap<String, (String, Option<BTreeSet<String>>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|l| l.split_once(' ')) {
            families.insert(name.to_string(), (kind.to_string(), None));
        }
    }
    let sample = Regex::new(r"^([a-z_:][a-z0-9_:]*)\{([^}]*)\}").unwrap();
    let label = Regex::new(r#"([a-z_][a-z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
    for captures in text.lines().filter_map(|l| sample.captures(l)) {
        let name = &captures[1];
        let family = ["_bucket", "_sum", "_count", ""]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|base| families.contains_key(*base));
        let Some(family) = family else { panic!("sample {name} belongs to no family:\n{text}") };
        let labels = families.get_mut(family).unwrap().1.get_or_insert_with(BTreeSet::new);
        labels.extend(label.captures_iter(&captures[2]).map(|c| c[1].to_string()).filter(|l| l != "le"));
    }
    for family in &gauges {
        families.entry(metrics::full_name(family.name)).or_insert_with(|| ("gauge".to_string(), None));
    }
    // serve's own families (scheduling, reloads, coverage, alert delivery).
    let literal = Regex::new(r#"GaugeFamily\s*\{\s*name:\s*"([a-z0-9_]+)""#).unwrap();
    for file in rust_files(&root().join("src")) {
        let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for captures in literal.captures_iter(&source) {
            families.entry(metrics::full_name(&captures[1])).or_insert_with(|| ("gauge".to_string(), None));
        }
    }
    for expected in ["pullprobe_probe_success", "pullprobe_probe_failures_total", "pullprobe_serve_late_runs"] {
        assert!(families.contains_key(expected), "the families found in the code lack {expected}: {families:?}");
    }
    families
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// `probe`, `image`: the label names in a cell of the table.
fn label_names(cell: &str) -> BTreeSet<String> {
    Regex::new(r"`([a-z_][a-z0-9_]*)`").unwrap().captures_iter(cell).map(|c| c[1].to_string()).collect()
}

#[test]
fn every_metric_family_has_a_row_in_metrics_and_alerts() {
    let rows = table_rows(&read("docs/metrics-and-alerts.md"), "family");
    let families = families_in_code();
    let mut wrong = Vec::new();
    for (name, (kind, labels)) in &families {
        let Some(cells) = rows.get(name) else {
            wrong.push(format!("{name}: no row"));
            continue;
        };
        if cells.first().map(String::as_str) != Some(kind.as_str()) {
            wrong.push(format!("{name}: the code makes it a {kind}, the row says {:?}", cells.first()));
        }
        let documented = cells.get(1).map(|c| label_names(c)).unwrap_or_default();
        if let Some(labels) = labels.as_ref().filter(|l| **l != documented) {
            wrong.push(format!("{name}: labels {labels:?} in the code, {documented:?} in the row"));
        }
    }
    for name in rows.keys().filter(|n| !families.contains_key(*n)) {
        wrong.push(format!("{name}: a row for a family the code does not export"));
    }
    assert!(wrong.is_empty(), "docs/metrics-and-alerts.md disagrees with the code:\n{}", wrong.join("\n"));
}

#[test]
fn relative_links_point_at_files() {
    let mut pages = vec![root().join("README.md")];
    let docs = std::fs::read_dir(root().join("docs")).expect("docs/");
    pages.extend(
        docs.map(|e| e.expect("a directory entry").path()).filter(|p| p.extension().is_some_and(|e| e == "md")),
    );
    assert!(pages.len() >= 6, "README.md and the five reference pages: {pages:?}");
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        for captures in link.captures_iter(&text) {
            let target = &captures[1];
            if target.starts_with('#') || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap_or(target);
            checked += 1;
            if !page.parent().expect("a directory").join(file).exists() {
                broken.push(format!("{}: {target}", page.display()));
            }
        }
    }
    assert!(checked > 0, "no relative links found in {pages:?}");
    assert!(broken.is_empty(), "links to files that do not exist:\n{}", broken.join("\n"));
}

/// Every file under `dir` (recursively) whose name ends with one of `endings`.
fn files_ending(dir: &Path, endings: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files.extend(files_ending(&path, endings));
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| endings.iter().any(|e| n.ends_with(e))) {
            files.push(path);
        }
    }
    files
}

/// The headings of a Markdown page, without their `#`s.
fn headings(page: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
    text.lines().filter(|l| l.starts_with('#')).map(|l| l.trim_start_matches('#').trim().to_string()).collect()
}

/// Comments and messages point readers at sections of the pages:
/// `(docs/metrics-and-alerts.md, "Which alerting path to use")`, or
/// `(README, "…")` for the README.md nearest the file. Each such section must
/// exist, so a page that moves or renames a section cannot leave stale pointers.
#[test]
fn pointers_to_sections_name_sections_that_exist() {
    let mut files = files_ending(&root().join("src"), &[".rs"]);
    files.extend(files_ending(&root().join("contrib"), &[".yml", ".yaml", ".conf"]));
    files.extend(files_ending(&root().join("charts"), &[".yaml", ".yml", ".tpl", ".txt", ".json"]));
    // A pointer may wrap over comment lines: join them first.
    let wrap = Regex::new(r"\s*\n\s*(?://[!/]?|#|\*)?\s*").unwrap();
    let pointer = Regex::new(r#"(README(?:\.md)?|docs/[a-z-]+\.md),\s+\\?"([^"\\]+)\\?""#).unwrap();
    let mut checked = 0;
    let mut stale = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let joined = wrap.replace_all(&text, " ");
        for captures in pointer.captures_iter(&joined) {
            let (page, section) = (&captures[1], &captures[2]);
            let target = if page.starts_with("docs/") {
                root().join(page)
            } else {
                // The README.md nearest the file: the chart's for charts/, else the project's.
                file.ancestors().map(|dir| dir.join("README.md")).find(|p| p.is_file()).expect("a README.md")
            };
            checked += 1;
            if !headings(&target).contains(section) {
                stale.push(format!(
                    "{}: ({page}, {section:?}): no such section in {}",
                    file.display(),
                    target.display()
                ));
            }
        }
    }
    assert!(checked >= 5, "found only {checked} pointers in {} files", files.len());
    assert!(stale.is_empty(), "pointers to sections that do not exist:\n{}", stale.join("\n"));
}
