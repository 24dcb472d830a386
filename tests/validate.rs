//! `pullprobe validate` on configs that load and run, but not as their author
//! likely meant: each such key gets a warning on stderr naming
//! `FILE:LINE:COLUMN`, and the exit code stays 0 (a warning is no config error).

use std::path::Path;
use std::process::Command;

/// `pullprobe validate -c probes.yaml` on `text`: (exit code, stdout, stderr, the file's path).
fn validate(text: &str) -> (i32, String, String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, text).expect("writing probes.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_pullprobe"))
        .args(["validate", "-c"])
        .arg(&path)
        .current_dir(dir.path())
        .env_remove("PULLPROBE_LOG")
        .output()
        .expect("running pullprobe validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        display(&path),
    )
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

const PROBES: &str = "probes:\n  - name: app\n    image: 127.0.0.1:5000/team/app:1\n";

#[test]
fn after_without_a_pushgateway_warns_at_the_after_key() {
    // Line 6, column 10: the value of `after`.
    let text = format!(
        "{PROBES}alerting:\n  alertmanager: {{urls: [http://am:9093]}}\n  after: {{default: 2, integrity: 1}}\n"
    );
    let (code, stdout, stderr, file) = validate(&text);
    assert_eq!(code, 0, "a warning is not an error:\n{stdout}{stderr}");
    assert!(stdout.contains(": OK (1 probes"), "{stdout}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "one warning:\n{stderr}");
    let warning = warnings[0];
    assert!(warning.starts_with(&format!("warning: {file}:6:10: `after`")), "file:line:column of `after`: {warning}");
    for what in ["pushgateway", "first", "now"] {
        assert!(warning.contains(what), "the warning says why (no {what:?}): {warning}");
    }

    // `after: 3` as a plain number, same warning.
    let text = format!("{PROBES}alerting:\n  alertmanager: {{urls: [http://am:9093]}}\n  after: 3\n");
    let (code, _, stderr, file) = validate(&text);
    assert_eq!(code, 0);
    assert!(stderr.contains(&format!("warning: {file}:6:10: `after`")), "{stderr}");
}

#[test]
fn after_is_quiet_where_runs_are_counted_or_nothing_waits() {
    for (what, alerting) in [
        (
            "with a Pushgateway",
            "  alertmanager: {urls: [http://am:9093]}\n  pushgateway: {url: http://pg:9091}\n  after: 2\n",
        ),
        ("after: 1 pages at once anyway", "  alertmanager: {urls: [http://am:9093]}\n  after: 1\n"),
        ("no after", "  alertmanager: {urls: [http://am:9093]}\n"),
    ] {
        let (code, stdout, stderr, _) = validate(&format!("{PROBES}alerting:\n{alerting}"));
        assert_eq!(code, 0, "{what}:\n{stdout}{stderr}");
        assert!(!stderr.contains("warning"), "{what}: no warning expected:\n{stderr}");
    }
}
