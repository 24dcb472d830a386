//! probes.yaml end to end: the DESIGN.md example, every error kind with its
//! position, and hostile input.

use std::time::{Duration, Instant};

use super::*;
use crate::platform::Platform;

/// The probes.yaml example of DESIGN.md, verbatim.
const DESIGN_EXAMPLE: &str = r#"
defaults:
  interval: 5m            # serve mode
  timeout: 2m             # one image through one frontend
  platforms: [linux/amd64]  # or: all (attestation manifests, platform unknown/unknown, are skipped)
  location: eqiad         # where this prober runs; default "default" (never the pod's host name: CronJob pods change it). A label on alerts and pushes.
limits:                   # one place for every cap (defaults shown)
  max_manifest_bytes: 4MiB        # manifests, configs, token and error bodies
  max_pull_bytes: 16GiB           # compressed bytes of one image through one frontend
  max_round_bytes: 20GiB          # serve: compressed bytes of one whole round
  max_uncompressed_ratio: 0       # off by default: sparse files (lastlog) compress > 1000x legitimately
  max_uncompressed_bytes: 64GiB   # per layer; streaming keeps memory flat, the timeout bounds CPU
  max_redirects: 5
registries:
  - name: prod                      # the `registry` label; ad-hoc references use host[:port]
    url: https://docker-registry.example.org
    frontends: dns                  # opt-in: every A/AAAA address, re-resolved each round, label = the IP.
                                    # Default `single`: one connection as any client makes (right for CDNs/cloud registries).
    # frontends: [10.0.0.1, 10.0.0.2:8443, {name: cache-eqiad, url: https://cache.example.org},
    #             {name: harbor-proxy, url: https://harbor.example.org, repository_prefix: dockerhub-proxy/},
    #             {name: mirror, url: https://mirror.example.org, ns: docker.io}]   # containerd-style ?ns=
    ip_family: any                  # any | ipv4 | ipv6
    auth: {docker_config: true}     # true = $DOCKER_CONFIG/config.json; or a PATH (config.json or .dockerconfigjson)
    # auth: {username: x, password_file: /run/secrets/p}   # or password_env: VAR
    # auth: {ecr: {}} | {gcp: {}} | {acr: {}}               # cloud workload identity, no helper binary
    # auth: {credential_provider: {command: PATH, args: [...], env: {...}}}  # kubelet plugin, credentialprovider.kubelet.k8s.io/v1
    # auth: auto                                            # by host: ECR, GAR/GCR, ACR, else docker_config
    tls: {ca_file: /etc/ssl/ca.pem} # client_cert, client_key for mTLS
probes:
  - name: golden-base
    registry: prod
    image: wikimedia/buster:latest
    severity: critical              # alert severity for this probe (default critical)
    expect:                         # optional content and freshness assertions
      paths: [/srv/mediawiki/wikiversions.php, {path: /etc/app.conf, absent: true}]
      max_age: 30d                  # config `created`
  - name: app
    image: 127.0.0.1:5000/app:stable  # a full reference needs no registry entry
  - name: write-path
    registry: prod
    canary: {repository: pullprobe/canary, consistency_deadline: 30s, size: 4MiB, chunk_size: 1MiB, sessions: 3}
  - name: releases
    registry: prod
    image: releng/mediawiki              # no tag: the tags rule picks them
    tags: {match: '^[0-9]{4}-[0-9]{2}-[0-9]{2}-', newest: 2}
  - name: cluster-images
    kubernetes: {namespaces: [prod]}     # images the workloads use
alerting:
  alertmanager: {urls: [http://am-0:9093, http://am-1:9093], labels: {team: sre},
                 runbook_url: https://wiki.example.org/pullprobe, resolve_timeout: 1h}
  pushgateway: {url: http://pushgateway:9091, job: pullprobe}
serve:
  allow_targets: ["docker-registry.example.org/*"]   # what /probe may fetch besides the listed probes
"#;

fn load(yaml: &str) -> Config {
    Config::from_str_named(yaml, "probes.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// The error of `yaml` as (line, column, message).
fn error(yaml: &str) -> (u64, u64, String) {
    match Config::from_str_named(yaml, "probes.yaml") {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => {
            let p = e.position.unwrap_or_else(|| panic!("no position: {e}"));
            assert_eq!(e.to_string(), format!("probes.yaml:{}:{}: {}", p.line, p.column, e.message));
            (p.line, p.column, e.message)
        }
    }
}

std::thread_local! {
    static MISMATCHES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Check one error; mismatches are collected and reported together by [`finish`].
fn assert_error(yaml: &str, line: u64, column: u64, needle: &str) {
    let (l, c, message) = error(yaml);
    if !message.contains(needle) || (l, c) != (line, column) {
        let shown: String = yaml.chars().take(120).collect();
        MISMATCHES.with(|m| {
            m.borrow_mut().push(format!("{shown:?}\n  want {line}:{column} {needle:?}\n  got  {l}:{c} {message:?}"))
        });
    }
}

fn finish() {
    let mismatches = MISMATCHES.with(|m| std::mem::take(&mut *m.borrow_mut()));
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn design_example_parses() {
    let yaml = DESIGN_EXAMPLE.strip_prefix('\n').unwrap();
    let config = load(yaml);
    assert_eq!(config.defaults.interval, secs(300));
    assert_eq!(config.defaults.timeout, secs(120));
    assert_eq!(config.defaults.platforms, PlatformSelection::List(vec![Platform::linux_amd64()]));
    assert_eq!(config.defaults.location, "eqiad");
    assert_eq!(config.defaults.concurrency, 4);
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.max_manifest_bytes, 4 << 20);
    assert_eq!(config.limits.max_pull_bytes, 16 << 30);
    assert_eq!(config.limits.max_round_bytes, 20 << 30);
    assert_eq!(config.limits.max_uncompressed_ratio, 0.0);
    assert_eq!(config.limits.max_uncompressed_bytes, 64 << 30);
    assert_eq!(config.limits.max_redirects, 5);

    let [prod] = config.registries.as_slice() else { panic!("{:?}", config.registries) };
    assert_eq!(prod.name, "prod");
    assert_eq!(prod.url.as_str(), "https://docker-registry.example.org/");
    assert_eq!(prod.host(), "docker-registry.example.org");
    assert_eq!(prod.frontends, FrontendSet::Dns);
    assert_eq!(prod.ip_family, IpFamily::Any);
    assert_eq!(prod.auth, Some(Auth::DockerConfig(None)));
    assert_eq!(prod.tls.as_ref().and_then(|t| t.ca_file.as_deref()), Some(std::path::Path::new("/etc/ssl/ca.pem")));

    let names: Vec<&str> = config.probes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["golden-base", "app", "write-path", "releases", "cluster-images"]);

    let golden = config.probe("golden-base").unwrap();
    let (image, registry) = config.resolve_image(golden).unwrap();
    assert_eq!(image.to_string(), "docker-registry.example.org/wikimedia/buster:latest");
    assert_eq!(registry.map(|r| r.name.as_str()), Some("prod"));
    assert_eq!(golden.severity, Severity::Critical);
    assert_eq!(
        golden.expect.paths,
        [PathExpectation::exists("/srv/mediawiki/wikiversions.php"), PathExpectation::absent("/etc/app.conf"),]
    );
    assert_eq!(golden.expect.max_age, Some(secs(30 * 86_400)));
    assert_eq!(golden.position(), Some(Position { line: 29, column: 11 }));

    let app = config.probe("app").unwrap();
    let (image, registry) = config.resolve_image(app).unwrap();
    assert_eq!(image.to_string(), "127.0.0.1:5000/app:stable");
    assert!(registry.is_none());
    assert!(image.is_loopback());
    assert!(app.expect.is_empty());

    let canary = config.probe("write-path").unwrap();
    let ProbeKind::Canary(c) = &canary.kind else { panic!("{:?}", canary.kind) };
    assert_eq!(
        *c,
        CanaryConfig {
            repository: "pullprobe/canary".into(),
            consistency_deadline: secs(30),
            size: 4 << 20,
            chunk_size: 1 << 20,
            sessions: 3
        }
    );
    assert_eq!(canary.registry.as_deref(), Some("prod"));
    assert!(config.resolve_image(canary).is_err(), "a canary has no image");

    let releases = config.probe("releases").unwrap();
    let ProbeKind::Image { image, tags: Some(tags) } = &releases.kind else { panic!("{:?}", releases.kind) };
    assert_eq!(image, "releng/mediawiki");
    assert_eq!(tags.newest, 2);
    assert!(tags.pattern.is_match("2024-01-02-build"));
    assert!(!tags.pattern.is_match("latest"));
    let (image, _) = config.resolve_image(releases).unwrap();
    assert_eq!((image.tag.as_deref(), image.digest), (None, None), "the tags rule picks the tags");
    assert_eq!(image.name(), "docker-registry.example.org/releng/mediawiki");

    let cluster = config.probe("cluster-images").unwrap();
    let ProbeKind::Kubernetes(k) = &cluster.kind else { panic!("{:?}", cluster.kind) };
    assert_eq!(k.namespaces, ["prod"]);
    assert_eq!(cluster.registry, None);

    let am = config.alerting.alertmanager.as_ref().unwrap();
    let urls: Vec<&str> = am.urls.iter().map(|u| u.as_str()).collect();
    assert_eq!(urls, ["http://am-0:9093/", "http://am-1:9093/"]);
    assert_eq!(am.labels.get("team").map(String::as_str), Some("sre"));
    assert_eq!(am.runbook_url.as_ref().map(|u| u.as_str()), Some("https://wiki.example.org/pullprobe"));
    assert_eq!(am.resolve_timeout, secs(3600));
    let pg = config.alerting.pushgateway.as_ref().unwrap();
    assert_eq!((pg.url.as_str(), pg.job.as_str()), ("http://pushgateway:9091/", "pullprobe"));
    assert_eq!(config.alerting.after, AlertAfter { default: 1, integrity: 1 });

    assert!(config.serve.allows("docker-registry.example.org/wikimedia/buster:latest"));
    assert!(!config.serve.allows("evil.example.org/docker-registry.example.org/x"));
}

#[test]
fn commented_alternatives_parse() {
    let yaml = r#"
registries:
  - name: prod
    url: https://docker-registry.example.org
    frontends: [10.0.0.1, 10.0.0.2:8443, {name: cache-eqiad, url: https://cache.example.org},
                {name: harbor-proxy, url: https://harbor.example.org, repository_prefix: dockerhub-proxy/},
                {name: mirror, url: https://mirror.example.org, ns: docker.io}]   # containerd-style ?ns=
    auth: {username: x, password_file: /run/secrets/p}   # or password_env: VAR
    tls: {ca_file: /etc/ssl/ca.pem, client_cert: /c.pem, client_key: /k.pem}
  - name: v6
    url: https://[2001:db8::5]:5000
    frontends: ["[2001:db8::1]:443", 2001:db8::2, single-host-is-not-an-ip-so-see-below]
"#;
    // The last frontend is a host name, which is an error; the rest is checked without it.
    let (line, column, message) = error(yaml);
    assert_eq!((line, column), (12, 51));
    assert!(message.contains("a host name goes in {name: …, url: https://…}"), "{message}");
    let config = load(&yaml.replace(", single-host-is-not-an-ip-so-see-below", ""));

    let prod = config.registry("prod").unwrap();
    let FrontendSet::List(frontends) = &prod.frontends else { panic!("{:?}", prod.frontends) };
    let labels: Vec<String> = frontends.iter().map(FrontendSpec::label).collect();
    assert_eq!(labels, ["10.0.0.1", "10.0.0.2:8443", "cache-eqiad", "harbor-proxy", "mirror"]);
    assert_eq!(frontends[1], FrontendSpec::Address { ip: "10.0.0.2".parse().unwrap(), port: Some(8443) });
    let FrontendSpec::Endpoint { url, repository_prefix, .. } = &frontends[3] else { panic!() };
    assert_eq!(url.as_str(), "https://harbor.example.org/");
    assert_eq!(repository_prefix.as_deref(), Some("dockerhub-proxy/"));
    let FrontendSpec::Endpoint { ns, repository_prefix, .. } = &frontends[4] else { panic!() };
    assert_eq!((ns.as_deref(), repository_prefix.as_deref()), (Some("docker.io"), None));
    assert_eq!(
        prod.auth,
        Some(Auth::Basic { username: "x".into(), password: PasswordSource::File("/run/secrets/p".into()) })
    );
    assert_eq!(prod.tls.as_ref().and_then(|t| t.client_key.as_deref()), Some(std::path::Path::new("/k.pem")));

    let v6 = config.registry("v6").unwrap();
    assert_eq!(v6.host(), "[2001:db8::5]:5000");
    let FrontendSet::List(frontends) = &v6.frontends else { panic!() };
    assert_eq!(frontends.iter().map(FrontendSpec::label).collect::<Vec<_>>(), ["[2001:db8::1]:443", "2001:db8::2"]);

    let config = load(
        "registries: [{name: r, url: 'https://r.example.org', auth: {username: u, password_env: R_PASS}, ip_family: ipv6, frontends: single}]",
    );
    let r = config.registry("r").unwrap();
    assert_eq!(r.auth, Some(Auth::Basic { username: "u".into(), password: PasswordSource::Env("R_PASS".into()) }));
    assert_eq!((r.ip_family, &r.frontends, &r.tls), (IpFamily::Ipv6, &FrontendSet::Single, &None));
    let config = load(
        "registries: [{name: r, url: 'https://r.example.org', auth: {docker_config: /etc/pull/.dockerconfigjson}}]",
    );
    assert_eq!(
        config.registry("r").unwrap().auth,
        Some(Auth::DockerConfig(Some("/etc/pull/.dockerconfigjson".into())))
    );
    let config = load("registries: [{name: r, url: 'https://r.example.org', auth: {docker_config: false}}]");
    assert_eq!(config.registry("r").unwrap().auth, None);
}

#[test]
fn defaults_of_an_empty_file() {
    for yaml in ["", "# nothing\n", "~\n", "probes:\n", "defaults: {}\nlimits:\n"] {
        let config = load(yaml);
        assert_eq!(config.defaults, Defaults::default(), "{yaml:?}");
        assert_eq!(config.defaults.interval, secs(300));
        assert_eq!(config.defaults.timeout, secs(120));
        assert_eq!(config.defaults.platforms.to_string(), "linux/amd64");
        assert_eq!(config.defaults.location, "default");
        assert_eq!(config.defaults.concurrency, 4);
        assert_eq!(config.limits, Limits::default());
        assert!(config.registries.is_empty() && config.probes.is_empty());
        assert_eq!(config.alerting, AlertingConfig::default());
        assert_eq!(config.serve, ServeConfig::default());
    }
    let d = Config::default();
    assert_eq!((d.defaults, d.limits), (Defaults::default(), Limits::default()));
}

#[test]
fn probe_overrides_and_kinds() {
    let config = load(
        r#"
defaults: {interval: 10m, timeout: 1h30m, platforms: all, concurrency: 8}
limits: {max_manifest_bytes: 1MB, max_pull_bytes: 1048576, max_round_bytes: 2GiB, max_uncompressed_ratio: 1000, max_redirects: 0}
registries:
  - {name: prod, url: "https://docker-registry.example.org:8443/"}
  - {name: hub, url: "https://registry-1.docker.io"}
probes:
  - name: quick
    registry: prod
    image: docker-registry.example.org:8443/team/app@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff
    interval: 30s
    timeout: 500ms
    platforms: [linux/arm64, linux/arm/v7]
    severity: warning
  - {name: one-platform, image: "docker-registry.example.org:8443/x", platforms: linux/arm64/v8, severity: info}
  - {name: hub-alpine, registry: hub, image: alpine}
  - {name: explicit-hub, image: docker.io/alpine:3}
  - {name: cat, registry: prod, catalog: {match: '^team/', sample: 3, tag: stable}}
  - {name: cat-default, registry: prod, catalog: {}}
  - {name: all-ns, kubernetes: {}}
alerting:
  after: {default: 2, integrity: 1}
  alertmanager: {urls: ["https://am.example.org/alertmanager"]}
"#,
    );
    assert_eq!(config.defaults.platforms, PlatformSelection::All);
    assert_eq!(config.defaults.concurrency, 8);
    assert_eq!(config.limits.max_manifest_bytes, 1_000_000);
    assert_eq!(config.limits.max_pull_bytes, 1 << 20);
    assert_eq!(config.limits.max_uncompressed_ratio, 1000.0);
    assert_eq!(config.limits.max_redirects, 0);

    let quick = config.probe("quick").unwrap();
    assert_eq!(config.interval_for(quick), secs(30));
    assert_eq!(config.timeout_for(quick), Duration::from_millis(500));
    assert_eq!(config.platforms_for(quick).to_string(), "linux/arm64,linux/arm/v7");
    assert_eq!(quick.severity, Severity::Warning);
    let (image, registry) = config.resolve_image(quick).unwrap();
    assert_eq!(image.registry, "docker-registry.example.org:8443", "a leading registry host is accepted");
    assert_eq!(image.repository, "team/app");
    assert_eq!(image.tag, None);
    assert_eq!(registry.unwrap().name, "prod");

    let one = config.probe("one-platform").unwrap();
    assert_eq!(config.platforms_for(one), PlatformSelection::List(vec![Platform::parse("linux/arm64/v8").unwrap()]));
    assert_eq!((config.interval_for(one), config.timeout_for(one)), (secs(600), secs(5400)));
    let (image, registry) = config.resolve_image(one).unwrap();
    assert_eq!(registry.map(|r| r.name.as_str()), Some("prod"), "the registry with the image's host applies");
    assert_eq!(image.to_string(), "docker-registry.example.org:8443/x:latest");

    let (image, registry) = config.resolve_image(config.probe("hub-alpine").unwrap()).unwrap();
    assert_eq!((image.to_string(), registry.unwrap().name.as_str()), ("docker.io/library/alpine:latest".into(), "hub"));
    let (image, registry) = config.resolve_image(config.probe("explicit-hub").unwrap()).unwrap();
    assert_eq!((image.to_string(), registry.unwrap().name.as_str()), ("docker.io/library/alpine:3".into(), "hub"));

    let ProbeKind::Catalog(cat) = &config.probe("cat").unwrap().kind else { panic!() };
    assert_eq!((cat.sample, cat.tag.as_str()), (3, "stable"));
    assert!(cat.pattern.as_ref().unwrap().is_match("team/app"));
    let ProbeKind::Catalog(cat) = &config.probe("cat-default").unwrap().kind else { panic!() };
    assert_eq!((cat.sample, cat.tag.as_str(), cat.pattern.is_none()), (5, "latest", true));
    let ProbeKind::Kubernetes(k) = &config.probe("all-ns").unwrap().kind else { panic!() };
    assert!(k.namespaces.is_empty());

    assert_eq!(config.alerting.after, AlertAfter { default: 2, integrity: 1 });
    let am = config.alerting.alertmanager.as_ref().unwrap();
    assert_eq!(am.urls[0].as_str(), "https://am.example.org/alertmanager");
    assert_eq!(am.resolve_timeout, secs(2400), "4 × interval by default");

    assert_eq!(load("alerting: {after: 3}").alerting.after, AlertAfter { default: 3, integrity: 3 });
    assert_eq!(load("alerting: {after: {integrity: 1}}").alerting.after, AlertAfter { default: 1, integrity: 1 });
    assert_eq!(load("alerting: {after: {default: 4}}").alerting.after, AlertAfter { default: 4, integrity: 4 });
}

#[test]
fn syntax_and_shape_errors_have_positions() {
    // YAML syntax.
    assert_error("probes:\n  - name: [unclosed\n", 2, 11, "expected string scalar");
    assert_error("defaults:\n  interval: 5m\n   timeout: 2m\n", 3, 11, "");
    // A typo'd key, at the key.
    assert_error("defaults:\n  intervall: 5m\n", 2, 3, "unknown field `intervall`");
    assert_error("probes:\n  - name: a\n    imgae: x.org/a\n", 3, 5, "unknown field `imgae`");
    assert_error(
        "registries:\n  - name: r\n    url: https://r.org\n    frontends: [{name: c, url: https://c.org, prefix: x/}]\n",
        4,
        47,
        "unknown field `prefix`",
    );
    // Wrong types and enumerations.
    assert_error("probes:\n  - name: a\n    image: x.org/a\n    severity: critcal\n", 4, 15, "critical");
    assert_error("registries:\n  - {name: r, url: 'https://r.org', ip_family: ipv5}\n", 2, 48, "ipv6");
    assert_error("probes: {name: a}\n", 1, 9, "");
    assert_error("defaults:\n  concurrency: -1\n", 2, 16, "");
    assert_error("defaults:\n  interval: 5m\n  interval: 6m\n", 3, 3, "duplicate");
    assert_error("defaults:\n  timeout: 5m\n---\ndefaults:\n  timeout: 5m\n", 4, 1, "only single YAML document");
    assert_error("probes:\n  - image: x.org/a\n", 2, 5, "missing field `name`");
    finish();
}

#[test]
fn value_errors_say_what_was_expected() {
    let (line, column, message) = error("defaults:\n  timeout: 5 minutes\n");
    assert_eq!((line, column), (2, 12));
    assert_eq!(message, "`timeout`: expected a duration like 30s, 5m, 2h, 1h30m or 500ms, got \"5 minutes\"");
    assert_error("defaults:\n  interval: 0s\n", 2, 13, "`interval`: must be more than 0s");
    assert_error("defaults:\n  interval: -5m\n", 2, 13, "`interval`: expected a duration");
    assert_error("defaults:\n  timeout: 30\n", 2, 12, "`timeout`: expected a duration");
    assert_error("defaults:\n  platforms: [linux]\n", 2, 15, "`platforms`: expected a platform like linux/amd64");
    assert_error("defaults:\n  platforms: []\n", 2, 14, "`platforms`: the list is empty");
    assert_error("defaults:\n  concurrency: 0\n", 2, 16, "`concurrency`: expected a number from 1 to 256, got 0");
    assert_error("defaults:\n  location: ''\n", 2, 13, "`location`: must not be empty");
    assert_error("limits:\n  max_pull_bytes: 16 gigs\n", 2, 19, "`max_pull_bytes`: expected a size like 4MiB");
    assert_error("limits:\n  max_manifest_bytes: 0\n", 2, 23, "`max_manifest_bytes`: must be more than 0 bytes");
    assert_error(
        "limits:\n  max_pull_bytes: 32GiB\n",
        2,
        19,
        "`max_round_bytes` (21474836480) is less than `max_pull_bytes` (34359738368)",
    );
    assert_error("limits:\n  max_pull_bytes: 1GiB\n  max_round_bytes: 1MiB\n", 3, 20, "one pull must fit in a round");
    assert_error("limits:\n  max_uncompressed_ratio: 0.5\n", 2, 27, "`max_uncompressed_ratio`: expected 0 (off)");
    assert_error("limits:\n  max_redirects: 1000\n", 2, 18, "`max_redirects`: expected a number from 0 to 100");
    finish();
}

#[test]
fn registry_errors() {
    let reg = |body: &str| format!("registries:\n  - name: r\n    url: https://r.example.org\n{body}");
    assert_error(
        "registries:\n  - {name: r, url: 'https://a.org'}\n  - {name: r, url: 'https://b.org'}\n",
        3,
        12,
        "registry `r` is defined twice (first at line 2)",
    );
    assert_error("registries:\n  - {name: 'bad name', url: 'https://a.org'}\n", 2, 12, "registry name \"bad name\"");
    assert_error(
        "registries:\n  - {name: r, url: 'ftp://a.org'}\n",
        2,
        20,
        "`url`: expected an http:// or https:// URL, got scheme \"ftp\"",
    );
    assert_error("registries:\n  - {name: r, url: 'not a url'}\n", 2, 20, "`url`: expected an http:// or https:// URL");
    assert_error("registries:\n  - {name: r, url: 'https://a.org/v2/'}\n", 2, 20, "has a path");
    assert_error("registries:\n  - {name: r, url: 'https://u:p@a.org'}\n", 2, 20, "use `auth:`");
    assert_error(
        &reg("    frontends: [10.0.0.1, cache.example.org]\n"),
        4,
        27,
        "`frontends`: expected an IP address like 10.0.0.2",
    );
    assert_error(&reg("    frontends: [10.0.0.1, 10.0.0.1]\n"), 4, 27, "`10.0.0.1` is listed twice");
    assert_error(&reg("    frontends: [10.0.0.1:99999]\n"), 4, 17, "`frontends`");
    assert_error(&reg("    frontends: all\n"), 4, 16, "expected `dns`, `single`, or a list");
    assert_error(&reg("    frontends: []\n"), 4, 16, "the list is empty");
    assert_error(
        &reg("    frontends: [{name: m, url: 'https://m.org', ns: 'not a host'}]\n"),
        4,
        53,
        "`ns`: expected a registry host",
    );
    assert_error(
        &reg("    frontends: [{name: m, url: 'https://m.org', repository_prefix: 'UP/'}]\n"),
        4,
        68,
        "`repository_prefix`",
    );
    assert_error(
        &reg("    auth: {username: u, password_file: /p, password_env: P}\n"),
        4,
        58,
        "at most one password source",
    );
    assert_error(&reg("    auth: {username: u}\n"), 4, 22, "`username` needs `password_file` or `password_env`");
    assert_error(&reg("    auth: {password_env: P}\n"), 4, 26, "a password needs `username`");
    assert_error(&reg("    auth: {docker_config: true, username: u, password_env: P}\n"), 4, 43, "alternatives");
    assert_error(&reg("    auth: {docker_config: 3}\n"), 4, 27, "`docker_config`: expected true");
    assert_error(
        &reg("    auth: {username: u, password_env: 'A-B'}\n"),
        4,
        39,
        "`password_env`: expected an environment variable name",
    );
    assert_error(&reg("    tls: {client_cert: /c.pem}\n"), 4, 24, "`client_cert` and `client_key` go together");
    finish();
}

#[test]
fn probe_errors() {
    let with = |probes: &str| {
        format!("registries:\n  - name: prod\n    url: https://docker-registry.example.org\nprobes:\n{probes}")
    };
    assert_error(
        &with("  - {name: a, image: x.org/a}\n  - {name: a, image: x.org/b}\n"),
        6,
        12,
        "probe `a` is defined twice (first at line 5)",
    );
    assert_error(&with("  - {name: '', image: x.org/a}\n"), 5, 12, "probe name \"\"");
    assert_error(&with("  - {name: 'a/b', image: x.org/a}\n"), 5, 12, "probe name \"a/b\"");
    assert_error(
        &with("  - {name: a, registry: prd, image: x}\n"),
        5,
        25,
        "`registry`: no registry named `prd` (configured: prod)",
    );
    assert_error(
        &with("  - {name: a}\n"),
        5,
        12,
        "exactly one of `image`, `catalog`, `kubernetes`, `canary`; it has none",
    );
    assert_error(
        &with("  - {name: a, registry: prod, image: x, canary: {repository: c}}\n"),
        5,
        49,
        "probe `a` has both `image` and `canary`",
    );
    assert_error(
        &with("  - {name: a, image: wikimedia/buster}\n"),
        5,
        22,
        "`image`: \"wikimedia/buster\" names no registry host: add `registry:` (prod) or the host",
    );
    assert_error(&with("  - {name: a, image: alpine}\n"), 5, 22, "docker.io/alpine");
    assert_error(
        &with("  - {name: a, image: 'x.org/UPPER/case'}\n"),
        5,
        22,
        "`image`: invalid image reference \"x.org/UPPER/case\": repository name \"UPPER/case\" must be lowercase",
    );
    assert_error(&with("  - {name: a, registry: prod, image: 'a//b'}\n"), 5, 38, "empty path component");
    assert_error(
        &with(&format!("  - {{name: a, registry: prod, image: 'a:{}'}}\n", "t".repeat(129))),
        5,
        38,
        "tag is 129 characters",
    );
    assert_error(&with("  - {name: a, registry: prod, image: 'a@sha256:abc'}\n"), 5, 38, "not 64 lowercase hex");
    assert_error(
        &with("  - {name: a, registry: prod, image: 'a:1', tags: {match: x}}\n"),
        5,
        51,
        "`image` must have no tag or digest (got \"a:1\")",
    );
    assert_error(
        &with("  - {name: a, registry: prod, catalog: {}, tags: {match: x}}\n"),
        5,
        50,
        "`tags` goes with `image`",
    );
    assert_error(
        &with("  - {name: a, registry: prod, image: a, tags: {match: '(unclosed'}}\n"),
        5,
        55,
        "`match`: invalid regular expression",
    );
    assert_error(
        &with("  - {name: a, registry: prod, image: a, tags: {match: x, newest: 0}}\n"),
        5,
        66,
        "`newest`: expected a number from 1",
    );
    assert_error(&with("  - {name: a, catalog: {}}\n"), 5, 24, "`catalog` needs `registry:`");
    assert_error(&with("  - {name: a, canary: {repository: c}}\n"), 5, 23, "`canary` needs `registry:`");
    assert_error(
        &with("  - {name: a, registry: prod, canary: {repository: 'C'}}\n"),
        5,
        52,
        "`repository`: expected a repository path",
    );
    assert_error(
        &with("  - {name: a, registry: prod, canary: {repository: c, size: 1MiB, chunk_size: 2MiB}}\n"),
        5,
        79,
        "`chunk_size`: must be from 1 byte to `size`",
    );
    assert_error(
        &with("  - {name: a, registry: prod, canary: {repository: c, consistency_deadline: 0s}}\n"),
        5,
        77,
        "`consistency_deadline`: must be more than 0s",
    );
    assert_error(
        &with("  - {name: a, registry: prod, canary: {repository: c}, expect: {max_age: 1d}}\n"),
        5,
        64,
        "`expect` goes with pulled images",
    );
    assert_error(&with("  - {name: a, kubernetes: {namespaces: [Prod]}}\n"), 5, 41, "`namespaces`: \"Prod\"");
    assert_error(
        &with("  - {name: a, image: x.org/a, expect: {paths: [etc/x]}}\n"),
        5,
        48,
        "`paths`: expected an absolute path",
    );
    assert_error(&with("  - {name: a, image: x.org/a, expect: {paths: [{path: /x, absent: maybe}]}}\n"), 5, 67, "");
    assert_error(
        &with("  - {name: a, image: x.org/a, expect: {max_age: 30 days}}\n"),
        5,
        49,
        "`max_age`: expected a duration",
    );
    assert_error(&with("  - {name: a, image: x.org/a, timeout: 0s}\n"), 5, 40, "`timeout`: must be more than 0s");
    assert_error(&with("  - {name: a, image: x.org/a, platforms: [linux/amd64, all]}\n"), 5, 56, "`platforms`");
    finish();
}

#[test]
fn alerting_and_serve_errors() {
    assert_error(
        "alerting:\n  after: 0\n",
        2,
        10,
        "`after`: expected a number of failed runs from 1 to 1000, or {default: N, integrity: N}, got 0",
    );
    assert_error("alerting:\n  after: often\n", 2, 10, "got \"often\"");
    assert_error("alerting:\n  after: {default: 2, integrity: 0}\n", 2, 34, "`integrity`: expected a number from 1");
    assert_error("alerting:\n  after: {default: 2, pages: 1}\n", 2, 23, "unknown field `pages`");
    assert_error("alerting:\n  alertmanager: {urls: []}\n", 2, 17, "`urls` is empty");
    assert_error(
        "alerting:\n  alertmanager: {urls: ['am:9093']}\n",
        2,
        25,
        "`urls`: expected an http:// or https:// URL",
    );
    assert_error(
        "alerting:\n  alertmanager: {urls: ['http://am:9093'], labels: {probe: x}}\n",
        2,
        52,
        "`probe` is set by pullprobe itself",
    );
    assert_error(
        "alerting:\n  alertmanager: {urls: ['http://am:9093'], labels: {'bad-label': x}}\n",
        2,
        52,
        "is not a label name",
    );
    assert_error(
        "alerting:\n  alertmanager: {urls: ['http://am:9093'], resolve_timeout: soon}\n",
        2,
        61,
        "`resolve_timeout`",
    );
    assert_error("alerting:\n  pushgateway: {url: 'http://pg:9091', job: ''}\n", 2, 45, "`job`: must not be empty");
    assert_error("serve:\n  allow_targets: ['a b']\n", 2, 19, "`allow_targets`");
    assert_error("serve:\n  listen: ':9640'\n", 2, 3, "unknown field `listen`");
    finish();
}

#[test]
fn resolve_image_outside_a_file() {
    let mut config = Config::default();
    let probe = ProbeConfig::new("adhoc", ProbeKind::Image { image: "alpine".into(), tags: None });
    let e = config.resolve_image(&probe).unwrap_err();
    assert_eq!(e.position, None);
    assert!(e.to_string().starts_with("<command line>: `image`: \"alpine\" names no registry host"), "{e}");

    config.registries.push(RegistryConfig::new("local", url::Url::parse("http://127.0.0.1:5000").unwrap()));
    let mut probe = ProbeConfig::new("adhoc", ProbeKind::Image { image: "small".into(), tags: None });
    probe.registry = Some("local".into());
    let (image, registry) = config.resolve_image(&probe).unwrap();
    assert_eq!(image.to_string(), "127.0.0.1:5000/small:latest");
    assert_eq!(registry.unwrap().name, "local");
    probe.registry = Some("gone".into());
    let e = config.resolve_image(&probe).unwrap_err();
    assert!(e.message.contains("no registry named `gone` (configured: local)"), "{e}");

    let image = ImageReference::parse("127.0.0.1:5000/other").unwrap();
    assert_eq!(config.registry_for(&image).map(|r| r.name.as_str()), Some("local"));
    assert!(config.registry_for(&ImageReference::parse("alpine").unwrap()).is_none());
}

#[test]
fn load_reads_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, "defaults:\n  timeout: 5 minutes\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2:12: `timeout`: expected a duration like 30s, 5m, 2h, 1h30m or 500ms, got \"5 minutes\"",
            path.display()
        )
    );

    std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.file, path.display().to_string());
    assert_eq!(config.probes.len(), 5);

    let missing = dir.path().join("missing.yaml");
    let e = Config::load(&missing).unwrap_err();
    assert!(e.position.is_none() && e.message.starts_with("cannot read"), "{e}");

    std::fs::write(&path, b"defaults:\n  location: \xff\xfe\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    assert!(e.message.contains("not UTF-8"), "{e}");

    std::fs::write(&path, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
    assert!(Config::load(&path).unwrap_err().message.contains("larger than"));
}

#[test]
fn target_patterns() {
    let p = |s: &str| TargetPattern(s.into());
    assert!(p("docker-registry.example.org/*").matches("docker-registry.example.org/a/b:1"));
    assert!(p("*").matches("anything"));
    assert!(p("*/app:*").matches("x.org/team/app:1"));
    assert!(!p("x.org/*").matches("y.org/a"));
    assert!(p("x.org/a").matches("x.org/a") && !p("x.org/a").matches("x.org/ab"));
    assert!(!p(&"*a".repeat(50)).matches(&"a".repeat(49)), "no exponential backtracking");
}

/// Hostile input: every one is an error (or a harmless config), quickly, without a panic.
#[test]
fn hostile_input_is_refused_without_panic() {
    let bomb = "\
serve:
  allow_targets: &a [x, x, x, x, x, x, x, x, x, x]
probes:
  - &b {name: a, image: x.org/a, expect: {paths: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]}}
  - &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  - &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  - &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  - &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  - &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
  - &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
  - &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
";
    let mut anchors = String::from("alerting:\n  alertmanager:\n    labels: &l0 {a: b}\n    urls: [http://a]\n");
    for i in 1..400 {
        anchors.push_str(&format!("# {i}\n"));
    }
    let inputs: Vec<String> = vec![
        bomb.to_string(),
        "probes: ".to_string() + &"[".repeat(100_000),
        "probes: ".to_string() + &"{a: ".repeat(10_000),
        "- ".repeat(50_000),
        "defaults:\n  concurrency: 99999999999999999999999999999999999999999999\n".into(),
        "limits:\n  max_pull_bytes: 99999999999999999999999999999GiB\n".into(),
        "limits:\n  max_uncompressed_ratio: .nan\n".into(),
        "limits:\n  max_uncompressed_ratio: 1e999\n".into(),
        "alerting:\n  after: 99999999999999999999999999999999999999999999\n".into(),
        "alerting:\n  after: -1\n".into(),
        String::from_utf8_lossy(&(0..=255u8).cycle().take(4096).collect::<Vec<u8>>()).into_owned(),
        "\u{0}\u{1}\u{7f}probes:\u{0}".into(),
        "\u{feff}defaults: {location: x}\n".into(),
        "probes:\n  - name: a\n    image: ".to_string() + &"a/".repeat(100_000) + "a\n",
        format!("probes:\n  - {{name: a, image: x.org/a, tags: {{match: '{}'}}}}\n", "(a{1000}){1000}".repeat(10)),
        "---\n---\n---\n".into(),
        "!!binary aGVsbG8=\n".into(),
        "defaults: !custom {x: 1}\n".into(),
        "<<: {defaults: {}}\n".into(),
        "defaults: {<<: [*x]}\n".into(),
        "probes: [{name: a, image: &x x.org/a, registry: *x}]\n".into(),
        "? [a, b]\n: c\n".into(),
        "defaults:\n  interval: \"\\uD800\"\n".into(),
        anchors,
    ];
    for input in &inputs {
        let started = Instant::now();
        let result = std::panic::catch_unwind(|| Config::from_str_named(input, "hostile.yaml"));
        let shown: String = input.chars().take(60).collect();
        let result = result.unwrap_or_else(|_| panic!("panicked on {shown:?}"));
        assert!(started.elapsed() < Duration::from_secs(5), "slow on {shown:?}");
        if let Err(e) = result {
            let text = e.to_string();
            assert!(text.starts_with("hostile.yaml"), "{text}");
            assert!(!text.contains('\n'), "one line: {text:?}");
            assert!(text.len() < 2_000, "short: {} bytes", text.len());
        }
    }
    let e = Config::from_str_named(bomb, "hostile.yaml").unwrap_err();
    assert!(e.position.is_some(), "{e}");
}

/// Aliases that each expand to a valid value are bounded by the parser budget.
#[test]
fn alias_budget() {
    let few = format!("serve:\n  allow_targets: [&a 'x.org/*', {}]\n", ["*a"; 50].join(", "));
    assert_eq!(load(&few).serve.allow_targets.len(), 51);
    let many = format!("serve:\n  allow_targets: [&a 'x.org/*', {}]\n", ["*a"; 5_000].join(", "));
    let e = Config::from_str_named(&many, "probes.yaml").unwrap_err();
    assert!(e.message.contains("limits breached"), "{e}");
}

#[test]
fn repository_probes_yaml_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("probes.yaml");
    if !path.exists() {
        return;
    }
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for probe in &config.probes {
        if matches!(probe.kind, ProbeKind::Image { .. }) {
            config.resolve_image(probe).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

/// Random soup of YAML tokens and config keys: never a panic, always one line.
#[test]
fn token_soup_never_panics() {
    const TOKENS: &[&str] = &[
        "\n",
        "  ",
        "- ",
        ": ",
        "{",
        "}",
        "[",
        "]",
        ", ",
        "&a ",
        "*a",
        "<<: ",
        "? ",
        "'",
        "\"",
        "#",
        "!!str ",
        "---\n",
        "~",
        "|\n",
        ">-\n",
        "\\",
        "\u{0}",
        "\u{feff}",
        "é",
        "defaults",
        "limits",
        "registries",
        "probes",
        "alerting",
        "serve",
        "name",
        "url",
        "image",
        "registry",
        "tags",
        "match",
        "canary",
        "repository",
        "frontends",
        "dns",
        "timeout",
        "interval",
        "platforms",
        "all",
        "linux/amd64",
        "5m",
        "0s",
        "-1",
        "4MiB",
        "99999999999999999999",
        "1e309",
        ".nan",
        "true",
        "null",
        "http://x",
        "x.org/a:1",
        "10.0.0.1",
        "[::1]:5000",
        "after",
        "default",
    ];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3_000 {
        let len = (next() % 60) as usize;
        let input: String = (0..len).map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize]).collect();
        let result = std::panic::catch_unwind(|| Config::from_str_named(&input, "soup.yaml"));
        let result = result.unwrap_or_else(|_| panic!("panicked on {input:?}"));
        if let Err(e) = result {
            assert!(!e.to_string().contains('\n'), "{e:?}");
        }
    }
}

#[test]
fn expect_path_checks_and_labels() {
    let config = load(
        "probes:\n  - name: p\n    image: 127.0.0.1:5000/a:b\n    expect:\n      paths:\n        - /srv/a\n        - {path: /usr/bin/python3, type: file, min_size: 1MiB, mode: 0755}\n        - {path: /etc/x, sha256: \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}\n        - {path: /bin, type: symlink}\n        - {path: /var/old, absent: true}\n      labels: {org.opencontainers.image.vendor: Example}\n",
    );
    let expect = &config.probe("p").unwrap().expect;
    let python = &expect.paths[1];
    assert_eq!((python.kind, python.min_size, python.mode), (Some(PathType::File), Some(1 << 20), Some(0o755)));
    assert_eq!(
        expect.paths[2].sha256.map(|d| d.to_string()).as_deref(),
        Some("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(expect.paths[3].kind, Some(PathType::Symlink));
    assert!(expect.paths[4].absent);
    assert_eq!(expect.labels.get("org.opencontainers.image.vendor").map(String::as_str), Some("Example"));

    let probe = |entry: &str| {
        format!("probes:\n  - name: p\n    image: 127.0.0.1:5000/a:b\n    expect:\n      paths: [{entry}]\n")
    };
    assert_error(&probe("{path: /a, mode: \"0999\"}"), 5, 32, "`mode`: expected octal permission bits");
    assert_error(&probe("{path: /a, type: socket}"), 5, 32, "`type`: expected file, dir or symlink");
    assert_error(&probe("{path: /a, sha256: abc}"), 5, 34, "`sha256`: expected 64 lowercase hex");
    assert_error(&probe("{path: /a, absent: true, type: file}"), 5, 22, "`absent: true` cannot be combined");
    assert_error(&probe("{path: /a, type: symlink, min_size: 1}"), 5, 22, "`type: symlink` checks the link itself");
    assert_error(
        &probe("{path: /a, type: dir, sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}"),
        5,
        22,
        "not `type: dir`",
    );
    finish();
}

#[test]
fn kubernetes_discovery_keys() {
    let config = load(
        r#"
registries:
  - {name: prod, url: "https://docker-registry.example.org:8443"}
probes:
  - name: cluster
    registry: prod
    kubernetes:
      namespaces: [prod, tools, prod]
      label_selector: "app.kubernetes.io/part-of=shop, tier in (web, api),!canary,env!=dev"
      api_server: https://kube.example.org:6443/k8s/clusters/c-1
      token_file: /etc/pullprobe/token
      ca_file: /etc/pullprobe/kube-ca.pem
      pull_secrets: false
      max_images: 250
  - {name: proxy, kubernetes: {api_server: "http://127.0.0.1:8001"}}
  - {name: in-cluster, kubernetes: {}}
"#,
    );
    let ProbeKind::Kubernetes(k) = &config.probe("cluster").unwrap().kind else { panic!() };
    assert_eq!(k.namespaces, ["prod", "tools"], "a namespace listed twice is listed once");
    assert_eq!(
        k.label_selector.as_deref(),
        Some("app.kubernetes.io/part-of=shop, tier in (web, api),!canary,env!=dev")
    );
    assert_eq!(k.api_server.as_ref().unwrap().as_str(), "https://kube.example.org:6443/k8s/clusters/c-1");
    assert_eq!(k.token_file.as_deref(), Some(std::path::Path::new("/etc/pullprobe/token")));
    assert_eq!(k.ca_file.as_deref(), Some(std::path::Path::new("/etc/pullprobe/kube-ca.pem")));
    assert!(!k.pull_secrets);
    assert_eq!(k.max_images, 250);
    assert_eq!(k.registry_host.as_deref(), Some("docker-registry.example.org:8443"), "registry: keeps its images");

    let ProbeKind::Kubernetes(k) = &config.probe("proxy").unwrap().kind else { panic!() };
    assert_eq!(k.api_server.as_ref().unwrap().as_str(), "http://127.0.0.1:8001/");
    assert_eq!((k.token_file.is_none(), k.ca_file.is_none()), (true, true));

    let ProbeKind::Kubernetes(k) = &config.probe("in-cluster").unwrap().kind else { panic!() };
    assert_eq!(k, &KubernetesDiscovery::default());
    assert!(k.api_server.is_none() && k.pull_secrets && k.max_images == 100 && k.registry_host.is_none());
}

#[test]
fn kubernetes_discovery_errors() {
    let with = |probe: &str| format!("probes:\n  - {{name: k, kubernetes: {{{probe}}}}}\n");
    assert_error(&with("api_server: http://kube.example.org:8080"), 2, 40, "plain http:// only to a loopback");
    assert_error(&with("api_server: ftp://127.0.0.1"), 2, 40, "`api_server`: expected an http:// or https:// URL");
    assert_error(&with("api_server: 'https://a:b@kube.example.org'"), 2, 40, "credentials do not belong in a URL");
    assert_error(&with("api_server: 'https://kube.example.org/?x=1'"), 2, 40, "without query or fragment");
    assert_error(&with("label_selector: 'app=web,,tier=x'"), 2, 44, "\"\" is not a label requirement");
    assert_error(&with("label_selector: 'app=web,tier in web'"), 2, 44, "\"tier in web\" is not a label requirement");
    assert_error(&with("label_selector: ''"), 2, 44, "`label_selector`: expected a Kubernetes label selector");
    assert_error(&with("label_selector: 'app=we b'"), 2, 44, "is not a label requirement");
    assert_error(&with("max_images: 0"), 2, 40, "`max_images`: expected a number from 1 to 10000, got 0");
    assert_error(&with("token_file: ''"), 2, 40, "`token_file`: must not be empty");
    assert_error(&with("ca_file: ' '"), 2, 37, "`ca_file`: must not be empty");
    assert_error(&with("pull_secrets: maybe"), 2, 42, "");
    assert_error(&with("namespace: [prod]"), 2, 28, "namespace");
    finish();
}

#[test]
fn cloud_auth_forms() {
    let auth = |form: &str| {
        let config = load(&format!("registries:\n  - name: r\n    url: https://r.example.org\n    auth: {form}\n"));
        config.registry("r").unwrap().auth.clone()
    };
    assert_eq!(auth("{ecr: {}}"), Some(Auth::Cloud(CloudAuth::Ecr)));
    assert_eq!(auth("{gcp: {}}"), Some(Auth::Cloud(CloudAuth::Gcp)));
    assert_eq!(auth("{acr: {}}"), Some(Auth::Cloud(CloudAuth::Acr)));
    assert_eq!(auth("auto"), Some(Auth::Auto));
    assert_eq!(
        auth(
            "{credential_provider: {command: /usr/local/bin/ecr-credential-provider, args: [get-credentials], env: {AWS_PROFILE: x, A_1: ''}}}"
        ),
        Some(Auth::Cloud(CloudAuth::CredentialProvider(CredentialProvider {
            command: "/usr/local/bin/ecr-credential-provider".into(),
            args: vec!["get-credentials".into()],
            env: vec![("AWS_PROFILE".into(), "x".into()), ("A_1".into(), String::new())],
        })))
    );
    let Some(Auth::Cloud(CloudAuth::CredentialProvider(plugin))) = auth("{credential_provider: {command: plugin}}")
    else {
        panic!("a bare command is a plugin on PATH")
    };
    assert!(plugin.args.is_empty() && plugin.env.is_empty());
    // DESIGN.md's commented forms, uncommented.
    let design = DESIGN_EXAMPLE.replace("auth: {docker_config: true}", "auth: {ecr: {}}");
    assert_eq!(load(&design).registry("prod").unwrap().auth, Some(Auth::Cloud(CloudAuth::Ecr)));
}

#[test]
fn cloud_auth_errors() {
    let reg = |body: &str| format!("registries:\n  - name: r\n    url: https://r.example.org\n{body}");
    assert_error(&reg("    auth: {ecr: {}, gcp: {}}\n"), 4, 26, "`auth`: `ecr` and `gcp` are alternatives; use one");
    assert_error(
        &reg("    auth: {acr: {}, docker_config: true}\n"),
        4,
        17,
        "`acr` and `docker_config` are alternatives",
    );
    assert_error(&reg("    auth: {gcp: {}, username: u, password_env: P}\n"), 4, 17, "`gcp` and `username`");
    assert_error(&reg("    auth: {ecr: {region: us-east-1}}\n"), 4, 18, "unknown field `region`");
    assert_error(&reg("    auth: {ecr: true}\n"), 4, 17, "expected mapping");
    assert_error(&reg("    auth: automatic\n"), 4, 11, "`auth`: expected `auto` or one of {docker_config: …}");
    assert_error(&reg("    auth: true\n"), 4, 11, "got true");
    assert_error(&reg("    auth: {credential_provider: {}}\n"), 4, 33, "missing field `command`");
    assert_error(&reg("    auth: {credential_provider: {command: ''}}\n"), 4, 43, "`command`: must not be empty");
    assert_error(
        &reg("    auth: {credential_provider: {command: p, env: {'A-B': x}}}\n"),
        4,
        51,
        "`env`: expected environment variable names with values, got \"A-B\"",
    );
    assert_error(
        &reg("    auth: {credential_provider: {command: p, timeout: 5s}}\n"),
        4,
        46,
        "unknown field `timeout`",
    );
    finish();
}

#[test]
fn signatures_read_their_keys_and_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cosign.pub");
    std::fs::write(&key, crate::signature::tests::PUBLIC_PEM).unwrap();
    let rsa = dir.path().join("rsa.pub");
    std::fs::write(&rsa, "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwHzvR8+tE/PrdcqPEZ+H\n-----END PUBLIC KEY-----\n").unwrap();
    let missing = dir.path().join("absent.pub");
    let probe = |signatures: &str| {
        format!("probes:\n  - name: app\n    image: 127.0.0.1:5000/app:1\n    signatures: {signatures}\n")
    };

    let config = load(&probe(&format!(
        "{{require: [cosign, application/spdx+json], keys: [{}], platforms: true}}",
        key.display()
    )));
    let policy = config.probes[0].signatures.clone().unwrap();
    assert_eq!(
        policy.require,
        [RequiredReferrer::Cosign, RequiredReferrer::ArtifactType("application/spdx+json".into())]
    );
    assert_eq!(policy.keys.len(), 1);
    assert_eq!(policy.keys[0].name, key.display().to_string());
    assert!(policy.platforms);

    let config = load(&probe("{}"));
    let policy = config.probes[0].signatures.clone().unwrap();
    assert_eq!((policy.require, policy.keys.len(), policy.platforms), (vec![RequiredReferrer::Cosign], 0, false));

    assert_error(&probe("{require: [cosgin]}"), 4, 28, "`require`: unknown kind \"cosgin\"");
    assert_error(&probe("{require: []}"), 4, 27, "`require`: the list is empty");
    assert_error(&probe(&format!("{{keys: [{}]}}", missing.display())), 4, 25, "no such file");
    let (_, _, message) = error(&probe(&format!("{{keys: [{}]}}", missing.display())));
    assert!(message.contains(&missing.display().to_string()), "{message}");
    assert_error(&probe(&format!("{{keys: [{}]}}", rsa.display())), 4, 25, "is not an ECDSA P-256 public key");
    assert_error(&probe("{keys: []}"), 4, 17, "`keys`: the list is empty");
    assert_error(&probe("{require: [cosign], sign: true}"), 4, 37, "unknown field `sign`");
    assert_error(
        "probes:\n  - name: c\n    registry: r\n    canary: {repository: x/y}\n    signatures: {}\nregistries:\n  - {name: r, url: https://r.example.org}\n",
        5,
        17,
        "`signatures` goes with pulled images",
    );
    finish();
}
