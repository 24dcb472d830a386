//! Which images this process probes when several share the work: shard `I`
//! of `N` owns the images that rendezvous hashing assigns to it.
//!
//! The unit of work is one image — its `image` label, the reference after
//! discovery expanded tags, catalog samples and cluster images — so every
//! frontend and platform of an image stays on one shard (consistency checks
//! and decompress-once keep working); a canary is one unit, its probe name.
//! Every shard reads the same probes.yaml and decides alone, with no
//! coordinator: shard `I` owns a unit when `hash(i, unit)` is highest for
//! `i = I`. The hash is SHA-256 (stable across processes, versions and
//! machines, never randomly seeded), so going from `N` to `N + 1` shards moves
//! only the units the new shard wins: about `1 / (N + 1)` of them.
//!
//! `--shard auto` takes the index from the pod: `JOB_COMPLETION_INDEX` (an
//! Indexed Job), else `PULLPROBE_SHARD_INDEX` (the chart sets it from the
//! `apps.kubernetes.io/pod-index` label), else the ordinal suffix of the host
//! name (a StatefulSet's `pullprobe-2`); the count from `--shards` or
//! `PULLPROBE_SHARDS`.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest as _, Sha256};

/// More shards than this is a typo, not a fleet.
pub const MAX_SHARDS: u32 = 4096;

/// Shard `index` of `total` (0-based). `Shard::ALL` is the whole: one shard owning everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.total)
    }
}

impl Shard {
    /// Everything in one shard: what a run without `--shard` is.
    pub const ALL: Shard = Shard { index: 0, total: 1 };

    /// Whether work is split at all.
    pub fn is_split(&self) -> bool {
        self.total > 1
    }

    /// Whether this shard probes `unit` (an image's `image` label, a canary's probe name).
    pub fn owns(&self, unit: &str) -> bool {
        !self.is_split() || owner(unit, self.total) == self.index
    }
}

/// The shard of `total` that owns `unit`: the index with the highest score.
pub fn owner(unit: &str, total: u32) -> u32 {
    (0..total.max(1)).max_by_key(|&index| (score(index, unit), index)).unwrap_or(0)
}

/// A stable 64-bit score of (shard, unit).
fn score(index: u32, unit: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(index.to_be_bytes());
    hash.update(unit.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The shard unit of a result or alert: the probe name for a canary, else the image.
pub fn unit<'a>(canary: bool, probe: &'a str, image: &'a str) -> &'a str {
    if canary { probe } else { image }
}

/// `--shard` as given: `I/N`, or `auto` (the index from the pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    Auto,
}

/// A `--shard`/`--shards` that does not make a shard: a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--shard: {0}")]
pub struct ShardError(String);

impl ShardSpec {
    /// `auto`, or `I/N` with `0 ≤ I < N ≤ 4096`.
    pub fn parse(text: &str) -> Result<ShardSpec, ShardError> {
        if text == "auto" {
            return Ok(ShardSpec::Auto);
        }
        let shown: String = text.chars().take(40).collect();
        let (index, total) = text
            .split_once('/')
            .ok_or_else(|| ShardError(format!("expected I/N (like 0/4) or `auto`, got {shown:?}")))?;
        let number = |what: &str, digits: &str| {
            digits.parse::<u32>().map_err(|_| ShardError(format!("{what} of {shown:?} is not a whole number")))
        };
        let shard = Shard { index: number("the index", index)?, total: number("the count", total)? };
        check(shard)?;
        Ok(ShardSpec::Fixed(shard))
    }
}

fn check(shard: Shard) -> Result<Shard, ShardError> {
    if shard.total == 0 || shard.total > MAX_SHARDS {
        return Err(ShardError(format!("the shard count must be 1 to {MAX_SHARDS}, got {}", shard.total)));
    }
    if shard.index >= shard.total {
        return Err(ShardError(format!(
            "index {} is not below the count {} (indexes count from 0)",
            shard.index, shard.total
        )));
    }
    Ok(shard)
}

/// The environment variables `auto` reads.
const POD_VARIABLES: [&str; 3] = ["JOB_COMPLETION_INDEX", "PULLPROBE_SHARD_INDEX", "PULLPROBE_SHARDS"];

/// Where `auto` looks: the pod's environment and host name.
#[derive(Debug, Clone, Default)]
pub struct PodIdentity {
    /// The variables of [`POD_VARIABLES`] that are set.
    pub env: BTreeMap<String, String>,
    pub hostname: Option<String>,
}

impl PodIdentity {
    /// This process's environment and host name.
    pub fn current() -> PodIdentity {
        let hostname = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
            .map(|h| h.trim().to_string());
        let env =
            POD_VARIABLES.iter().filter_map(|&name| Some((name.to_string(), std::env::var(name).ok()?))).collect();
        PodIdentity { env, hostname }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }
}

/// The shard a run is: none given is [`Shard::ALL`]; `I/N` as written (a
/// `--shards` that disagrees is an error); `auto` from `identity`.
pub fn resolve(spec: Option<ShardSpec>, shards: Option<u32>, identity: &PodIdentity) -> Result<Shard, ShardError> {
    match spec {
        None if shards.is_some() => Err(ShardError("--shards needs --shard auto (or give --shard I/N)".into())),
        None => Ok(Shard::ALL),
        Some(ShardSpec::Fixed(shard)) => match shards {
            Some(total) if total != shard.total => {
                Err(ShardError(format!("--shard {shard} disagrees with --shards {total}")))
            }
            _ => Ok(shard),
        },
        Some(ShardSpec::Auto) => {
            let total = match shards {
                Some(total) => total,
                None => {
                    let text = identity.var("PULLPROBE_SHARDS").ok_or_else(|| {
                        ShardError("`auto` needs the shard count: --shards N or PULLPROBE_SHARDS".into())
                    })?;
                    text.trim()
                        .parse()
                        .map_err(|_| ShardError(format!("PULLPROBE_SHARDS={:?} is not a whole number", clip(text))))?
                }
            };
            let index = auto_index(identity)?;
            check(Shard { index, total })
        }
    }
}

/// The pod's index: an Indexed Job's, else the chart's, else the host name's ordinal.
fn auto_index(identity: &PodIdentity) -> Result<u32, ShardError> {
    for name in ["JOB_COMPLETION_INDEX", "PULLPROBE_SHARD_INDEX"] {
        if let Some(text) = identity.var(name).filter(|t| !t.trim().is_empty()) {
            return text
                .trim()
                .parse()
                .map_err(|_| ShardError(format!("{name}={:?} is not a whole number", clip(text))));
        }
    }
    let hostname = identity.hostname.as_deref().unwrap_or_default();
    let ordinal = hostname.rsplit_once('-').map(|(_, n)| n).filter(|n| !n.is_empty());
    ordinal.and_then(|n| n.parse().ok()).ok_or_else(|| {
        ShardError(format!(
            "`auto` found no shard index: JOB_COMPLETION_INDEX and PULLPROBE_SHARD_INDEX are unset and the \
             host name {:?} does not end in -<ordinal> as a StatefulSet pod's does",
            clip(hostname)
        ))
    })
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(env: &[(&str, &str)], hostname: Option<&str>) -> PodIdentity {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        PodIdentity { env, hostname: hostname.map(String::from) }
    }

    fn images(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("registry.example.org/team/app-{i}:v{}", i % 7)).collect()
    }

    #[test]
    fn every_unit_has_exactly_one_owner() {
        for total in [1, 2, 3, 5, 8] {
            for image in images(500) {
                let owners = (0..total).filter(|&index| Shard { index, total }.owns(&image)).count();
                assert_eq!(owners, 1, "{image} in {total} shards");
            }
        }
    }

    #[test]
    fn the_load_is_spread_evenly() {
        let units = images(10_000);
        for total in [2u32, 4, 7] {
            let mut counts = vec![0usize; total as usize];
            for unit in &units {
                counts[owner(unit, total) as usize] += 1;
            }
            let fair = units.len() / total as usize;
            for count in counts {
                assert!(count.abs_diff(fair) < fair / 10, "{total} shards: {count} vs {fair}");
            }
        }
    }

    #[test]
    fn one_more_shard_moves_only_what_it_takes() {
        let units = images(10_000);
        for total in 1u32..8 {
            let moved: Vec<&String> = units.iter().filter(|u| owner(u, total) != owner(u, total + 1)).collect();
            // Everything that moves goes to the new shard, and about 1/(N+1) moves.
            assert!(moved.iter().all(|u| owner(u, total + 1) == total), "{total} → {}", total + 1);
            let bound = 2 * units.len() / (total as usize + 1);
            assert!(moved.len() <= bound, "{total} → {}: {} moved, bound {bound}", total + 1, moved.len());
            assert!(moved.len() * (total as usize + 1) > units.len() / 2, "the new shard takes its share");
        }
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned (computed independently with Python's hashlib): a change here
        // would move most images to another shard on upgrade.
        assert_eq!(score(0, "a"), 0x6358_ccdd_d279_39a0);
        let owners: Vec<u32> = ["a", "b", "c", "d", "e", "f"].iter().map(|u| owner(u, 3)).collect();
        assert_eq!(owners, [1, 2, 1, 2, 2, 1]);
        let owners: Vec<u32> = images(8).iter().map(|u| owner(u, 4)).collect();
        assert_eq!(owners, [1, 0, 2, 1, 2, 0, 3, 3]);
    }

    #[test]
    fn specs_parse_or_say_why_not() {
        assert_eq!(ShardSpec::parse("2/4"), Ok(ShardSpec::Fixed(Shard { index: 2, total: 4 })));
        assert_eq!(ShardSpec::parse("auto"), Ok(ShardSpec::Auto));
        for (bad, says) in [
            ("4/4", "not below the count"),
            ("0/0", "must be 1 to 4096"),
            ("1", "expected I/N"),
            ("a/4", "the index"),
            ("1/-3", "the count"),
            ("0/5000", "must be 1 to 4096"),
        ] {
            let error = ShardSpec::parse(bad).unwrap_err().to_string();
            assert!(error.starts_with("--shard: ") && error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn auto_reads_the_pod() {
        let auto = Some(ShardSpec::Auto);
        let job = pod(&[("JOB_COMPLETION_INDEX", "2"), ("PULLPROBE_SHARD_INDEX", "0")], Some("pullprobe-1"));
        assert_eq!(resolve(auto, Some(3), &job), Ok(Shard { index: 2, total: 3 }));
        let labelled = pod(&[("PULLPROBE_SHARD_INDEX", "1"), ("PULLPROBE_SHARDS", "4")], Some("x"));
        assert_eq!(resolve(auto, None, &labelled), Ok(Shard { index: 1, total: 4 }));
        let stateful = pod(&[("PULLPROBE_SHARDS", "3")], Some("pullprobe-prod-2"));
        assert_eq!(resolve(auto, None, &stateful), Ok(Shard { index: 2, total: 3 }));

        let error = |spec, shards, identity: &PodIdentity| resolve(spec, shards, identity).unwrap_err().to_string();
        assert!(error(auto, None, &pod(&[], Some("p-0"))).contains("--shards N or PULLPROBE_SHARDS"));
        assert!(error(auto, Some(3), &pod(&[], Some("laptop"))).contains("does not end in -<ordinal>"));
        assert!(error(auto, Some(3), &pod(&[], Some("p-5"))).contains("not below the count"));
        assert!(error(auto, Some(3), &pod(&[("JOB_COMPLETION_INDEX", "x")], None)).contains("JOB_COMPLETION_INDEX"));
        let fixed = Some(ShardSpec::Fixed(Shard { index: 0, total: 2 }));
        assert!(error(fixed, Some(3), &pod(&[], None)).contains("disagrees"));
        assert!(error(None, Some(3), &pod(&[], None)).contains("needs --shard auto"));
        assert_eq!(resolve(None, None, &pod(&[], None)), Ok(Shard::ALL));
    }
}
