//! The round's bandwidth budget (`limits.max_round_bytes`) and the rotation
//! that keeps coverage complete when the budget is smaller than the round.
//!
//! Each (image, frontend) pull of a round gets an equal share of the budget.
//! When a pull's layers do not fit in its share, they are packed, in a stable
//! order (a hash of layer digest and frontend), into groups of at most one
//! share each, and round `r` reads group `r mod groups`: every (layer,
//! frontend) pair is read in full within `groups` rounds, and which pairs were
//! skipped is in the result, so coverage is visible rather than assumed. A
//! layer larger than a share is a group of its own. On top of the shares, the
//! round's total is a hard cap: a layer whose bytes no longer fit is skipped.
//!
//! The round number comes from the caller: `serve` counts rounds; a `now`
//! (CronJob) run uses the wall clock divided by the probe interval, so
//! consecutive scheduled runs rotate without keeping state.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::manifest::BlobRef;

#[derive(Debug)]
pub struct RoundBudget {
    limit: u64,
    share: u64,
    round: u64,
    used: AtomicU64,
}

/// Which layers of one pull are read this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// One flag per layer, in manifest order.
    pub read: Vec<bool>,
    /// How many rounds a full rotation takes (1 = everything every round).
    pub groups: usize,
    /// Which group this round reads.
    pub group: usize,
}

impl RoundBudget {
    /// `limit` bytes for the whole round, shared by `pulls` (image, frontend) pulls.
    pub fn new(limit: u64, pulls: usize, round: u64) -> Self {
        let share = (limit / pulls.max(1) as u64).max(1);
        RoundBudget { limit, share, round, used: AtomicU64::new(0) }
    }

    pub fn round(&self) -> u64 {
        self.round
    }

    /// The layers `frontend` reads this round.
    pub fn select(&self, frontend: &str, layers: &[BlobRef]) -> Selection {
        let total = layers.iter().fold(0u64, |sum, l| sum.saturating_add(l.size));
        if total <= self.share {
            return Selection { read: vec![true; layers.len()], groups: 1, group: 0 };
        }
        let mut order: Vec<usize> = (0..layers.len()).collect();
        order.sort_by_key(|&i| (rotation_key(&layers[i].digest, frontend), i));
        let mut group_of = vec![0usize; layers.len()];
        let (mut group, mut filled) = (0usize, 0u64);
        for i in order {
            let size = layers[i].size;
            if filled > 0 && filled.saturating_add(size) > self.share {
                group += 1;
                filled = 0;
            }
            group_of[i] = group;
            filled = filled.saturating_add(size);
        }
        let groups = group + 1;
        let this = (self.round % groups as u64) as usize;
        Selection { read: group_of.iter().map(|g| *g == this).collect(), groups, group: this }
    }

    /// Take `bytes` from the round's total; false if they no longer fit.
    pub fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let next = used.checked_add(bytes)?;
                (next <= self.limit).then_some(next)
            })
            .is_ok()
    }
}

/// A stable position for (layer, frontend) in the rotation order.
fn rotation_key(digest: &Digest, frontend: &str) -> [u8; 8] {
    let mut input = digest.hex().into_bytes();
    input.extend_from_slice(frontend.as_bytes());
    let mixed = Digest::of(&input).hex();
    let mut key = [0u8; 8];
    key.copy_from_slice(&mixed.as_bytes()[..8]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(sizes: &[u64]) -> Vec<BlobRef> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| BlobRef {
                media_type: String::new(),
                digest: Digest::of(format!("layer {i}").as_bytes()),
                size,
            })
            .collect()
    }

    #[test]
    fn everything_fits_in_one_group() {
        let budget = RoundBudget::new(1000, 2, 7);
        let s = budget.select("a", &layers(&[100, 200]));
        assert_eq!((s.read, s.groups), (vec![true, true], 1));
    }

    #[test]
    fn a_rotation_covers_every_layer_within_its_groups() {
        let ls = layers(&[30, 30, 30, 30, 30, 30]);
        let groups = RoundBudget::new(60, 1, 0).select("f", &ls).groups;
        assert_eq!(groups, 3);
        let mut seen = [false; 6];
        for round in 0..groups as u64 {
            let s = RoundBudget::new(60, 1, round).select("f", &ls);
            assert_eq!(s.read.iter().filter(|r| **r).count(), 2, "round {round}");
            for (i, r) in s.read.iter().enumerate() {
                seen[i] |= *r;
            }
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn a_big_layer_is_a_group_of_its_own() {
        let ls = layers(&[500, 10]);
        let s = RoundBudget::new(100, 1, 0).select("f", &ls);
        assert_eq!(s.groups, 2);
        assert_eq!(s.read.iter().filter(|r| **r).count(), 1);
    }

    #[test]
    fn the_total_is_a_hard_cap() {
        let budget = RoundBudget::new(100, 1, 0);
        assert!(budget.reserve(60));
        assert!(!budget.reserve(60));
        assert!(budget.reserve(40));
    }
}
