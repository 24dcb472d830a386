//! A real CNCF distribution registry (`/usr/bin/docker-registry serve CONFIG`)
//! on an ephemeral loopback port, with its own temporary storage, and the
//! storage faults the tests inject behind its back.
//!
//! The registry keeps an in-memory blob descriptor cache (as the packaged
//! default config does): after a blob's data file is deleted, HEAD still
//! answers 200 and GET answers 200 with the full Content-Length and no body,
//! until [`Registry::restart`] drops the cache.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use image_builder::Digest;
use tempfile::TempDir;
use url::Url;

use super::process::{
    INSTANCE_HEADER, Readiness, free_port, instance_id, require_binary, stop_child, wait_until_ready,
};

const BINARY: &str = "/usr/bin/docker-registry";
const PACKAGE: &str = "docker-registry";
const START_ATTEMPTS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How to configure the registry.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// `storage.cache.blobdescriptor: inmemory` (the packaged default).
    pub blob_descriptor_cache: bool,
    /// Serve HTTPS with this certificate and key (`http.tls`).
    pub tls: Option<super::pki::PemPair>,
    /// The registry's `auth:` section.
    pub auth: Option<RegistryAuth>,
    /// `http.secret`: instances behind one load balancer must share it.
    pub secret: String,
    /// `storage.filesystem.rootdirectory` shared with other instances (default: its own).
    pub shared_storage: Option<PathBuf>,
    /// `storage.delete.enabled` (manifest `DELETE` answers 405 `UNSUPPORTED` without it).
    pub delete_enabled: bool,
    /// `catalog.maxentries`: the largest `/v2/_catalog` page (distribution's default is 1000;
    /// a request asking for more is refused with 400 `PAGINATION_NUMBER_INVALID`).
    pub catalog_max_entries: Option<usize>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            blob_descriptor_cache: true,
            tls: None,
            auth: None,
            secret: "pullprobe-test-secret".into(),
            shared_storage: None,
            delete_enabled: true,
            catalog_max_entries: None,
        }
    }
}

/// distribution's `auth:` modes.
#[derive(Debug, Clone)]
pub enum RegistryAuth {
    /// `htpasswd` with this file of bcrypt entries (realm `pullprobe-test`).
    Htpasswd(PathBuf),
    /// `token`: tokens from `realm`, signed by a key whose certificate is in `rootcertbundle`.
    Token { realm: String, service: String, issuer: String, rootcertbundle: PathBuf },
}

/// A running registry; stopped (by PID) when dropped.
pub struct Registry {
    dir: TempDir,
    port: u16,
    instance: String,
    options: RegistryOptions,
    child: Option<Child>,
}

impl Registry {
    pub fn start() -> Registry {
        Registry::start_with(RegistryOptions::default())
    }

    pub fn start_with(options: RegistryOptions) -> Registry {
        require_binary(BINARY, PACKAGE);
        let dir = tempfile::Builder::new().prefix("pullprobe-registry-").tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("storage")).expect("storage dir");
        fs::create_dir_all(dir.path().join("scratch")).expect("scratch dir");
        let mut registry = Registry { dir, port: 0, instance: instance_id(), options, child: None };
        for _ in 0..START_ATTEMPTS {
            registry.port = free_port();
            if registry.spawn() {
                return registry;
            }
        }
        panic!("docker-registry did not start on a free port in {START_ATTEMPTS} attempts; log:\n{}", registry.log());
    }

    /// Stop the registry and start it again on the same port with the same storage.
    /// Whatever it kept in memory (the blob descriptor cache) is gone.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        for _ in 0..START_ATTEMPTS {
            if self.spawn() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("docker-registry did not restart on port {}; log:\n{}", self.port, self.log());
    }

    /// Write the config for the current port and start; false if the port was taken.
    fn spawn(&mut self) -> bool {
        let config = self.dir.path().join("config.yml");
        fs::write(&config, self.config()).expect("writing the registry config");
        let log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("opening the registry log");
        let log_start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let ready = if self.options.tls.is_some() {
            wait_until_listening(&mut child, &self.log_path(), log_start, self.port)
        } else {
            wait_until_ready(&mut child, &self.host_port(), "/v2/", &self.instance, READY_TIMEOUT)
        };
        match ready {
            Readiness::Ready => {
                self.child = Some(child);
                true
            }
            Readiness::Exited(_) if self.log().contains("address already in use") => false,
            outcome => {
                stop_child(&mut child);
                panic!("docker-registry did not become ready ({outcome:?}); log:\n{}", self.log());
            }
        }
    }

    fn config(&self) -> String {
        let cache = if self.options.blob_descriptor_cache { "  cache:\n    blobdescriptor: inmemory\n" } else { "" };
        format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: {delete}\n{cache}\
             \x20 maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n\
             \x20 headers:\n    {INSTANCE_HEADER}: [\"{instance}\"]\n{tls}{auth}{catalog}",
            root = self.root().display(),
            delete = self.options.delete_enabled,
            secret = self.options.secret,
            port = self.port,
            instance = self.instance,
            tls = match &self.options.tls {
                Some(pair) =>
                    format!("  tls:\n    certificate: {}\n    key: {}\n", pair.cert.display(), pair.key.display()),
                None => String::new(),
            },
            auth = match &self.options.auth {
                None => String::new(),
                Some(RegistryAuth::Htpasswd(path)) => {
                    format!("auth:\n  htpasswd:\n    realm: pullprobe-test\n    path: {}\n", path.display())
                }
                Some(RegistryAuth::Token { realm, service, issuer, rootcertbundle }) => format!(
                    "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
                     rootcertbundle: {}\n",
                    rootcertbundle.display()
                ),
            },
            catalog = match self.options.catalog_max_entries {
                Some(entries) => format!("catalog:\n  maxentries: {entries}\n"),
                None => String::new(),
            },
        )
    }

    /// Stop, take new options (TLS, auth), and start again on the same port with the same storage.
    pub fn restart_with(&mut self, options: RegistryOptions) {
        self.options = options;
        self.restart();
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS)
    pub fn url(&self) -> Url {
        let scheme = if self.options.tls.is_some() { "https" } else { "http" };
        Url::parse(&format!("{scheme}://{}", self.host_port())).expect("registry URL")
    }

    /// `127.0.0.1:PORT`
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// An image reference on this registry: `127.0.0.1:PORT/repo:tag` (or `@sha256:…`).
    pub fn reference(&self, repo: &str, tag_or_digest: &str) -> String {
        let sep = if tag_or_digest.starts_with("sha256:") { '@' } else { ':' };
        format!("{}/{repo}{sep}{tag_or_digest}", self.host_port())
    }

    /// The storage root (`rootdirectory`): `<root>/docker/registry/v2/…`.
    pub fn root(&self) -> PathBuf {
        self.options.shared_storage.clone().unwrap_or_else(|| self.dir.path().join("storage"))
    }

    /// A directory for images built by the test, removed with the registry.
    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The registry's log so far (it logs at info level, one line per request).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `<root>/docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data`
    pub fn blob_data_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(&hex).join("data")
    }

    /// The upload session directories of a repository (`_uploads/<uuid>`).
    pub fn upload_sessions(&self, repo: &str) -> Vec<PathBuf> {
        let dir = self.root().join("docker/registry/v2/repositories").join(repo).join("_uploads");
        match fs::read_dir(dir) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Remove a blob's data file, as a deleted storage bucket does.
    pub fn delete_blob(&self, digest: &Digest) {
        let path = self.existing_blob(digest);
        fs::remove_file(&path).unwrap_or_else(|e| panic!("deleting {}: {e}", path.display()));
    }

    /// Keep only the first `keep_bytes` bytes of a blob.
    pub fn truncate_blob(&self, digest: &Digest, keep_bytes: u64) {
        let path = self.existing_blob(digest);
        let file = OpenOptions::new().write(true).open(&path).expect("opening blob data");
        file.set_len(keep_bytes).expect("truncating blob data");
    }

    /// Invert one byte of a blob (same size, wrong digest).
    pub fn flip_byte(&self, digest: &Digest, offset: u64) {
        flip_byte_in_file(&self.existing_blob(digest), offset);
    }

    /// Replace a blob's bytes with others.
    pub fn replace_blob(&self, digest: &Digest, bytes: &[u8]) {
        let path = self.existing_blob(digest);
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    fn existing_blob(&self, digest: &Digest) -> PathBuf {
        let path = self.blob_data_path(digest);
        assert!(path.is_file(), "blob {digest} is not in the registry's storage ({})", path.display());
        path
    }
}

/// Wait until a registry serving TLS logs that it listens on `port` (a plain
/// HTTP readiness request cannot reach it); our own log proves it is ours.
fn wait_until_listening(child: &mut Child, log: &Path, log_start: usize, port: u16) -> Readiness {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let wanted = format!("listening on 127.0.0.1:{port}, tls");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Readiness::Exited(status);
        }
        if fs::read(log)
            .is_ok_and(|l| String::from_utf8_lossy(l.get(log_start..).unwrap_or_default()).contains(&wanted))
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        {
            return Readiness::Ready;
        }
        if std::time::Instant::now() > deadline {
            return Readiness::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Invert the byte at `offset` of a file.
pub fn flip_byte_in_file(path: &Path, offset: u64) {
    let mut file = OpenOptions::new().read(true).write(true).open(path).expect("opening file to corrupt");
    let len = file.metadata().expect("file metadata").len();
    assert!(offset < len, "offset {offset} is past the end of {} ({len} bytes)", path.display());
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    std::io::Read::read_exact(&mut file, &mut byte).expect("read");
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write");
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}
