//! pullprobe's own files are pullprobe's problem, not the registry's: a
//! `ca_file`, client certificate or key, `password_file` or `docker_config`
//! that is missing, unreadable or malformed is a config error at the key's
//! `file:line:column` — `validate` and `now` exit 2, `check` is UNKNOWN, and
//! `serve` keeps running, exports `pullprobe_config_error` for the probe and
//! pages no one (a real Alertmanager holds no alert). The registry is real and
//! healthy throughout: only the files are wrong.

mod common;

use std::path::Path;
use std::time::Duration;

use common::monitoring::{Alertmanager, Webhook};
use common::serve::Serve;
use common::{Registry, push_small_image, run_pullprobe};

/// probes.yaml with one probe of `small:latest` through a registry whose
/// `tls:`/`auth:` is `registry_keys` (indented under the registry).
fn config(dir: &Path, registry: &Registry, registry_keys: &str, alerting: &str) -> String {
    let path = dir.join("probes.yaml");
    let text = format!(
        "defaults:\n  interval: 1s\n  location: test-site\n\
         registries:\n  - name: local\n    url: {url}\n{registry_keys}\
         probes:\n  - name: small\n    registry: local\n    image: small:latest\n{alerting}",
        url = registry.url()
    );
    std::fs::write(&path, text).expect("writing probes.yaml");
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_of_our_own_is_a_config_error_in_every_mode() {
    let registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.pem").display().to_string();
    let not_json = dir.path().join("config.json");
    std::fs::write(&not_json, "{\"auths\": {\"r\": {\"auth\": \"c2VjcmV0OnMzY3IzdA==\"}").unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let cases = [
        ("ca_file", format!("    tls: {{ca_file: {absent}}}\n"), "7:"),
        ("ca_file", format!("    tls: {{ca_file: {}}}\n", not_pem.display()), "7:"),
        ("password_file", format!("    auth: {{username: prober, password_file: {absent}}}\n"), "7:"),
        ("docker_config", format!("    auth: {{docker_config: {}}}\n", not_json.display()), "7:"),
    ];
    for (key, keys, line) in &cases {
        let config = config(dir.path(), &registry, keys, "");
        let at = format!("probes.yaml:{line}");
        let (code, _, stderr) = run_pullprobe(&["validate", "-c", &config]);
        assert_eq!(code, 2, "validate, {key}: {stderr}");
        assert!(stderr.contains(&at) && stderr.contains(&format!("`{key}`")), "validate, {key}: {stderr}");
        assert!(!stderr.contains("c2VjcmV0") && !stderr.contains("s3cr3t"), "a Docker config is never quoted");

        let (code, stdout, stderr) = run_pullprobe(&["now", "-c", &config, "-o", "json"]);
        assert_eq!(code, 2, "now, {key}: not a probe failure:\n{stdout}{stderr}");
        assert!(stderr.contains(&at) && stderr.contains("pullprobe's own"), "now, {key}: {stderr}");

        let (code, stdout, _) = run_pullprobe(&["check", "--probe", "small", "--config", &config]);
        assert_eq!(code, 3, "check, {key}: {stdout}");
        assert!(stdout.starts_with("PULLPROBE UNKNOWN") && stdout.contains(*key), "check, {key}: {stdout}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_exports_the_config_error_and_pages_no_one() {
    let registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let hook = Webhook::start();
    let alertmanager = Alertmanager::start(&hook, false);
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.pem").display().to_string();
    let alerting = format!("alerting:\n  alertmanager: {{urls: [{}]}}\n", alertmanager.url());
    let config = config(dir.path(), &registry, &format!("    tls: {{ca_file: {absent}}}\n"), &alerting);
    let serve = Serve::start(Path::new(&config));
    let metrics = serve.wait_for(
        "/metrics",
        |text| text.contains("pullprobe_config_error{probe=\"small\"} 1"),
        Duration::from_secs(20),
    );
    assert!(!metrics.contains("pullprobe_probe_success{"), "no result, so no series to page on:\n{metrics}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(alertmanager.alerts().is_empty(), "no page: {:#?}", alertmanager.alerts());
    assert!(serve.log().contains("pullprobe_config_error"), "logged: {}", serve.log());

    // The file appears: the next run probes, and the error clears.
    let ca = common::pki::TestCa::new(dir.path(), "any");
    std::fs::copy(&ca.cert, &absent).unwrap();
    serve.wait_for(
        "/metrics",
        |text| text.contains("pullprobe_config_error{probe=\"small\"} 0"),
        Duration::from_secs(20),
    );
}
