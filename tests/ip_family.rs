//! `ip_family` keeps every connection of a registry to one address family, in
//! every frontend form: `single` (the default), `dns`, URL frontends and
//! `--frontend` URLs. The registry listens on 127.0.0.1 and is named
//! `localhost`, which resolves to 127.0.0.1 only here: with `ipv4` the pull
//! passes; with `ipv6` there is no address to use, and the pull fails with
//! `dns_error` (it pages) instead of quietly connecting over IPv4. An address
//! list with no address of the family is a `validate` error.

mod common;

use common::{Registry, json_results, push_small_image, run_pullprobe};

/// probes.yaml for one probe of `image` in a registry reached as `localhost`.
fn config(registry: &Registry, family: &str, frontends: &str) -> (tempfile::TempDir, String) {
    common::cli::config_file(&format!(
        "registries:\n  - name: local\n    url: http://localhost:{port}\n    ip_family: {family}\n{frontends}\
         probes:\n  - name: small\n    registry: local\n    image: small:latest\n",
        port = registry.port()
    ))
}

/// `now -c CONFIG -o json EXTRA…`: the exit code and the reason of each result (`ok` if none).
fn reasons(config: &str, extra: &[&str]) -> (i32, Vec<String>, String) {
    let mut args = vec!["now", "-c", config, "-o", "json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = run_pullprobe(&args);
    let results = if code <= 1 { json_results(&stdout) } else { Vec::new() };
    let reasons = results.iter().map(|r| r["reason"].as_str().unwrap_or("ok").to_string()).collect();
    (code, reasons, format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_family_applies_to_every_frontend_form() {
    let registry = Registry::start();
    push_small_image(&registry, "small", "latest").await;
    let url_frontend =
        format!("    frontends:\n      - {{name: by-url, url: 'http://localhost:{}'}}\n", registry.port());
    for (form, frontends) in [("single", String::new()), ("dns", "    frontends: dns\n".into()), ("url", url_frontend)]
    {
        let (_dir, v4) = config(&registry, "ipv4", &frontends);
        let (code, got, output) = reasons(&v4, &[]);
        assert_eq!((code, got), (0, vec!["ok".to_string()]), "{form}, ipv4:\n{output}");

        let (_dir, v6) = config(&registry, "ipv6", &frontends);
        let (code, got, output) = reasons(&v6, &[]);
        assert_eq!((code, got), (1, vec!["dns_error".to_string()]), "{form}, ipv6:\n{output}");
        assert!(output.contains("no IPv6 address"), "{form}: {output}");
    }
    // A --frontend URL keeps to the registry's family too.
    let (_dir, v6) = config(&registry, "ipv6", "");
    let frontend = format!("http://localhost:{}", registry.port());
    let (code, got, output) = reasons(&v6, &["--frontend", &frontend]);
    assert_eq!((code, got), (1, vec!["dns_error".to_string()]), "--frontend URL, ipv6:\n{output}");
}

#[test]
fn an_address_list_with_no_address_of_the_family_does_not_validate() {
    let registry = Registry::start();
    let (_dir, path) = config(&registry, "ipv6", "    frontends: [127.0.0.1, 127.0.0.2]\n");
    let (code, _, stderr) = run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("probes.yaml:5:") && stderr.contains("no address is IPv6"), "{stderr}");
    // One address of the family is enough: the other is left out.
    let (_dir, path) = config(&registry, "ipv6", "    frontends: [127.0.0.1, '[::1]:5000']\n");
    let (code, _, stderr) = run_pullprobe(&["validate", "-c", &path]);
    assert_eq!(code, 0, "{stderr}");
}
