//! `pullprobe serve` as the tests run it: on a free loopback port, in a fresh
//! directory, JSON logs to a file, extra environment on top of the test's, and
//! stopped by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{free_port, http_get};

/// A running `pullprobe serve`.
pub struct Serve {
    child: Child,
    pub addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    pub fn start(config: &Path) -> Serve {
        Serve::start_with(config, &[])
    }

    /// Started with `env` set (and `DOCKER_CONFIG` an empty directory unless `env` names one);
    /// returns once `/healthz` answers.
    pub fn start_with(config: &Path, env: &[(String, String)]) -> Serve {
        Serve::start_with_args(config, &[], env)
    }

    /// [`Serve::start_with`], with extra arguments after `--listen` (`--shard auto`).
    pub fn start_with_args(config: &Path, args: &[&str], env: &[(String, String)]) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_pullprobe"));
        command
            .args(["serve", "--log-json", "true", "-c"])
            .arg(config)
            .args(["--listen", &addr])
            .args(args)
            .current_dir(dir.path())
            .env("DOCKER_CONFIG", dir.path())
            .env_remove("RUST_LOG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        let child = command.spawn().expect("starting pullprobe serve");
        let serve = Serve { child, addr, log, _dir: dir };
        serve.wait_for("/healthz", |body| body == "ok\n", Duration::from_secs(20));
        serve
    }

    /// Status and body of `GET path` (status 0 and the error when nothing answered).
    pub fn get(&self, path: &str) -> (u16, String) {
        match http_get(&self.addr, path) {
            Ok(r) => (r.status, String::from_utf8_lossy(&r.body).to_string()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// The body of `GET path` once it answers 200 and `done` holds; the test fails after `timeout`.
    pub fn wait_for(&self, path: &str, done: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(path);
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never became ready; last answer {status}:\n{body}\nlog:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until `done` holds (something the test observes elsewhere); the test fails after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + timeout;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -NAME` to this serve (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status =
            Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
