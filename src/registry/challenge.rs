//! What a registry's `401` asks for: every challenge of its `WWW-Authenticate`
//! headers, parsed without trusting them (bounded, never an error), and the
//! [`Method`] learnt from them — a Bearer token realm, else HTTP Basic.
//!
//! It reads headers only; fetching a token is [`crate::registry::token`]'s,
//! deciding when to answer is [`crate::registry::auth`]'s.

use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use url::Url;

use crate::redact::redact_url;
use crate::registry::scope::{Scope, merge_scopes};

/// Challenges and parameters read from one response; the rest is ignored.
pub const MAX_CHALLENGES: usize = 16;
pub const MAX_PARAMS: usize = 32;
/// Characters of one `WWW-Authenticate` value read; the rest is ignored.
pub const MAX_CHALLENGE_TEXT: usize = 16 * 1024;

/// One challenge of a `WWW-Authenticate` header: scheme (lowercase) and parameters (names lowercase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Every challenge of every `WWW-Authenticate` header. Values that are not
/// UTF-8 or not challenges are skipped, never an error.
pub fn challenges(headers: &HeaderMap) -> Vec<Challenge> {
    let mut found = Vec::new();
    for value in headers.get_all(WWW_AUTHENTICATE) {
        if let Ok(text) = value.to_str() {
            found.extend(parse_challenges(text));
        }
        if found.len() >= MAX_CHALLENGES {
            found.truncate(MAX_CHALLENGES);
            break;
        }
    }
    found
}

/// Parse one header value: `Basic realm="x", Bearer realm="https://a/t",service="s",scope="repository:r:pull,push"`.
/// Quoted values may hold commas and escaped quotes; several challenges may share the value.
pub fn parse_challenges(text: &str) -> Vec<Challenge> {
    let chars: Vec<char> = text.chars().take(MAX_CHALLENGE_TEXT).collect();
    let mut at = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let skip = |at: &mut usize, set: &dyn Fn(char) -> bool| {
        while *at < chars.len() && set(chars[*at]) {
            *at += 1;
        }
    };
    let is_token = |c: char| !c.is_whitespace() && !matches!(c, ',' | '=' | '"');
    while at < chars.len() && out.len() < MAX_CHALLENGES {
        skip(&mut at, &|c| c.is_whitespace() || c == ',');
        let start = at;
        skip(&mut at, &is_token);
        if at == start {
            at += 1; // a stray '=' or '"': step over it
            continue;
        }
        let scheme: String = chars[start..at].iter().collect::<String>().to_ascii_lowercase();
        let mut challenge = Challenge { scheme, params: Vec::new() };
        loop {
            skip(&mut at, &|c| c.is_whitespace());
            let name_start = at;
            skip(&mut at, &is_token);
            let name_end = at;
            skip(&mut at, &|c| c.is_whitespace());
            if name_end == name_start || at >= chars.len() || chars[at] != '=' {
                // Not `name=`: the next challenge's scheme (or the end).
                at = name_start;
                break;
            }
            at += 1; // '='
            skip(&mut at, &|c| c.is_whitespace());
            let value = if at < chars.len() && chars[at] == '"' {
                at += 1;
                let mut value = String::new();
                while at < chars.len() && chars[at] != '"' {
                    if chars[at] == '\\' && at + 1 < chars.len() {
                        at += 1;
                    }
                    value.push(chars[at]);
                    at += 1;
                }
                at += 1; // closing quote
                value
            } else {
                let value_start = at;
                // token68 values may end in '='.
                skip(&mut at, &|c| !c.is_whitespace() && c != ',');
                chars[value_start..at].iter().collect()
            };
            if challenge.params.len() < MAX_PARAMS {
                let name: String = chars[name_start..name_end].iter().collect::<String>().to_ascii_lowercase();
                challenge.params.push((name, value));
            }
            skip(&mut at, &|c| c.is_whitespace());
            if at < chars.len() && chars[at] == ',' {
                at += 1;
                continue;
            }
            break;
        }
        out.push(challenge);
    }
    out
}

/// How a frontend wants to be authenticated, learnt from its first challenge.
#[derive(Debug, Clone)]
pub(crate) enum Method {
    Basic { realm: String },
    Bearer { realm: Url, service: String, scope: Vec<String> },
}

impl Method {
    /// Bearer before Basic (as containerd); challenges of other schemes are skipped.
    pub(crate) fn from_challenges(challenges: &[Challenge]) -> Option<Method> {
        let bearer = challenges.iter().filter(|c| c.scheme == "bearer").find_map(|c| {
            let realm = Url::parse(c.param("realm")?).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
            let service = c.param("service").unwrap_or_default().to_string();
            let scope =
                c.param("scope").map(|s| s.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
            Some(Method::Bearer { realm, service, scope })
        });
        bearer.or_else(|| {
            challenges
                .iter()
                .find(|c| c.scheme == "basic")
                .map(|c| Method::Basic { realm: c.param("realm").unwrap_or_default().to_string() })
        })
    }

    /// The method and what it asks for, for a failure message; never a secret.
    pub(crate) fn describe(&self, scope: &Scope) -> String {
        match self {
            // Not the word "Basic" alone: redaction hides the word after it.
            Method::Basic { realm } => format!("basic-auth realm {realm:?}"),
            Method::Bearer { realm, service, .. } => format!(
                "token realm {} (service {service:?}, scope {:?})",
                redact_url(realm),
                self.scopes(scope).join(" ")
            ),
        }
    }

    /// The scopes a token is asked for: the challenge's and the caller's, one per
    /// resource with the union of their actions (`…:push,pull` and `…:pull` ask
    /// once, for `…:pull,push`), sorted.
    pub(crate) fn scopes(&self, scope: &Scope) -> Vec<String> {
        let challenged = match self {
            Method::Bearer { scope: challenged, .. } => challenged.as_slice(),
            Method::Basic { .. } => &[],
        };
        merge_scopes(challenged.iter().map(String::as_str).chain([scope.as_str()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn docker_hub_challenge() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(
            params(&c[0]),
            [
                ("realm", "https://auth.docker.io/token"),
                ("service", "registry.docker.io"),
                ("scope", "repository:library/alpine:pull")
            ]
        );
    }

    #[test]
    fn quoted_commas_spaces_escapes_and_several_challenges() {
        let c = parse_challenges(
            "Basic realm=\"Registry, \\\"Realm\\\"\" , Bearer  realm = \"https://a.example.org/t?x=1,2\", \
             service=reg, scope=\"repository:a:pull,push repository:b:pull\", error=\"insufficient_scope\",Negotiate abc==",
        );
        assert_eq!(c.len(), 3, "{c:?}");
        assert_eq!(params(&c[0]), [("realm", "Registry, \"Realm\"")]);
        assert_eq!(c[1].param("realm"), Some("https://a.example.org/t?x=1,2"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("scope"), Some("repository:a:pull,push repository:b:pull"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert_eq!(c[2].scheme, "negotiate");
        let method = Method::from_challenges(&c).unwrap();
        let Method::Bearer { scope, .. } = &method else { panic!("bearer is preferred: {method:?}") };
        assert_eq!(scope, &["repository:a:pull,push", "repository:b:pull"]);
        // Our `pull` of `a` joins the challenge's `pull,push` of `a`: one scope per resource.
        assert_eq!(method.scopes(&Scope::pull("a")), ["repository:a:pull,push", "repository:b:pull"]);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer",
            "Bearer realm",
            "Bearer realm=",
            "Bearer realm=\"unterminated",
            "a=b=c, ,= \"",
        ] {
            let _ = parse_challenges(text);
        }
        assert!(Method::from_challenges(&parse_challenges("Bearer service=x")).is_none(), "a realm is required");
        assert!(Method::from_challenges(&parse_challenges("Bearer realm=\"ftp://x\"")).is_none());
        let huge = format!("Bearer realm=\"https://x/\",{}", "a=b,".repeat(100_000));
        let parsed = parse_challenges(&huge);
        assert!(parsed.len() <= MAX_CHALLENGES && parsed[0].params.len() <= MAX_PARAMS);
    }
}
