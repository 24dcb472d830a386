//! Writes pullprobe's container image as an OCI image layout, without a
//! container engine. Used by `scripts/build-image`, which picks the binary, the
//! shared libraries and the labels (pullprobe's version, description, licence).
//!
//! The image holds what the binary needs and nothing else: the binary at
//! `/usr/local/bin/pullprobe`, the shared libraries it links (at the paths the
//! dynamic loader looks them up), the CA bundle at
//! `/etc/ssl/certs/ca-certificates.crt`, `/etc/passwd` and `/etc/group` with
//! the `nonroot` user (65532) it runs as, `/etc/nsswitch.conf`, and `/tmp`.
//! Every file is owned by root and not writable by that user, so the image
//! runs unchanged with a read-only root filesystem. Layers are deterministic:
//! the same inputs give the same digests.
//!
//! Usage: `oci_image --out DIR --binary PATH --ca-bundle PATH --tag TAG [--lib PATH]… [--label KEY=VALUE]…`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use image_builder::{Entry, Format, ImageBuilder, LayerBuilder, LayerCompression, Layout, Platform};
use serde_json::json;

/// The user the image runs as (distroless' `nonroot`).
const NONROOT: u64 = 65532;
const BINARY_PATH: &str = "usr/local/bin/pullprobe";
const CA_BUNDLE_PATH: &str = "etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Parser)]
#[command(about = "Write pullprobe's container image as an OCI image layout")]
struct Args {
    /// The OCI layout directory to create (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
    /// The pullprobe binary to put at /usr/local/bin/pullprobe.
    #[arg(long)]
    binary: PathBuf,
    /// A shared library the binary needs, put at the same path in the image (repeatable).
    #[arg(long = "lib")]
    libs: Vec<PathBuf>,
    /// The PEM bundle of trusted CA certificates.
    #[arg(long)]
    ca_bundle: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) of the image in the layout.
    #[arg(long)]
    tag: String,
    /// A label of the image config (`org.opencontainers.image.version=0.1.0`; repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

fn parse_label(label: &str) -> Result<(String, String), String> {
    match label.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("want KEY=VALUE, not {label:?}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match write_layout(&args) {
        Ok(digest) => {
            println!("{}:{} {digest}", args.out.display(), args.tag);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oci_image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// Every directory above `path` (relative, without a leading `/`), outermost first.
fn parents(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    (1..parts.len()).map(|n| parts[..n].join("/")).collect()
}

fn write_layout(args: &Args) -> Result<String, Box<dyn std::error::Error>> {
    let out = &args.out;
    if out.exists() && std::fs::read_dir(out)?.next().is_some() {
        return Err(format!("{} exists and is not empty", out.display()).into());
    }
    let mut layout = Layout::new(out)?;

    // The base layer: what the binary needs from an operating system.
    let mut files: BTreeMap<String, Entry> = BTreeMap::new();
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    );
    let group = format!("root:x:0:\nnonroot:x:{NONROOT}:\n");
    files.insert("etc/passwd".into(), Entry::file("etc/passwd", passwd.as_str()));
    files.insert("etc/group".into(), Entry::file("etc/group", group.as_str()));
    files.insert("etc/nsswitch.conf".into(), Entry::file("etc/nsswitch.conf", "hosts: files dns\n"));
    files.insert(CA_BUNDLE_PATH.into(), Entry::file(CA_BUNDLE_PATH, read(&args.ca_bundle)?));
    for lib in &args.libs {
        let inside = lib.to_str().ok_or_else(|| format!("{}: not UTF-8", lib.display()))?.trim_start_matches('/');
        if !lib.is_absolute() || inside.split('/').any(|part| part == "..") {
            return Err(format!("--lib {}: give an absolute path without `..`", lib.display()).into());
        }
        // The file itself, whatever symlinks lead to it on this machine.
        files.insert(inside.to_string(), Entry::file(inside, read(lib)?).mode(0o755));
    }
    let mut dirs: BTreeSet<String> = files.keys().flat_map(|p| parents(p)).collect();
    dirs.insert("tmp".into());
    dirs.insert("home/nonroot".into());
    dirs.extend(parents("home/nonroot/x"));
    let mut base = LayerBuilder::new();
    for dir in &dirs {
        base = base.entry(match dir.as_str() {
            "tmp" => Entry::dir(dir).mode(0o1777),
            "home/nonroot" => Entry::dir(dir).mode(0o700).owner(NONROOT, NONROOT),
            _ => Entry::dir(dir),
        });
    }
    for entry in files.into_values() {
        base = base.entry(entry);
    }
    let base = base.write(out, LayerCompression::Gzip)?;

    // The application layer: the binary alone, so a new build changes one layer.
    let mut app = LayerBuilder::new();
    for dir in parents(BINARY_PATH) {
        app = app.dir(&dir);
    }
    let app =
        app.entry(Entry::file(BINARY_PATH, read(&args.binary)?).mode(0o755)).write(out, LayerCompression::Gzip)?;

    let image = ImageBuilder::new(Format::Oci)
        .platform(host_platform()?)
        .runtime_config("User", json!(format!("{NONROOT}:{NONROOT}")))
        .runtime_config("Entrypoint", json!([format!("/{BINARY_PATH}")]))
        .runtime_config("Cmd", json!(["--help"]))
        .runtime_config("WorkingDir", json!("/"))
        .runtime_config("Env", json!(["PATH=/usr/local/bin:/usr/bin:/bin", format!("SSL_CERT_FILE=/{CA_BUNDLE_PATH}")]))
        .runtime_config("Labels", json!(args.labels.iter().cloned().collect::<BTreeMap<String, String>>()))
        .layer(base)
        .layer(app)
        .build(out)?;
    let digest = layout.add(&image, &args.tag)?;
    layout.finish()?;
    Ok(digest.to_string())
}

/// The platform of the machine that built the binary, in OCI's names.
fn host_platform() -> Result<Platform, String> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(Platform::linux_amd64()),
        "aarch64" => Ok(Platform::linux_arm64_v8()),
        other => Err(format!("no OCI architecture name for {other}")),
    }
}
