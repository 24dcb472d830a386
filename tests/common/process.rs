//! Plumbing shared by the servers the tests start: finding their binaries,
//! picking loopback ports, running commands with a deadline, raw HTTP for
//! readiness checks, and stopping exactly the process that was started.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The header every server started by the harness adds to its answers, so a
/// readiness check can tell our server from another one that took the port.
pub const INSTANCE_HEADER: &str = "x-pullprobe-test-instance";

/// The path of a binary the tests need, or a panic that says how to install it.
pub fn require_binary(path: &str, package: &str) -> PathBuf {
    let p = Path::new(path);
    if !p.is_file() {
        panic!(
            "{path} is not installed; these tests run the real program. \
             Install it with `apt-get install -y {package}` (scripts/install-deps installs everything)"
        );
    }
    p.to_path_buf()
}

/// A loopback port that was free a moment ago (bind port 0, read it, close).
/// The caller must cope with losing a race for it.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("binding 127.0.0.1:0")
}

/// A string no other server of this machine uses.
pub fn instance_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// An HTTP answer read by [`http_request`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// A header's value (names compared without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.0 request to `host_port` (`127.0.0.1:5000`), read to the end.
/// Blocking and dependency-free: for readiness checks and quick assertions.
pub fn http_request(method: &str, host_port: &str, path: &str, headers: &[(&str, &str)]) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect(host_port)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {host_port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    Ok(RawResponse { status, headers, body: raw[split + 4..].to_vec() })
}

pub fn http_get(host_port: &str, path: &str) -> io::Result<RawResponse> {
    http_request("GET", host_port, path, &[])
}

/// How waiting for a server ended.
#[derive(Debug)]
pub enum Readiness {
    Ready,
    /// The process exited (a port clash, a bad config): see its log.
    Exited(ExitStatus),
    TimedOut,
}

/// Wait until `GET path` on `host_port` is answered by the server carrying `instance`.
pub fn wait_until_ready(
    child: &mut Child,
    host_port: &str,
    path: &str,
    instance: &str,
    timeout: Duration,
) -> Readiness {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Readiness::Exited(status);
        }
        if let Ok(response) = http_get(host_port, path) {
            if response.header(INSTANCE_HEADER) == Some(instance) {
                return Readiness::Ready;
            }
        }
        if Instant::now() > deadline {
            return Readiness::TimedOut;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Stop the process we started (by its handle, so by its PID) and reap it.
pub fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// The exit code; -1 if a signal ended it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run a command to its end or until `timeout`, which is a test failure.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> CommandOutput {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                stop_child(&mut child);
                let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).to_string();
                panic!("{description} did not finish within {timeout:?}; stderr so far:\n{stderr}");
            }
        }
    };
    CommandOutput {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).to_string(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).to_string(),
    }
}
