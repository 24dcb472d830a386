//! How requests to one mirror host are formed: its API root, its names for
//! repositories, the headers it is sent (containerd's `override_path` and
//! `[header]`, registries.conf's `prefix` → `location`).

use reqwest::header::HeaderMap;

/// How requests to one mirror host are formed.
#[derive(Debug, Clone, Default)]
pub struct MirrorRoute {
    /// The API root instead of `/v2` (containerd's `override_path`): `""` or `/some/path`.
    pub api_root: Option<String>,
    /// A repository name rewritten: a leading `from` replaced by `to`
    /// (registries.conf: the `prefix` path of the namespace, the `location` path of the mirror).
    pub rewrite: Option<(String, String)>,
    /// Sent with every registry request (containerd's `[header]`).
    pub headers: HeaderMap,
}

impl MirrorRoute {
    /// `repository` as this host names it.
    pub fn repository(&self, repository: &str) -> String {
        let Some((from, to)) = &self.rewrite else { return repository.to_string() };
        let rest = if from.is_empty() {
            Some(repository)
        } else if repository == from {
            Some("")
        } else {
            repository.strip_prefix(from.as_str()).and_then(|r| r.strip_prefix('/'))
        };
        match rest {
            Some("") => to.clone(),
            Some(rest) if to.is_empty() => rest.to_string(),
            Some(rest) => format!("{to}/{rest}"),
            None => repository.to_string(),
        }
    }

    /// The path before `/<repository>/…`: `/v2` unless overridden.
    pub fn api_root(&self) -> &str {
        self.api_root.as_deref().unwrap_or("/v2")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_rewritten_as_registries_conf_says() {
        let route = |from: &str, to: &str| MirrorRoute {
            rewrite: Some((from.to_string(), to.to_string())),
            ..MirrorRoute::default()
        };
        // prefix example.com/foo, location internal/bar: example.com/foo/image → internal/bar/image
        assert_eq!(route("foo", "bar").repository("foo/image"), "bar/image");
        // prefix example.com, location mirror/dockerhub
        assert_eq!(route("", "dockerhub").repository("library/alpine"), "dockerhub/library/alpine");
        // prefix example.com/foo, location mirror (no path)
        assert_eq!(route("foo", "").repository("foo/image"), "image");
        // the prefix names the whole repository
        assert_eq!(route("foo/image", "x/y").repository("foo/image"), "x/y");
        // not under the prefix (`foobar` is not `foo/…`): unchanged
        assert_eq!(route("foo", "bar").repository("foobar/image"), "foobar/image");
        assert_eq!(MirrorRoute::default().repository("a/b"), "a/b");
        assert_eq!(MirrorRoute::default().api_root(), "/v2");
    }
}
