//! A real nginx load balancer on an ephemeral loopback port: one `upstream`
//! with several servers, round-robin, every request routed on its own (no
//! keep-alive to the upstreams, nothing retried on another server) — the way
//! a load balancer in front of several registry instances spreads one
//! client's upload session over them.
//!
//! nginx runs with `master_process off` (one process) in its own temp dir, and
//! is stopped by its PID when dropped.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use url::Url;

use super::process::{
    INSTANCE_HEADER, Readiness, free_port, instance_id, require_binary, stop_child, wait_until_ready,
};

const BINARY: &str = "/usr/sbin/nginx";
const PACKAGE: &str = "nginx";
const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running round-robin nginx; stopped (by PID) when dropped.
pub struct Balancer {
    dir: TempDir,
    port: u16,
    upstreams: Vec<String>,
    instance: String,
    child: Option<Child>,
}

impl Balancer {
    /// Round-robin every request over `upstreams` (`127.0.0.1:PORT` each).
    pub fn start(upstreams: &[String]) -> Balancer {
        require_binary(BINARY, PACKAGE);
        assert!(!upstreams.is_empty(), "a balancer needs upstreams");
        let dir = tempfile::Builder::new().prefix("pullprobe-balancer-").tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("tmp")).expect("nginx temp dir");
        let mut balancer =
            Balancer { dir, port: 0, upstreams: upstreams.to_vec(), instance: instance_id(), child: None };
        for _ in 0..START_ATTEMPTS {
            balancer.port = free_port();
            if balancer.spawn() {
                return balancer;
            }
        }
        panic!("nginx did not start on a free port in {START_ATTEMPTS} attempts; error log:\n{}", balancer.error_log());
    }

    fn spawn(&mut self) -> bool {
        let conf = self.dir.path().join("nginx.conf");
        fs::write(&conf, self.config()).expect("writing nginx.conf");
        let mut child = Command::new(BINARY)
            .arg("-e")
            .arg(self.error_log_path())
            .arg("-p")
            .arg(self.dir.path())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        match wait_until_ready(&mut child, &self.host_port(), "/balancer-ready", &self.instance, READY_TIMEOUT) {
            Readiness::Ready => {
                self.child = Some(child);
                true
            }
            Readiness::Exited(_) if self.error_log().contains("Address already in use") => false,
            outcome => {
                stop_child(&mut child);
                panic!("nginx did not become ready ({outcome:?}); error log:\n{}", self.error_log());
            }
        }
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        let servers: String = self.upstreams.iter().map(|u| format!("        server {u} max_fails=0;\n")).collect();
        format!(
            "master_process off;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   log_format balancer '\"$request\" $status upstream=$upstream_addr';\n\
             \x20   access_log {d}/access.log balancer;\n\
             \x20   client_body_temp_path {d}/tmp/client_body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   client_max_body_size 0;\n\
             \x20   upstream registries {{\n\
             {servers}\
             \x20   }}\n\
             \x20   server {{\n\
             \x20       listen 127.0.0.1:{port};\n\
             \x20       location / {{\n\
             \x20           proxy_pass http://registries;\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Host $http_host;\n\
             \x20           proxy_set_header Connection \"\";\n\
             \x20           proxy_next_upstream off;\n\
             \x20           proxy_request_buffering off;\n\
             \x20           proxy_read_timeout 300s;\n\
             \x20           add_header {INSTANCE_HEADER} {instance} always;\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
            port = self.port,
            instance = self.instance,
        )
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.host_port())).expect("balancer URL")
    }

    /// `127.0.0.1:PORT`
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// One line per request: `"METHOD /path HTTP/1.1" STATUS upstream=ADDR`.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}
