//! Content and freshness assertions (`expect:`, `--expect-path`) through the real binary
//! against a real registry. What each path assertion should conclude is not reasoned out
//! here: the same image is unpacked by umoci (a real runtime unpacker, via skopeo into
//! an OCI layout) and every assertion is checked against that root filesystem.

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::{require_binary, run_with_timeout};
use common::verdict::{assert_failed, assert_passed, pretty, pull_json};
use common::*;
use image_builder::Digest;
use image_builder::{Entry, Format, GeneratedContent, Image, ImageBuilder, Layer, LayerBuilder, LayerCompression};
use serde_json::{Value, json};
use time::OffsetDateTime;

const TOOL_BYTES: u64 = 70_000;
const ORIG_BYTES: u64 = 3_000;

fn tool_content() -> GeneratedContent {
    GeneratedContent::random(41, TOOL_BYTES)
}

fn orig_content() -> GeneratedContent {
    GeneratedContent::text(42, ORIG_BYTES)
}

fn bytes_of(content: GeneratedContent) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut content.reader(), &mut out).unwrap();
    out
}

/// Layer 1 adds, layer 2 replaces, makes opaque and links, layer 3 whites out.
fn layers(dir: &Path) -> Vec<Layer> {
    let one = LayerBuilder::new()
        .dir("srv")
        .file("srv/app.conf", "v1\n")
        .dir("srv/releases/v1")
        .entry(Entry::file("srv/releases/v1/app.bin", GeneratedContent::random(43, 5_000)).mode(0o755))
        .symlink("srv/current", "releases/v1")
        .dir("data")
        .entry(Entry::file("data/orig", orig_content()).mode(0o640))
        .hard_link("data/link", "data/orig")
        .dir("opt/cache/sub")
        .file("opt/cache/old", "old\n")
        .file("opt/cache/sub/deep", "deep\n")
        .dir("usr/bin")
        .entry(Entry::file("usr/bin/tool", tool_content()).mode(0o755))
        .symlink("usr/bin/tool-latest", "tool")
        .dir("etc")
        .file("etc/motd", "hello\n");
    let two = LayerBuilder::new()
        .entry(Entry::file("srv/app.conf", "version two\n").mode(0o600))
        .symlink("srv/live", "/srv/current")
        .opaque_whiteout("opt/cache")
        .file("opt/cache/new", "new\n")
        .symlink("bin", "usr/bin")
        .symlink("etc/dangling", "/nowhere");
    let three = LayerBuilder::new().whiteout("srv/app.conf").whiteout("data/orig");
    [one, two, three].iter().map(|l| l.write(dir, LayerCompression::Gzip).unwrap()).collect()
}

/// One assertion: a name for its probe and the `paths:` entry.
struct Case {
    name: &'static str,
    tag: &'static str,
    entry: Value,
}

fn case(name: &'static str, tag: &'static str, entry: Value) -> Case {
    Case { name, tag, entry }
}

fn sha(content: &[u8]) -> String {
    Digest::of(content).to_string()
}

fn cases() -> Vec<Case> {
    let tool = sha(&bytes_of(tool_content()));
    let orig = sha(&bytes_of(orig_content()));
    vec![
        // Added in layer 1, replaced in layer 2 (tag `two`), whited out in layer 3 (tag `final`).
        case("replaced-sha", "two", json!({"path": "/srv/app.conf", "sha256": sha(b"version two\n")})),
        case("replaced-old-sha", "two", json!({"path": "/srv/app.conf", "sha256": sha(b"v1\n")})),
        case("replaced-mode", "two", json!({"path": "/srv/app.conf", "mode": "0600"})),
        case("replaced-size", "two", json!({"path": "/srv/app.conf", "min_size": 13})),
        case("whited-out", "final", json!({"path": "/srv/app.conf"})),
        case("whited-out-absent", "final", json!({"path": "/srv/app.conf", "absent": true})),
        // Made opaque in layer 2.
        case("opaque-old", "final", json!({"path": "/opt/cache/old"})),
        case("opaque-sub-absent", "final", json!({"path": "/opt/cache/sub", "absent": true})),
        case("opaque-new", "final", json!({"path": "/opt/cache/new", "type": "file"})),
        case("opaque-dir", "final", json!({"path": "/opt/cache", "type": "dir"})),
        // A hard link to a file whited out later.
        case("link-target-absent", "final", json!({"path": "/data/orig", "absent": true})),
        case("link-sha", "final", json!({"path": "/data/link", "sha256": orig})),
        case("link-wrong-sha", "final", json!({"path": "/data/link", "sha256": sha(b"nope")})),
        case("link-mode", "final", json!({"path": "/data/link", "mode": "0640"})),
        case("link-size", "final", json!({"path": "/data/link", "min_size": ORIG_BYTES})),
        case("link-too-small", "final", json!({"path": "/data/link", "min_size": ORIG_BYTES + 1})),
        // A symlink chain: /srv/live -> /srv/current -> releases/v1; /bin -> usr/bin.
        case("chain-file", "final", json!({"path": "/srv/live/app.bin", "type": "file", "mode": "0755"})),
        case("chain-symlink", "final", json!({"path": "/srv/live", "type": "symlink"})),
        case("chain-dir", "final", json!({"path": "/srv/live", "type": "dir"})),
        case("chain-not-file", "final", json!({"path": "/srv/live", "type": "file"})),
        case("merged-usr-sha", "final", json!({"path": "/bin/tool-latest", "sha256": tool, "mode": "0755"})),
        case("merged-usr-mode", "final", json!({"path": "/bin/tool-latest", "mode": "0700"})),
        case("size-ok", "final", json!({"path": "/usr/bin/tool", "min_size": "64KiB"})),
        case("size-short", "final", json!({"path": "/usr/bin/tool", "min_size": "1MiB"})),
        case("dangling", "final", json!({"path": "/etc/dangling"})),
        case("dangling-absent", "final", json!({"path": "/etc/dangling", "absent": true})),
        case("dangling-symlink", "final", json!({"path": "/etc/dangling", "type": "symlink"})),
        case("motd-sha", "final", json!({"path": "/etc/motd", "sha256": sha(b"hello\n")})),
        case("motd-not-dir", "final", json!({"path": "/etc/motd", "type": "dir"})),
        case("under-a-file", "final", json!({"path": "/etc/motd/x"})),
        case("never-there", "final", json!({"path": "/nonexistent/deep"})),
        case("never-there-absent", "final", json!({"path": "/nonexistent", "absent": true})),
    ]
}

#[tokio::test]
async fn path_assertions_agree_with_umoci_unpack() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let layers = layers(&dir);
    let two = ImageBuilder::new(Format::Oci).layers(layers[..2].to_vec()).build(&dir).unwrap();
    let fin = ImageBuilder::new(Format::Oci).layers(layers.clone()).build(&dir).unwrap();
    let pushed_two = push(&registry, "content/fs", "two", two).await;
    let pushed_final = push(&registry, "content/fs", "final", fin).await;

    let rootfs: BTreeMap<&str, Unpacked> =
        [("two", umoci_unpack(&pushed_two.reference)), ("final", umoci_unpack(&pushed_final.reference))].into();

    let cases = cases();
    let probes: Vec<Value> = cases
        .iter()
        .map(|c| json!({"name": c.name, "image": registry.reference("content/fs", c.tag), "expect": {"paths": [c.entry]}}))
        .collect();
    let config = dir.join("probes.yaml");
    fs::write(&config, serde_json::to_string_pretty(&json!({"probes": probes})).unwrap()).unwrap();
    let pull = pull_json(&["-c", config.to_str().unwrap()]);
    assert_eq!(pull.results.len(), cases.len(), "{}", pull.dump());

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &cases {
        let want = rootfs[case.tag].judge(&case.entry);
        let result = pull
            .results
            .iter()
            .find(|r| r.str_field("probe") == Some(case.name))
            .unwrap_or_else(|| panic!("no result for {}:\n{}", case.name, pull.dump()));
        let context = format!("{} {}: umoci's rootfs says {want:?}\n{}", case.name, case.entry, pretty(result));
        match want {
            None => assert_passed(result),
            Some(reason) => {
                assert_failed(result, reason, "content");
                let error = result.error_message().unwrap_or_default();
                let path = case.entry["path"].as_str().unwrap();
                assert!(error.starts_with(path), "the error names the path: {context}");
            }
        }
        // Every layer was checked in full (path assertions never use digest-only checks).
        for layer in result.layers() {
            assert_eq!(layer.str_field("check"), Some("full"), "{context}");
        }
        *outcomes.entry(want.unwrap_or("pass")).or_default() += 1;
    }
    // The image exercises passes and both failure reasons.
    assert!(outcomes.len() == 3 && outcomes.values().all(|n| *n >= 5), "{outcomes:?}");
    assert_eq!(pull.code, 1, "{}", pull.dump());

    // The errors name the layer that last touched the path and what was found.
    let digest = |i: usize| pushed_final.content.layers[i].digest().to_string();
    let error = |name: &str| {
        let result = pull.results.iter().find(|r| r.str_field("probe") == Some(name)).unwrap();
        result.error_message().unwrap_or_default().to_string()
    };
    let whited = error("whited-out");
    assert!(whited.contains(&format!("whited out (/srv/app.conf) by layer 3 {}", digest(2))), "{whited}");
    let opaque = error("opaque-old");
    assert!(opaque.contains(&format!("layer 2 {}, which makes /opt/cache opaque", digest(1))), "{opaque}");
    let short = error("link-too-small");
    assert!(short.contains(&format!("a regular file of {ORIG_BYTES} bytes, mode 0640")), "{short}");
    assert!(short.contains(&format!("a hard link to /data/orig in layer 1 {}", digest(0))), "{short}");
    let chain = error("chain-not-file");
    assert!(chain.contains("resolved to /srv/releases/v1") && chain.contains("a directory"), "{chain}");
}

#[tokio::test]
async fn expect_path_on_the_command_line_is_a_deploy_gate() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let image = ImageBuilder::new(Format::Oci).layers(layers(&dir)).build(&dir).unwrap();
    let pushed = push(&registry, "content/gate", "v1", image).await;
    let reference = pushed.reference.as_str();

    let ok = pull_json(&["--expect-path", "/srv/live/app.bin", "--expect-path", "/bin/tool", reference]);
    assert_passed(ok.only());
    assert_eq!(ok.code, 0, "{}", ok.dump());

    let missing = pull_json(&["--expect-path", "/srv/live/app.bin", "--expect-path", "/srv/app.conf", reference]);
    let result = missing.only();
    assert_failed(result, "content_missing", "content");
    let error = result.error_message().unwrap();
    let layer3 = pushed.content.layers[2].digest();
    assert!(error.starts_with("/srv/app.conf: not in the image: whited out"), "{error}");
    assert!(error.contains(&format!("layer 3 {layer3}")), "{error}");
    assert_eq!(missing.code, 1, "{}", missing.dump());
    // The layers themselves are fine: the failure is the content's.
    assert!(result.layers().iter().all(|l| l["ok"] == true), "{}", missing.dump());

    let (code, _, stderr) = run_pullprobe(&["now", "--expect-path", "relative/path", reference]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--expect-path \"relative/path\""), "{stderr}");
}

#[tokio::test]
async fn stale_images_fail_and_epoch_images_are_skipped_with_a_warning() {
    let registry = Registry::start();
    let dir = registry.scratch();
    let layer = |seed: u64| {
        LayerBuilder::new().file("srv/seed", seed.to_string().as_str()).write(&dir, LayerCompression::Gzip).unwrap()
    };
    let now = OffsetDateTime::now_utc();
    let labels = json!({"org.opencontainers.image.vendor": "Example"});
    let built = |seed: u64, builder: ImageBuilder| -> Image { builder.layer(layer(seed)).build(&dir).unwrap() };
    let stale = built(1, ImageBuilder::new(Format::Oci).created(now - time::Duration::days(40)));
    let fresh = built(2, ImageBuilder::new(Format::Oci).created(now - time::Duration::days(3)));
    let epoch = built(3, ImageBuilder::new(Format::Docker));
    let labelled = built(4, ImageBuilder::new(Format::Oci).runtime_config("Labels", labels));
    let stale = push(&registry, "content/age", "stale", stale).await;
    let fresh = push(&registry, "content/age", "fresh", fresh).await;
    let epoch = push(&registry, "content/age", "epoch", epoch).await;
    let labelled = push(&registry, "content/age", "labelled", labelled).await;

    let vendor = |v: &str| json!({"org.opencontainers.image.vendor": v});
    let probes = json!({"probes": [
        {"name": "stale", "image": stale.reference, "expect": {"max_age": "30d"}},
        {"name": "fresh", "image": fresh.reference, "expect": {"max_age": "30d"}},
        {"name": "epoch", "image": epoch.reference, "expect": {"max_age": "30d"}},
        {"name": "label-ok", "image": labelled.reference, "expect": {"labels": vendor("Example")}},
        {"name": "label-wrong", "image": labelled.reference, "expect": {"labels": vendor("Other")}},
        {"name": "label-missing", "image": fresh.reference, "expect": {"labels": vendor("Example")}},
    ]});
    let config = dir.join("probes.yaml");
    fs::write(&config, probes.to_string()).unwrap();
    let (code, stdout, stderr) = run_pullprobe(&["validate", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 0, "validate accepts `expect:` now:\n{stdout}{stderr}");

    let pull = pull_json(&["-c", config.to_str().unwrap()]);
    let by_name = |name: &str| {
        pull.results
            .iter()
            .find(|r| r.str_field("probe") == Some(name))
            .unwrap_or_else(|| panic!("no result for {name}:\n{}", pull.dump()))
    };
    let result = by_name("stale");
    assert_failed(result, "image_stale", "content");
    let error = result.error_message().unwrap();
    assert!(error.contains("40d ago: older than max_age 30d"), "{error}");
    assert_passed(by_name("fresh"));
    let epoch = by_name("epoch");
    assert_passed(epoch);
    let warnings = epoch["warnings"].to_string();
    assert!(warnings.contains("max_age not checked") && warnings.contains("epoch"), "{}", pretty(epoch));
    assert_passed(by_name("label-ok"));
    assert_failed(by_name("label-wrong"), "content_mismatch", "content");
    assert_failed(by_name("label-missing"), "content_missing", "content");
}

/// A root filesystem unpacked by umoci, kept until dropped.
struct Unpacked {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
}

/// `skopeo copy docker://REF oci:DIR:image`, then `umoci unpack --rootless`.
fn umoci_unpack(reference: &str) -> Unpacked {
    let skopeo = require_binary("/usr/bin/skopeo", "skopeo");
    let umoci = require_binary("/usr/bin/umoci", "umoci");
    let dir = tempfile::Builder::new().prefix("pullprobe-umoci-").tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
    let registries = dir.path().join("registries.conf");
    fs::write(&registries, "").unwrap();
    let layout = dir.path().join("layout");
    let mut copy = Command::new(skopeo);
    copy.arg("--policy")
        .arg(&policy)
        .arg("--registries-conf")
        .arg(&registries)
        .args(["copy", "--src-tls-verify=false", &format!("docker://{reference}")])
        .arg(format!("oci:{}:image", layout.display()))
        .env("TMPDIR", dir.path())
        .env("HOME", dir.path());
    let out = run_with_timeout(&mut copy, Duration::from_secs(120));
    assert_eq!(out.code, 0, "skopeo copy {reference}: {}", out.stderr);
    let bundle = dir.path().join("bundle");
    let mut unpack = Command::new(umoci);
    unpack.args(["unpack", "--rootless", "--image"]).arg(format!("{}:image", layout.display())).arg(&bundle);
    let out = run_with_timeout(&mut unpack, Duration::from_secs(120));
    assert_eq!(out.code, 0, "umoci unpack {reference}: {}", out.stderr);
    Unpacked { rootfs: bundle.join("rootfs"), _dir: dir }
}

impl Unpacked {
    /// What a `paths:` entry concludes on this root filesystem: `None` if it holds, else
    /// the reason pullprobe must give. Only the kernel's path rules are applied here.
    fn judge(&self, entry: &Value) -> Option<&'static str> {
        let path = entry["path"].as_str().unwrap();
        let kind = entry["type"].as_str();
        if entry["absent"] == true {
            return self.lookup(path, false).map(|_| "content_mismatch");
        }
        let Some(found) = self.lookup(path, kind != Some("symlink")) else {
            return Some("content_missing");
        };
        let meta = fs::symlink_metadata(&found).unwrap();
        let file_type = meta.file_type();
        let type_ok = match kind {
            None => true,
            Some("file") => file_type.is_file(),
            Some("dir") => file_type.is_dir(),
            Some("symlink") => file_type.is_symlink(),
            Some(other) => panic!("type {other}"),
        };
        let size_ok = match &entry["min_size"] {
            Value::Null => true,
            Value::Number(n) => file_type.is_file() && meta.len() >= n.as_u64().unwrap(),
            Value::String(s) => file_type.is_file() && meta.len() >= pullprobe::config::parse_size(s).unwrap(),
            other => panic!("min_size {other}"),
        };
        let mode_ok = match entry["mode"].as_str() {
            None => true,
            Some(mode) => meta.permissions().mode() & 0o7777 == u32::from_str_radix(mode, 8).unwrap(),
        };
        let sha_ok = match entry["sha256"].as_str() {
            None => true,
            Some(want) => file_type.is_file() && Digest::of(&fs::read(&found).unwrap()).to_string() == want,
        };
        if type_ok && size_ok && mode_ok && sha_ok { None } else { Some("content_mismatch") }
    }

    /// Resolve `path` inside the root filesystem as the kernel would in a chroot there
    /// (absolute symlink targets start at the rootfs; `..` stops at it; 40 links at most).
    fn lookup(&self, path: &str, follow_last: bool) -> Option<PathBuf> {
        let parts = |p: &str| -> Vec<String> {
            p.split('/').filter(|c| !c.is_empty() && *c != ".").map(str::to_string).collect()
        };
        let mut pending: VecDeque<String> = parts(path).into();
        let mut current = PathBuf::new();
        let mut links = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                current.pop();
                continue;
            }
            let next = current.join(&part);
            let last = pending.is_empty();
            let meta = fs::symlink_metadata(self.rootfs.join(&next)).ok()?;
            if meta.file_type().is_symlink() && (!last || follow_last) {
                links += 1;
                if links > 40 {
                    return None;
                }
                let target = fs::read_link(self.rootfs.join(&next)).ok()?.to_string_lossy().to_string();
                if target.starts_with('/') {
                    current = PathBuf::new();
                }
                for part in parts(&target).into_iter().rev() {
                    pending.push_front(part);
                }
                continue;
            }
            if !last && !meta.is_dir() {
                return None;
            }
            current = next;
        }
        Some(self.rootfs.join(current))
    }
}
