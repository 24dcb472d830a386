//! Running the real `pullprobe` binary and reading its JSON result (the shape
//! DESIGN.md fixes: `{"results": [{probe, frontend, ok, reason, layers: […]}, …]}`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::{require_binary, run_with_timeout};

/// How long one pullprobe run may take before the test fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `pullprobe ARGS…` in a fresh empty directory (so no ./probes.yaml is picked up)
/// and return (exit code, stdout, stderr); the exit code is -1 if a signal ended it.
pub fn run_pullprobe(args: &[&str]) -> (i32, String, String) {
    run_pullprobe_with(args, &[], None, DEFAULT_TIMEOUT)
}

/// [`run_pullprobe`] with extra environment variables, a working directory and a timeout.
pub fn run_pullprobe_with(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: Option<&Path>,
    timeout: Duration,
) -> (i32, String, String) {
    let empty = tempfile::Builder::new().prefix("pullprobe-cwd-").tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_pullprobe"));
    command.args(args).current_dir(cwd.unwrap_or(empty.path())).env("DOCKER_CONFIG", empty.path());
    command.env_remove("RUST_LOG");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = run_with_timeout(&mut command, timeout);
    (out.code, out.stdout, out.stderr)
}

/// `pullprobe now -o json ARGS…` with extra environment, from async code: on a
/// blocking thread, so the in-test servers of the same runtime keep answering. Timed.
pub async fn run_now(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args = now_json(args);
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let started = Instant::now();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_pullprobe_with(&args, &env, None, DEFAULT_TIMEOUT)
    })
    .await
    .expect("running pullprobe");
    Run { elapsed: Some(started.elapsed()), ..Run::new(code, stdout, stderr) }
}

/// [`run_now`] under `/usr/bin/time -v`, for the peak RSS too (no extra environment).
pub async fn run_now_measured(args: &[&str]) -> Run {
    let args = now_json(args);
    let started = Instant::now();
    let run = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_pullprobe_measured(&args, DEFAULT_TIMEOUT)
    })
    .await
    .expect("running pullprobe");
    Run {
        elapsed: Some(started.elapsed()),
        peak_rss_kib: Some(run.peak_rss_kib),
        ..Run::new(run.code, run.stdout, run.stderr)
    }
}

fn now_json(args: &[&str]) -> Vec<String> {
    ["now", "-o", "json"].iter().chain(args).map(|s| s.to_string()).collect()
}

/// A probes.yaml holding `yaml` in a temporary directory, and its path; keep the directory while it is used.
pub fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new().prefix("pullprobe-config-").tempdir().expect("temp dir");
    let path = dir.path().join("probes.yaml");
    std::fs::write(&path, yaml).expect("writing probes.yaml");
    let path = path.to_str().expect("UTF-8 temp path").to_string();
    (dir, path)
}

/// What [`run_pullprobe_measured`] saw.
pub struct MeasuredRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident set size of the pullprobe process (VmHWM), in KiB.
    pub peak_rss_kib: u64,
}

/// [`run_pullprobe`] under GNU time (`/usr/bin/time -v`, Debian package `time`),
/// which also reports the process's peak resident set size.
pub fn run_pullprobe_measured(args: &[&str], timeout: Duration) -> MeasuredRun {
    let time = require_binary("/usr/bin/time", "time");
    let dir = tempfile::Builder::new().prefix("pullprobe-cwd-").tempdir().expect("temp dir");
    let report = dir.path().join("time.txt");
    let mut command = Command::new(time);
    command.arg("-v").arg("-o").arg(&report).arg(env!("CARGO_BIN_EXE_pullprobe")).args(args);
    command.current_dir(dir.path()).env("DOCKER_CONFIG", dir.path()).env_remove("RUST_LOG");
    let out = run_with_timeout(&mut command, timeout);
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let peak_rss_kib = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in the report of /usr/bin/time:\n{text}\nstderr:\n{}", out.stderr));
    MeasuredRun { code: out.code, stdout: out.stdout, stderr: out.stderr, peak_rss_kib }
}

/// The `results` array of `-o json` output; panics with the output if it is not one.
pub fn json_results(stdout: &str) -> Vec<Value> {
    let parsed: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}"));
    match parsed.get("results") {
        Some(Value::Array(results)) => results.clone(),
        _ => panic!("stdout has no \"results\" array:\n{stdout}"),
    }
}

/// The one result for a frontend (its label or address); panics listing the frontends there are.
pub fn result_for<'a>(results: &'a [Value], frontend: &str) -> &'a Value {
    results.iter().find(|r| r.str_field("frontend") == Some(frontend)).unwrap_or_else(|| {
        let frontends: Vec<_> = results.iter().map(|r| r.str_field("frontend").unwrap_or("?")).collect();
        panic!("no result for frontend {frontend}; results are for {frontends:?}")
    })
}

/// Reading one result (or one of its layers) without repeating `as_str()` chains.
pub trait ResultJson {
    fn str_field(&self, key: &str) -> Option<&str>;
    /// `ok`; panics if absent, since every result has it.
    fn is_ok(&self) -> bool;
    fn reason(&self) -> Option<&str>;
    fn registry_error(&self) -> Option<&str>;
    fn error_message(&self) -> Option<&str>;
    fn layers(&self) -> &[Value];
    fn u64_field(&self, key: &str) -> Option<u64>;
}

impl ResultJson for Value {
    fn str_field(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn is_ok(&self) -> bool {
        self.get("ok").and_then(Value::as_bool).unwrap_or_else(|| panic!("result has no boolean \"ok\": {self}"))
    }

    fn reason(&self) -> Option<&str> {
        self.str_field("reason")
    }

    fn registry_error(&self) -> Option<&str> {
        self.str_field("registry_error")
    }

    fn error_message(&self) -> Option<&str> {
        self.str_field("error")
    }

    fn layers(&self) -> &[Value] {
        self.get("layers").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
    }

    fn u64_field(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }
}

/// One finished `pullprobe` run, with the checks most tests make of it.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall time, when the caller timed it.
    pub elapsed: Option<Duration>,
    /// Peak RSS from `/usr/bin/time -v`, for a measured run.
    pub peak_rss_kib: Option<u64>,
}

impl Run {
    /// A run from [`run_pullprobe_with`]'s answer; a panic in pullprobe fails the test here.
    pub fn new(code: i32, stdout: String, stderr: String) -> Run {
        assert!(!stderr.contains("panicked at"), "pullprobe panicked:\n{stderr}");
        Run { code, stdout, stderr, elapsed: None, peak_rss_kib: None }
    }

    pub fn context(&self) -> String {
        let mut context = format!("exit {}", self.code);
        if let Some(elapsed) = self.elapsed {
            context.push_str(&format!(" after {elapsed:?}"));
        }
        if let Some(peak) = self.peak_rss_kib {
            context.push_str(&format!(" (peak RSS {peak} KiB)"));
        }
        format!("{context}\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr)
    }

    /// The one result of a `-o json` run.
    pub fn result(&self) -> Value {
        let results = json_results(&self.stdout);
        assert_eq!(results.len(), 1, "one result expected: {}", self.context());
        results[0].clone()
    }

    /// The result's error message ("" without one).
    pub fn error(&self) -> String {
        self.result().error_message().unwrap_or_default().to_string()
    }

    pub fn retries(&self) -> u64 {
        self.result().u64_field("retries").unwrap_or_else(|| panic!("no retries: {}", self.context()))
    }

    /// The result's layer entry `index`.
    pub fn layer(&self, index: usize) -> Value {
        self.result().layers().get(index).cloned().unwrap_or_else(|| panic!("no layer {index}: {}", self.context()))
    }

    pub fn warnings(&self) -> Vec<String> {
        let result = self.result();
        let warnings = result.get("warnings").and_then(Value::as_array);
        warnings.map(|w| w.iter().filter_map(Value::as_str).map(str::to_string).collect()).unwrap_or_default()
    }

    /// A pass: exit 0, `ok`, no reason.
    pub fn assert_ok(&self) -> Value {
        let result = self.result();
        assert_eq!(self.code, 0, "{}", self.context());
        assert!(result.is_ok(), "{}", self.context());
        assert_eq!(result.get("reason"), Some(&Value::Null), "{}", self.context());
        result
    }

    /// Failed with exit 1, this reason and phase, and an error naming each of `error_has`.
    pub fn assert_failed(&self, reason: &str, phase: &str, error_has: &[&str]) -> Value {
        let result = self.result();
        assert_eq!(self.code, 1, "{}", self.context());
        assert!(!result.is_ok(), "{}", self.context());
        assert_eq!(result.reason(), Some(reason), "{}", self.context());
        assert_eq!(result.str_field("phase"), Some(phase), "{}", self.context());
        let error = result.error_message().unwrap_or_default();
        for needle in error_has {
            assert!(error.contains(needle), "the error should name {needle:?}: {}", self.context());
        }
        result
    }

    /// The run, timed by its caller, took less than `limit`.
    pub fn assert_within(&self, limit: Duration) {
        let elapsed = self.elapsed.expect("a timed run");
        assert!(elapsed < limit, "took {elapsed:?}, more than {limit:?}: {}", self.context());
    }

    /// Neither stdout nor stderr holds any of `secrets`.
    pub fn assert_no_secret(&self, secrets: &[impl AsRef<str>]) {
        for secret in secrets.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()) {
            assert!(!self.stdout.contains(secret), "secret {secret:?} on stdout: {}", self.context());
            assert!(!self.stderr.contains(secret), "secret {secret:?} on stderr: {}", self.context());
        }
    }
}
