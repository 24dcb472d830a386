//! Registries as configured: URL, frontends, address family, credentials, TLS.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use crate::reference::{DOCKER_HUB, DOCKER_HUB_API_HOST};

/// One `registries:` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The `registry` label and what `registry:` in a probe names.
    pub name: String,
    /// Scheme, host and port; the path is always `/`.
    pub url: Url,
    pub frontends: FrontendSet,
    pub ip_family: IpFamily,
    pub auth: Option<Auth>,
    pub tls: Option<TlsConfig>,
    /// The files of pullprobe's own that `auth:` and `tls:` name, where they are
    /// named: checked before a run, so that a missing or unreadable one is a
    /// config error (exit 2, UNKNOWN, `pullprobe_config_error`), not a registry failure.
    pub files: Vec<FileKey>,
}

/// A key of probes.yaml that names a file pullprobe reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileKey {
    /// `ca_file`, `client_cert`, `client_key`, `password_file`, `docker_config`.
    pub key: &'static str,
    pub path: PathBuf,
    /// Where the key's value is in probes.yaml.
    pub position: Option<crate::config::Position>,
}

impl RegistryConfig {
    pub fn new(name: &str, url: Url) -> Self {
        RegistryConfig {
            name: name.to_string(),
            url,
            frontends: FrontendSet::Single,
            ip_family: IpFamily::Any,
            auth: None,
            tls: None,
            files: Vec::new(),
        }
    }

    /// `host[:port]` as it appears in an image reference (`docker.io` for Docker Hub;
    /// the port only when it is not the scheme's default).
    pub fn host(&self) -> String {
        reference_host(&self.url)
    }
}

/// `host[:port]` of a URL as an image reference writes it.
pub(crate) fn reference_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if host == DOCKER_HUB_API_HOST || host == "index.docker.io" {
        return DOCKER_HUB.to_string();
    }
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

/// Which frontends of a registry are probed, each separately.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FrontendSet {
    /// One connection, as any client makes (right for CDNs and cloud registries).
    #[default]
    Single,
    /// Every A/AAAA address of the registry's name, re-resolved each round; label = the IP.
    Dns,
    /// Exactly these.
    List(Vec<FrontendSpec>),
    /// The mirrors a node's container runtime pulls through, read from its
    /// configuration every round: each mirror probed separately, plus one
    /// `node-order` result that pulls as the node would.
    Node(NodeMirrors),
}

/// Where a node's container runtime keeps its mirror configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMirrors {
    /// containerd's `config_path` (`/etc/containerd/certs.d`): `<dir>/<host>/hosts.toml`.
    Containerd(PathBuf),
    /// CRI-O's and podman's `registries.conf` (version 2).
    RegistriesConf(PathBuf),
}

impl NodeMirrors {
    /// The file or directory named in probes.yaml.
    pub fn path(&self) -> &std::path::Path {
        match self {
            NodeMirrors::Containerd(path) | NodeMirrors::RegistriesConf(path) => path,
        }
    }
}

/// One configured frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendSpec {
    /// Pin the TCP connection to this address; Host header and TLS SNI stay the
    /// registry's name. Without a port, the registry URL's port is used.
    Address { ip: IpAddr, port: Option<u16> },
    /// Another endpoint serving the registry's content (a cache, a proxy, a mirror).
    Endpoint {
        name: String,
        /// Scheme, host and port; the path is always `/`.
        url: Url,
        /// Prepended to every repository (`dockerhub-proxy/`); always ends in `/`.
        repository_prefix: Option<String>,
        /// containerd-style `?ns=` query parameter naming the upstream registry.
        ns: Option<String>,
    },
}

/// Why a string is not a frontend address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "expected an IP address like 10.0.0.2, 10.0.0.2:8443 or [2001:db8::1]:443, got {0:?} \
     (a host name goes in {{name: …, url: https://…}})"
)]
pub struct FrontendAddressError(pub String);

impl FrontendSpec {
    /// Parse `IP`, `IPv4:PORT`, `[IPv6]` or `[IPv6]:PORT`. A bare IPv6 address
    /// (`2001:db8::1`) is accepted too: it cannot carry a port.
    pub fn parse_address(s: &str) -> Result<FrontendSpec, FrontendAddressError> {
        let error = || FrontendAddressError(s.chars().take(100).collect());
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(FrontendSpec::Address { ip, port: None });
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let ip = inner.parse::<std::net::Ipv6Addr>().map_err(|_| error())?;
            return Ok(FrontendSpec::Address { ip: IpAddr::V6(ip), port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(FrontendSpec::Address { ip: addr.ip(), port: Some(addr.port()) }),
            _ => Err(error()),
        }
    }

    /// The `frontend` label: the address as written in canonical form, or the name.
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for FrontendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrontendSpec::Address { ip, port: None } => write!(f, "{ip}"),
            FrontendSpec::Address { ip, port: Some(port) } => write!(f, "{}", SocketAddr::new(*ip, *port)),
            FrontendSpec::Endpoint { name, .. } => f.write_str(name),
        }
    }
}

/// Which address families a registry is reached over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpFamily {
    #[default]
    Any,
    Ipv4,
    Ipv6,
}

impl IpFamily {
    /// "IPv4", "IPv6" or "of any family", for messages.
    pub fn describe(self) -> &'static str {
        match self {
            IpFamily::Any => "of any family",
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        }
    }

    /// Whether an address of this family may be used.
    pub fn allows(self, ip: IpAddr) -> bool {
        match self {
            IpFamily::Any => true,
            IpFamily::Ipv4 => ip.is_ipv4(),
            IpFamily::Ipv6 => ip.is_ipv6(),
        }
    }
}

/// Where a registry's credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A Docker `config.json` (or a `.dockerconfigjson` secret); `None` means
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    DockerConfig(Option<PathBuf>),
    /// A user name and a password read at run time.
    Basic { username: String, password: PasswordSource },
    /// A cloud's workload identity, or a kubelet credential provider plugin.
    Cloud(CloudAuth),
    /// `auth: auto`: chosen by the registry's host — ECR, Artifact Registry/GCR or
    /// ACR ([`CloudAuth::for_host`]), else the Docker config.
    Auto,
}

/// Credentials that a cloud issues to the workload, or that a plugin prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloudAuth {
    /// `{ecr: {}}`: AWS credentials (web identity, EKS Pod Identity, environment keys,
    /// instance profile), then ECR `GetAuthorizationToken`.
    Ecr,
    /// `{gcp: {}}`: the metadata server's access token (GKE Workload Identity).
    Gcp,
    /// `{acr: {}}`: an Entra workload identity token exchanged for an ACR refresh token.
    Acr,
    /// `{credential_provider: {command, args, env}}`: a kubelet credential provider plugin.
    CredentialProvider(CredentialProvider),
}

/// A kubelet credential provider plugin (`credentialprovider.kubelet.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialProvider {
    /// The executable: a path, or a name looked up on `PATH`.
    pub command: PathBuf,
    pub args: Vec<String>,
    /// Set for the plugin on top of pullprobe's own environment.
    pub env: Vec<(String, String)>,
}

impl CloudAuth {
    /// The cloud whose registry `host` (`host[:port]`) is, as `auth: auto` picks it:
    /// `*.dkr.ecr.*.amazonaws.com` → ECR, `gcr.io`, `*.gcr.io`, `*.pkg.dev` → GCP,
    /// `*.azurecr.io` (and the sovereign clouds' `azurecr.cn`, `.us`) → ACR.
    pub fn for_host(host: &str) -> Option<CloudAuth> {
        let host = host.split(':').next().unwrap_or_default().to_ascii_lowercase();
        let labels: Vec<&str> = host.split('.').collect();
        let ecr = labels.len() >= 6
            && labels[0].len() == 12
            && labels[0].bytes().all(|b| b.is_ascii_digit())
            && labels[1] == "dkr"
            && (labels[2] == "ecr" || labels[2] == "ecr-fips")
            && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"));
        if ecr {
            Some(CloudAuth::Ecr)
        } else if host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with(".pkg.dev") {
            Some(CloudAuth::Gcp)
        } else if [".azurecr.io", ".azurecr.cn", ".azurecr.us", ".azurecr.de"].iter().any(|s| host.ends_with(s)) {
            Some(CloudAuth::Acr)
        } else {
            None
        }
    }

    /// The key that selects it in probes.yaml.
    pub fn key(&self) -> &'static str {
        match self {
            CloudAuth::Ecr => "ecr",
            CloudAuth::Gcp => "gcp",
            CloudAuth::Acr => "acr",
            CloudAuth::CredentialProvider(_) => "credential_provider",
        }
    }
}

/// Where a password is read from; never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Env(String),
}

/// Extra trust and client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    /// Set together with `client_key` (mTLS).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontend_addresses() {
        let addr = |s: &str| FrontendSpec::parse_address(s).unwrap();
        assert_eq!(addr("10.0.0.1"), FrontendSpec::Address { ip: "10.0.0.1".parse().unwrap(), port: None });
        assert_eq!(addr("10.0.0.2:8443"), FrontendSpec::Address { ip: "10.0.0.2".parse().unwrap(), port: Some(8443) });
        assert_eq!(
            addr("[2001:db8::1]:443"),
            FrontendSpec::Address { ip: "2001:db8::1".parse().unwrap(), port: Some(443) }
        );
        assert_eq!(addr("[2001:db8::1]"), FrontendSpec::Address { ip: "2001:db8::1".parse().unwrap(), port: None });
        assert_eq!(addr("2001:db8::1"), addr("[2001:db8::1]"));
        assert_eq!(addr("10.0.0.2:8443").label(), "10.0.0.2:8443");
        assert_eq!(addr("[2001:db8::1]:443").label(), "[2001:db8::1]:443");
        assert_eq!(addr("2001:db8::1").label(), "2001:db8::1");
        for bad in
            ["", "cache.example.org", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:99999", "10.0.0", "[10.0.0.1]", "[::1]:x"]
        {
            assert!(FrontendSpec::parse_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_as_references_write_them() {
        let host = |u: &str| RegistryConfig::new("r", Url::parse(u).unwrap()).host();
        assert_eq!(host("https://docker-registry.example.org"), "docker-registry.example.org");
        assert_eq!(host("https://Registry.Example.org:443/"), "registry.example.org");
        assert_eq!(host("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(host("http://[::1]:5000"), "[::1]:5000");
        assert_eq!(host("https://registry-1.docker.io"), "docker.io");
    }

    #[test]
    fn node_mirror_configurations() {
        let config = |frontends: &str| {
            crate::config::Config::from_str_named(
                &format!(
                    "registries:\n  - name: hub\n    url: https://registry-1.docker.io\n    frontends: {frontends}\n"
                ),
                "probes.yaml",
            )
        };
        let hub = config("{containerd: /etc/containerd/certs.d}").unwrap();
        assert_eq!(
            hub.registries[0].frontends,
            FrontendSet::Node(NodeMirrors::Containerd("/etc/containerd/certs.d".into()))
        );
        let crio = config("{registries_conf: /etc/containers/registries.conf}").unwrap();
        let FrontendSet::Node(source) = &crio.registries[0].frontends else { panic!() };
        assert_eq!(source, &NodeMirrors::RegistriesConf("/etc/containers/registries.conf".into()));
        assert_eq!(source.path(), std::path::Path::new("/etc/containers/registries.conf"));

        let error = |frontends: &str| config(frontends).unwrap_err().to_string();
        let both = error("{containerd: /a, registries_conf: /b}");
        assert!(both.starts_with("probes.yaml:4:50: `frontends`: give one of"), "{both}");
        let relative = error("{containerd: certs.d}");
        assert!(relative.starts_with("probes.yaml:4:29: `containerd`: expected an absolute path"), "{relative}");
        let unknown = error("{cri_o: /etc/containers/registries.conf}");
        assert!(unknown.starts_with("probes.yaml:4:") && unknown.contains("cri_o"), "{unknown}");
        let empty = error("{}");
        assert!(empty.contains("needs `containerd: DIR` or `registries_conf: FILE`"), "{empty}");
    }

    #[test]
    fn cloud_registries_by_host() {
        let pick = |host: &str| CloudAuth::for_host(host).map(|c| c.key());
        assert_eq!(pick("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some("ecr"));
        assert_eq!(pick("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com"), Some("ecr"));
        assert_eq!(pick("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"), Some("ecr"));
        assert_eq!(pick("12345.dkr.ecr.eu-west-1.amazonaws.com"), None, "an account id has 12 digits");
        assert_eq!(pick("public.ecr.aws"), None);
        assert_eq!(pick("gcr.io"), Some("gcp"));
        assert_eq!(pick("eu.gcr.io"), Some("gcp"));
        assert_eq!(pick("europe-west4-docker.pkg.dev"), Some("gcp"));
        assert_eq!(pick("myreg.azurecr.io"), Some("acr"));
        assert_eq!(pick("MyReg.AzureCR.io:443"), Some("acr"));
        assert_eq!(pick("docker.io"), None);
        assert_eq!(pick("notgcr.io"), None);
    }

    #[test]
    fn ip_family() {
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        assert!(IpFamily::Any.allows(v4) && IpFamily::Any.allows(v6));
        assert!(IpFamily::Ipv4.allows(v4) && !IpFamily::Ipv4.allows(v6));
        assert!(!IpFamily::Ipv6.allows(v4) && IpFamily::Ipv6.allows(v6));
    }
}
