//! Real monitoring servers for the paging tests, on ephemeral loopback ports
//! with their own temporary directories, stopped by PID:
//!
//! - [`Webhook`]: a tiny HTTP server run by the test that records every
//!   notification an Alertmanager sends it.
//! - [`Alertmanager`]: `prometheus-alertmanager` without clustering, routing
//!   every alert to its own [`Webhook`] quickly (short group wait/interval),
//!   optionally behind basic auth ([`AM_USER`] / [`AM_PASSWORD`]).
//! - [`Pushgateway`]: `prometheus-pushgateway` with a persistence file.
//! - [`promtool`]: the path of `promtool`.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::process::{RawResponse, free_port, http_request, instance_id, require_binary, stop_child};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const PUSHGATEWAY: &str = "/usr/bin/prometheus-pushgateway";
const PROMTOOL: &str = "/usr/bin/promtool";
const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Basic-auth user and password of an [`Alertmanager`] started with auth.
pub const AM_USER: &str = "pullprobe";
pub const AM_PASSWORD: &str = "s3cret-am-password";
/// bcrypt of [`AM_PASSWORD`] (`crypt(AM_PASSWORD, "$2b$05$abcdefghijklmnopqrstuu")`).
const AM_PASSWORD_BCRYPT: &str = "$2b$05$abcdefghijklmnopqrstuuuxFHPqmTckxTdQbhgZFQE9GTD7vgxEC";

/// The path of `promtool`, or a panic that says how to install it.
pub fn promtool() -> std::path::PathBuf {
    require_binary(PROMTOOL, "prometheus")
}

/// An HTTP server that records the JSON bodies POSTed to it (Alertmanager webhook notifications).
pub struct Webhook {
    port: u16,
    received: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Webhook {
    pub fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the webhook");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("webhook address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let received = received.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(body) = read_post(stream) {
                                if let Ok(json) = serde_json::from_slice::<Value>(&body) {
                                    received.lock().unwrap().push(json);
                                }
                            }
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Webhook { port, received, stop, thread: Some(thread) }
    }

    /// `http://127.0.0.1:PORT/hook`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every notification received so far.
    pub fn notifications(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }

    /// Every alert of every notification so far, in order.
    pub fn alerts(&self) -> Vec<Value> {
        self.notifications().iter().flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// Wait until an alert satisfies `predicate`; panics listing what arrived.
    pub fn wait_for_alert(&self, what: &str, timeout: Duration, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(alert) = self.alerts().into_iter().rev().find(|a| predicate(a)) {
                return alert;
            }
            if Instant::now() > deadline {
                panic!("webhook: no {what} within {timeout:?}; notifications:\n{:#?}", self.notifications());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Read one HTTP request (with a Content-Length body), answer 200, return the body.
fn read_post(mut stream: TcpStream) -> Option<Vec<u8>> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while raw.len() < head_end + length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(raw[head_end..].to_vec())
}

/// A running Alertmanager (no cluster); stopped (by PID) when dropped.
pub struct Alertmanager {
    dir: TempDir,
    port: u16,
    instance: String,
    basic_auth: bool,
    child: Option<Child>,
}

impl Alertmanager {
    /// An Alertmanager that sends every alert group to `webhook` (grouped by all
    /// labels, 100ms group wait, 1s group interval, repeats every 2s, resolved too).
    pub fn start(webhook: &Webhook, basic_auth: bool) -> Alertmanager {
        require_binary(ALERTMANAGER, "prometheus-alertmanager");
        let dir = tempfile::Builder::new().prefix("pullprobe-alertmanager-").tempdir().expect("temp dir");
        let instance = instance_id();
        let config = format!(
            "route:\n  receiver: hook-{instance}\n  group_by: ['...']\n  group_wait: 100ms\n  group_interval: 1s\n  repeat_interval: 2s\n\
             receivers:\n  - name: hook-{instance}\n    webhook_configs:\n      - url: {url}\n        send_resolved: true\n",
            url = webhook.url()
        );
        fs::write(dir.path().join("alertmanager.yml"), config).expect("writing the Alertmanager config");
        let web = format!("basic_auth_users:\n  {AM_USER}: {AM_PASSWORD_BCRYPT}\n");
        fs::write(dir.path().join("web.yml"), web).expect("writing the web config");
        let mut am = Alertmanager { dir, port: 0, instance, basic_auth, child: None };
        for _ in 0..START_ATTEMPTS {
            am.port = free_port();
            if am.spawn() {
                return am;
            }
        }
        panic!("alertmanager did not start on a free port; log:\n{}", am.log());
    }

    fn spawn(&mut self) -> bool {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let mut command = Command::new(ALERTMANAGER);
        command
            .arg(format!("--config.file={}", self.dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", self.dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        if self.basic_auth {
            command.arg(format!("--web.config.file={}", self.dir.path().join("web.yml").display()));
        }
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {ALERTMANAGER}: {e}"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                if self.log().contains("address already in use") {
                    return false;
                }
                panic!("alertmanager exited; log:\n{}", self.log());
            }
            // Ready, and ours: its config names our receiver.
            if let Ok(r) = self.get("/api/v2/status") {
                if r.status == 200 && String::from_utf8_lossy(&r.body).contains(&self.instance) {
                    self.child = Some(child);
                    return true;
                }
            }
            if Instant::now() > deadline {
                stop_child(&mut child);
                panic!("alertmanager did not become ready; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn get(&self, path: &str) -> std::io::Result<RawResponse> {
        let auth = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{AM_USER}:{AM_PASSWORD}"))
        );
        let headers: Vec<(&str, &str)> = if self.basic_auth { vec![("Authorization", &auth)] } else { vec![] };
        http_request("GET", &format!("127.0.0.1:{}", self.port), path, &headers)
    }

    /// The alerts it holds now (`GET /api/v2/alerts`: active ones, silenced or not).
    pub fn alerts(&self) -> Vec<Value> {
        let r = self.get("/api/v2/alerts").expect("GET /api/v2/alerts");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice::<Vec<Value>>(&r.body).expect("alerts JSON")
    }

    /// Stop it (by PID), as a replica that went down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("alertmanager.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running Pushgateway; stopped (by PID) when dropped.
pub struct Pushgateway {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        require_binary(PUSHGATEWAY, "prometheus-pushgateway");
        let dir = tempfile::Builder::new().prefix("pullprobe-pushgateway-").tempdir().expect("temp dir");
        let mut pg = Pushgateway { dir, port: 0, child: None };
        for _ in 0..START_ATTEMPTS {
            pg.port = free_port();
            if pg.spawn() {
                return pg;
            }
        }
        panic!("pushgateway did not start on a free port; log:\n{}", pg.log());
    }

    fn spawn(&mut self) -> bool {
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("log file");
        let persistence = self.dir.path().join("pushgateway.data");
        let mut child = Command::new(PUSHGATEWAY)
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg(format!("--persistence.file={}", persistence.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PUSHGATEWAY}: {e}"));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                if self.log().contains("address already in use") {
                    return false;
                }
                panic!("pushgateway exited; log:\n{}", self.log());
            }
            // Ready, and ours: its flags name our persistence file.
            if let Ok(r) = http_request("GET", &self.host_port(), "/api/v1/status", &[]) {
                if r.status == 200 && String::from_utf8_lossy(&r.body).contains(&*persistence.to_string_lossy()) {
                    self.child = Some(child);
                    return true;
                }
            }
            if Instant::now() > deadline {
                stop_child(&mut child);
                panic!("pushgateway did not become ready; log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.host_port())
    }

    /// `GET /api/v1/metrics`: every group with its metric families.
    pub fn groups(&self) -> Vec<Value> {
        let r = http_request("GET", &self.host_port(), "/api/v1/metrics", &[]).expect("GET /api/v1/metrics");
        assert_eq!(r.status, 200);
        let body: Value = serde_json::from_slice(&r.body).expect("JSON");
        body["data"].as_array().cloned().unwrap_or_default()
    }

    /// The text exposition Prometheus would scrape.
    pub fn metrics_text(&self) -> String {
        let r = http_request("GET", &self.host_port(), "/metrics", &[]).expect("GET /metrics");
        String::from_utf8_lossy(&r.body).to_string()
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("pushgateway.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}
