//! A real nginx in front of registries, on an ephemeral loopback port, with
//! everything it writes (pid, logs, temp files, cache) in its own temp dir —
//! the one launcher for every frontend the tests need:
//!
//! - a plain reverse proxy, on one or several loopback addresses, optionally
//!   answering `/v2/_catalog` with its own 404;
//! - a `proxy_cache` frontend keyed on the URI that says `X-Cache-Status`, and
//!   the "poisoned cache" fault: a cached blob whose body is corrupted on disk
//!   and then served as a HIT;
//! - a round-robin load balancer over several registries, every request routed
//!   on its own (no keep-alive to the upstreams, nothing retried on another);
//! - TLS with `ssl_verify_client on` (mTLS) in front of a registry.
//!
//! One access log format serves them all:
//! `ADDR host=HOST "REQUEST" STATUS BYTES cache=… upstream=UPSTREAM server=LISTEN_ADDR`.
//! nginx runs with `master_process off` (one process), so stopping the child
//! we started stops all of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image_builder::Digest;
use tempfile::TempDir;
use url::Url;

use super::pki::PemPair;
use super::process::{
    INSTANCE_HEADER, Readiness, free_port, instance_id, require_binary, stop_child, wait_until_ready,
};
use super::registry::flip_byte_in_file;

const BINARY: &str = "/usr/sbin/nginx";
const PACKAGE: &str = "nginx";
const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// What one nginx does with the requests it gets.
#[derive(Debug, Clone, Default)]
struct Site {
    /// Where requests go (`127.0.0.1:PORT`); several are balanced round-robin.
    upstreams: Vec<String>,
    /// Loopback addresses it listens on, all on one port (the first is used for readiness and `url()`).
    listen_ips: Vec<String>,
    cache: bool,
    /// Answer `/v2/_catalog` with nginx's own 404 page instead of proxying it.
    hide_catalog: bool,
    /// Serve TLS with this certificate and demand client certificates signed by `client_ca`.
    mtls: Option<(PemPair, PathBuf)>,
}

impl Site {
    /// Everything to `upstream`, listening on 127.0.0.1.
    fn proxy(upstream: &str) -> Site {
        Site { upstreams: vec![upstream.to_string()], listen_ips: vec!["127.0.0.1".to_string()], ..Site::default() }
    }
}

/// A running nginx; stopped (by PID) when dropped.
pub struct Nginx {
    dir: TempDir,
    port: u16,
    site: Site,
    instance: String,
    child: Option<Child>,
}

impl Nginx {
    /// A plain reverse proxy to `upstream` (`127.0.0.1:PORT`).
    pub fn start_proxy(upstream: &str) -> Nginx {
        Nginx::start(Site::proxy(upstream))
    }

    /// A caching frontend for `upstream`: `proxy_cache` keyed on `$request_uri`,
    /// 200s kept a day, `X-Cache-Status` on every answer.
    pub fn start_cache(upstream: &str) -> Nginx {
        Nginx::start(Site { cache: true, ..Site::proxy(upstream) })
    }

    /// A plain reverse proxy listening on several loopback addresses (e.g. 127.0.0.2 and
    /// 127.0.0.3) on one port: the several A records behind one registry name.
    pub fn start_proxy_on(upstream: &str, ips: &[&str]) -> Nginx {
        Nginx::start(Site { listen_ips: ips.iter().map(|ip| ip.to_string()).collect(), ..Site::proxy(upstream) })
    }

    /// A plain reverse proxy that answers `/v2/_catalog` with its own 404, as many
    /// production frontends do to keep the repository list private.
    pub fn start_proxy_hiding_catalog(upstream: &str) -> Nginx {
        Nginx::start(Site { hide_catalog: true, ..Site::proxy(upstream) })
    }

    /// A load balancer: every request to the next of `upstreams`, round-robin — the
    /// way one client's upload session is spread over several registry instances.
    pub fn start_balancer(upstreams: &[String]) -> Nginx {
        assert!(!upstreams.is_empty(), "a balancer needs upstreams");
        Nginx::start(Site { upstreams: upstreams.to_vec(), ..Site::proxy("") })
    }

    /// TLS with the `server` certificate in front of `upstream`, demanding a client
    /// certificate signed by `client_ca` (`ssl_verify_client on`).
    pub fn start_mtls(upstream: &str, server: &PemPair, client_ca: &Path) -> Nginx {
        Nginx::start(Site { mtls: Some((server.clone(), client_ca.to_path_buf())), ..Site::proxy(upstream) })
    }

    fn start(site: Site) -> Nginx {
        require_binary(BINARY, PACKAGE);
        let dir = tempfile::Builder::new().prefix("pullprobe-nginx-").tempdir().expect("temp dir");
        for sub in ["tmp", "cache"] {
            fs::create_dir_all(dir.path().join(sub)).expect("nginx dirs");
        }
        let mut nginx = Nginx { dir, port: 0, site, instance: instance_id(), child: None };
        for _ in 0..START_ATTEMPTS {
            nginx.port = free_port();
            if nginx.spawn() {
                return nginx;
            }
        }
        panic!("nginx did not start on a free port in {START_ATTEMPTS} attempts; error log:\n{}", nginx.error_log());
    }

    fn spawn(&mut self) -> bool {
        let conf = self.dir.path().join("nginx.conf");
        fs::write(&conf, self.config()).expect("writing nginx.conf");
        let mut child = Command::new(BINARY)
            // -e: the error log before the config is read (the compiled-in one is outside the temp dir).
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
        // Any path answers with our instance header, even if the upstream is down (502),
        // and a TLS port answers plain HTTP with its own 400.
        match wait_until_ready(&mut child, &self.host_port(), "/nginx-ready", &self.instance, READY_TIMEOUT) {
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
        let site = &self.site;
        let instance = format!("add_header {INSTANCE_HEADER} {} always;", self.instance);
        let (cache_path, cache) = if site.cache {
            (
                format!(
                    "    proxy_cache_path {d}/cache levels=1:2 keys_zone=pullprobe_test:10m max_size=10g inactive=1d use_temp_path=off;\n"
                ),
                "            proxy_cache pullprobe_test;\n\
                 \x20           proxy_cache_key $request_uri;\n\
                 \x20           proxy_cache_valid 200 1d;\n\
                 \x20           add_header X-Cache-Status $upstream_cache_status always;\n"
                    .to_string(),
            )
        } else {
            (String::new(), String::new())
        };
        let (upstream_block, upstream, balancing) = if site.upstreams.len() > 1 {
            let servers: String = site.upstreams.iter().map(|u| format!("        server {u} max_fails=0;\n")).collect();
            (
                format!("    upstream registries {{\n{servers}    }}\n"),
                "registries".to_string(),
                "            proxy_set_header Connection \"\";\n\
                 \x20           proxy_next_upstream off;\n",
            )
        } else {
            (String::new(), site.upstreams[0].clone(), "")
        };
        let (ssl, tls) = match &site.mtls {
            Some((server, client_ca)) => (
                " ssl",
                format!(
                    "        ssl_certificate {};\n        ssl_certificate_key {};\n\
                     \x20       ssl_client_certificate {};\n        ssl_verify_client on;\n",
                    server.cert.display(),
                    server.key.display(),
                    client_ca.display()
                ),
            ),
            None => ("", String::new()),
        };
        let listen: String =
            site.listen_ips.iter().map(|ip| format!("        listen {ip}:{}{ssl};\n", self.port)).collect();
        let catalog = if site.hide_catalog {
            format!("        location = /v2/_catalog {{\n            {instance}\n            return 404;\n        }}\n")
        } else {
            String::new()
        };
        format!(
            "master_process off;\n\
             daemon off;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 512; }}\n\
             http {{\n\
             \x20   log_format pullprobe_test '$remote_addr host=$host \"$request\" $status $body_bytes_sent \
             cache=$upstream_cache_status upstream=$upstream_addr server=$server_addr';\n\
             \x20   access_log {d}/access.log pullprobe_test;\n\
             \x20   client_body_temp_path {d}/tmp/client_body;\n\
             \x20   proxy_temp_path {d}/tmp/proxy;\n\
             \x20   fastcgi_temp_path {d}/tmp/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/tmp/uwsgi;\n\
             \x20   scgi_temp_path {d}/tmp/scgi;\n\
             \x20   client_max_body_size 0;\n\
             {cache_path}\
             {upstream_block}\
             \x20   server {{\n\
             {listen}\
             {tls}\
             \x20       {instance}\n\
             {catalog}\
             \x20       location / {{\n\
             \x20           proxy_pass http://{upstream};\n\
             \x20           proxy_http_version 1.1;\n\
             \x20           proxy_set_header Host $http_host;\n\
             {balancing}\
             \x20           proxy_request_buffering off;\n\
             \x20           proxy_read_timeout 300s;\n\
             {cache}\
             \x20           {instance}\n\
             \x20       }}\n\
             \x20   }}\n\
             }}\n",
        )
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.host_port())).expect("nginx URL")
    }

    /// `127.0.0.1:PORT` (the first listen address)
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.site.listen_ips[0], self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temp dir holding config, logs, temp files and cache.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    pub fn error_log(&self) -> String {
        fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    /// One line per request: `ADDR host=HOST "GET /v2/… HTTP/1.1" STATUS BYTES cache=HIT|MISS|- upstream=ADDR server=LISTEN_ADDR`.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The cache file holding the blob `digest` (its key ends in `/blobs/<digest>`), if cached.
    pub fn cached_blob_file(&self, digest: &Digest) -> Option<PathBuf> {
        let suffix = format!("/blobs/{digest}");
        cache_files(&self.cache_dir()).into_iter().find(|path| {
            fs::read(path).ok().and_then(|bytes| cache_key(&bytes)).is_some_and(|key| key.ends_with(&suffix))
        })
    }

    /// Wait (nginx renames the cache file into place as the response completes) for a blob's cache file.
    pub fn wait_for_cached_blob(&self, digest: &Digest) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(path) = self.cached_blob_file(digest) {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "blob {digest} did not appear in the nginx cache {:?}",
                self.cache_dir()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poison the cache: invert the byte at `offset` of the cached body of blob `digest`
    /// (the header with `KEY:` and the stored response headers stay intact).
    pub fn corrupt_cached_blob(&self, digest: &Digest, offset: u64) -> PathBuf {
        let path = self.wait_for_cached_blob(digest);
        let bytes = fs::read(&path).expect("reading the cache file");
        let body_start = cache_body_start(&bytes).expect("cache file has a header block");
        flip_byte_in_file(&path, body_start as u64 + offset);
        path
    }
}

/// Files of the cache tree named like nginx names them (32 hex digits of the key's md5).
fn cache_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(cache_files(&path));
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            found.push(path);
        }
    }
    found
}

/// The `KEY: …` line of a cache file's header.
fn cache_key(bytes: &[u8]) -> Option<String> {
    let start = bytes.windows(6).position(|w| w == b"\nKEY: ")? + 6;
    let end = start + bytes[start..].iter().position(|b| *b == b'\n')?;
    Some(String::from_utf8_lossy(&bytes[start..end]).to_string())
}

/// Where the cached body starts: after the stored upstream response headers that follow the key.
fn cache_body_start(bytes: &[u8]) -> Option<usize> {
    let key = bytes.windows(6).position(|w| w == b"\nKEY: ")?;
    let headers_end = key + bytes[key..].windows(4).position(|w| w == b"\r\n\r\n")?;
    Some(headers_end + 4)
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}
