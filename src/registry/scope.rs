//! What a request asks the registry's token service for: a [`Scope`]
//! (`repository:team/app:pull`), and the one rule for merging scopes, so that
//! one resource is asked for once with the union of its actions.

use std::collections::{BTreeMap, BTreeSet};

/// What a token is asked for: `repository:<name>:pull`, or `pull,push` for a canary push.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    pub fn pull(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull"))
    }

    pub fn push_pull(repository: &str) -> Self {
        Scope(format!("repository:{repository}:pull,push"))
    }

    /// Listing the registry's repositories (`GET /v2/_catalog`).
    pub fn catalog() -> Self {
        Scope("registry:catalog:*".to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Scopes (`type:name:actions`) with the actions of one resource merged; a
/// scope that is not of that form is kept as it is.
pub fn merge_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut resources: BTreeMap<&str, BTreeSet<&str>> = Default::default();
    let mut other = BTreeSet::new();
    for scope in scopes {
        match scope.rsplit_once(':') {
            Some((resource, actions)) if resource.contains(':') => {
                resources.entry(resource).or_default().extend(actions.split(',').filter(|a| !a.is_empty()));
            }
            _ => {
                other.insert(scope.to_string());
            }
        }
    }
    let merged = resources
        .into_iter()
        .map(|(resource, actions)| format!("{resource}:{}", actions.into_iter().collect::<Vec<_>>().join(",")));
    let mut all: Vec<String> = merged.chain(other).collect();
    all.sort();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        assert_eq!(Scope::pull("team/app").as_str(), "repository:team/app:pull");
        assert_eq!(Scope::push_pull("team/app").as_str(), "repository:team/app:pull,push");
        let merged = merge_scopes(
            ["repository:team/app:push,pull", "repository:team/app:pull", "repository:team/app:delete", "odd"]
                .into_iter(),
        );
        assert_eq!(merged, ["odd", "repository:team/app:delete,pull,push"]);
        let two = merge_scopes(["repository:a:pull", "registry:catalog:*", "repository:b:pull"].into_iter());
        assert_eq!(two, ["registry:catalog:*", "repository:a:pull", "repository:b:pull"]);
    }
}
