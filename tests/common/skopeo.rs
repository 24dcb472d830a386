//! skopeo as an independent client: it fetches manifests and blobs the way
//! container tooling does and checks every digest, so an image it copies is
//! well-formed and intact without trusting pullprobe's own pull code.
//!
//! Every call gets its own policy file (accept anything: /etc/containers/policy.json
//! may not exist) and its own TMPDIR, and talks plain HTTP to loopback.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::process::{CommandOutput, require_binary, run_with_timeout};

const BINARY: &str = "/usr/bin/skopeo";
const TIMEOUT: Duration = Duration::from_secs(120);

/// A skopeo run's scratch space: the policy file and the TMPDIR.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::Builder::new().prefix("pullprobe-skopeo-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("policy.json"), r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)
            .expect("writing policy.json");
        // An empty registries.conf: references here are fully qualified, no mirrors or short names.
        std::fs::write(dir.path().join("registries.conf"), "").expect("writing registries.conf");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp dir");
        Scratch { dir }
    }

    fn run(&self, args: &[&str]) -> CommandOutput {
        let binary = require_binary(BINARY, "skopeo");
        let mut command = Command::new(binary);
        command
            .arg("--policy")
            .arg(self.dir.path().join("policy.json"))
            .arg("--registries-conf")
            .arg(self.dir.path().join("registries.conf"))
            .args(args)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("HOME", self.dir.path());
        run_with_timeout(&mut command, TIMEOUT)
    }
}

/// `skopeo ARGS…` with a scratch of its own, however it ends.
pub fn run(args: &[&str]) -> CommandOutput {
    Scratch::new().run(args)
}

/// `skopeo inspect --raw docker://REFERENCE`: the manifest bytes exactly as served.
/// `reference` is `127.0.0.1:PORT/repo:tag` or `…@sha256:…`.
pub fn inspect_raw(reference: &str) -> Result<Vec<u8>, String> {
    let scratch = Scratch::new();
    let out = scratch.run(&["inspect", "--tls-verify=false", "--raw", &format!("docker://{reference}")]);
    if out.code == 0 { Ok(out.stdout.into_bytes()) } else { Err(out.stderr) }
}

/// `skopeo copy docker://REFERENCE dir:TMP` with `extra` options (`--all`,
/// `--override-arch arm64`, …). On success, the directory skopeo wrote
/// (manifest.json, one file per blob), removed when dropped.
pub fn copy_to_dir(reference: &str, extra: &[&str]) -> Result<CopiedImage, String> {
    let scratch = Scratch::new();
    let dest = scratch.dir.path().join("image");
    let dest_arg = format!("dir:{}", dest.display());
    let source = format!("docker://{reference}");
    let mut args = extra.to_vec();
    args.splice(0..0, ["copy", "--src-tls-verify=false"]);
    args.push(&source);
    args.push(&dest_arg);
    let out = scratch.run(&args);
    if out.code == 0 { Ok(CopiedImage { _scratch: scratch, path: dest }) } else { Err(out.stderr) }
}

/// An image skopeo copied into a directory.
pub struct CopiedImage {
    _scratch: Scratch,
    pub path: PathBuf,
}

impl CopiedImage {
    /// The names of the files skopeo wrote (blob files are named by hex digest).
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.path)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}
