//! What a progress display can know about the pulls of a run while they run:
//! for each pull (one image through one frontend), the bytes it will read —
//! known once a platform's manifest is read: its config and layer sizes — and
//! the bytes read so far. Pulls write into it; a display reads
//! [`RunProgress::snapshot`] when it likes.
//!
//! It is a plain value: it draws nothing (`now` renders it on a terminal, in
//! `cli::progress`), no result depends on it, and a run without a display has
//! none. Counting a chunk is one relaxed atomic add.
//!
//! A pull through an index reads its platforms one after another: each adds
//! its bytes to the pull's total when its manifest is read. A retried platform
//! starts its count over; layers the round's budget leaves for a later round
//! leave the total; a layer read again for `expect:` joins it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The pulls of one run, in the order they started.
#[derive(Debug, Default)]
pub struct RunProgress {
    pulls: Mutex<Vec<Arc<PullEntry>>>,
}

/// One pull as a display sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSnapshot {
    /// The pull's place among the run's pulls: stable, for the display to keep its bar.
    pub id: usize,
    pub image: String,
    pub frontend: String,
    /// Bytes to read; `None` until a platform's manifest is read.
    pub total: Option<u64>,
    /// Bytes read so far.
    pub done: u64,
    /// The pull has its results (passed or failed).
    pub finished: bool,
}

#[derive(Debug)]
struct PullEntry {
    image: String,
    frontend: String,
    platforms: Mutex<Vec<Arc<PlatformBytes>>>,
    finished: AtomicBool,
}

#[derive(Debug, Default)]
struct PlatformBytes {
    /// Known once the platform's manifest is read.
    total: Mutex<Option<u64>>,
    done: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counts only: a panic elsewhere leaves them usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl RunProgress {
    pub fn new() -> Arc<RunProgress> {
        Arc::new(RunProgress::default())
    }

    /// A pull of `image` through `frontend` begins; it is finished when the handle is dropped.
    pub fn start_pull(&self, image: &str, frontend: &str) -> PullProgress {
        let entry = Arc::new(PullEntry {
            image: image.to_string(),
            frontend: frontend.to_string(),
            platforms: Mutex::default(),
            finished: AtomicBool::new(false),
        });
        lock(&self.pulls).push(entry.clone());
        PullProgress { entry }
    }

    /// Every pull of the run so far, in the order they started.
    pub fn snapshot(&self) -> Vec<PullSnapshot> {
        let pulls = lock(&self.pulls);
        pulls.iter().enumerate().map(|(id, entry)| entry.snapshot(id)).collect()
    }
}

impl PullEntry {
    fn snapshot(&self, id: usize) -> PullSnapshot {
        let platforms = lock(&self.platforms);
        let totals: Vec<u64> = platforms.iter().filter_map(|p| *lock(&p.total)).collect();
        PullSnapshot {
            id,
            image: self.image.clone(),
            frontend: self.frontend.clone(),
            total: (!totals.is_empty()).then(|| totals.iter().fold(0u64, |sum, t| sum.saturating_add(*t))),
            done: platforms.iter().fold(0u64, |sum, p| sum.saturating_add(p.done.load(Ordering::Relaxed))),
            finished: self.finished.load(Ordering::Relaxed),
        }
    }
}

/// One pull's share of a [`RunProgress`]; dropping it marks the pull finished.
#[derive(Debug)]
pub struct PullProgress {
    entry: Arc<PullEntry>,
}

impl PullProgress {
    /// The bytes of the pull's next platform.
    pub fn platform(&self) -> PlatformProgress {
        let bytes = Arc::new(PlatformBytes::default());
        lock(&self.entry.platforms).push(bytes.clone());
        PlatformProgress { bytes }
    }
}

impl Drop for PullProgress {
    fn drop(&mut self) {
        self.entry.finished.store(true, Ordering::Relaxed);
    }
}

/// One platform of a pull: what its manifest promises and what was read of it.
#[derive(Debug, Clone)]
pub struct PlatformProgress {
    bytes: Arc<PlatformBytes>,
}

impl PlatformProgress {
    /// The manifest is read: `total` bytes to read (config and layers). Counting starts
    /// over, so that a retried platform does not count its bytes twice.
    pub fn begin(&self, total: u64) {
        *lock(&self.bytes.total) = Some(total);
        self.bytes.done.store(0, Ordering::Relaxed);
    }

    /// `bytes` more were read.
    pub fn read(&self, bytes: u64) {
        self.bytes.done.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` promised will not be read this run (layers left for a later round).
    pub fn forgo(&self, bytes: u64) {
        if let Some(total) = lock(&self.bytes.total).as_mut() {
            *total = total.saturating_sub(bytes);
        }
    }

    /// `bytes` more will be read than the manifest promised (a layer read again).
    pub fn expect_more(&self, bytes: u64) {
        if let Some(total) = lock(&self.bytes.total).as_mut() {
            *total = total.saturating_add(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_unknown_until_the_manifest_is_read_and_done_grows() {
        let run = RunProgress::new();
        let pull = run.start_pull("registry.example.org/app:1", "10.0.0.1");
        let platform = pull.platform();
        let snapshot = &run.snapshot()[0];
        assert_eq!((snapshot.total, snapshot.done, snapshot.finished), (None, 0, false));
        platform.begin(1_000 + 50);
        platform.read(50);
        assert_eq!((run.snapshot()[0].total, run.snapshot()[0].done), (Some(1_050), 50));
        platform.read(600);
        platform.read(400);
        assert_eq!(run.snapshot()[0].done, 1_050);
        drop(pull);
        assert!(run.snapshot()[0].finished, "a pull that returned is finished");
        platform.read(1);
        assert_eq!(run.snapshot()[0].done, 1_051, "a late chunk is still counted, never lost");
    }

    #[test]
    fn each_frontend_of_an_image_is_a_pull_of_its_own() {
        let run = RunProgress::new();
        let first = run.start_pull("registry.example.org/app:1", "10.0.0.1");
        let second = run.start_pull("registry.example.org/app:1", "10.0.0.2");
        let other = run.start_pull("registry.example.org/db:2", "10.0.0.1");
        first.platform().begin(100);
        let slow = second.platform();
        slow.begin(100);
        slow.read(30);
        drop(first);
        let pull = |id: usize, image: &str, frontend: &str, total, done, finished| PullSnapshot {
            id,
            image: image.to_string(),
            frontend: frontend.to_string(),
            total,
            done,
            finished,
        };
        assert_eq!(
            run.snapshot(),
            [
                pull(0, "registry.example.org/app:1", "10.0.0.1", Some(100), 0, true),
                pull(1, "registry.example.org/app:1", "10.0.0.2", Some(100), 30, false),
                pull(2, "registry.example.org/db:2", "10.0.0.1", None, 0, false),
            ]
        );
        drop(other);
    }

    #[test]
    fn platforms_add_up_and_a_retry_starts_its_count_over() {
        let run = RunProgress::new();
        let pull = run.start_pull("registry.example.org/multi:1", "10.0.0.1");
        let amd64 = pull.platform();
        amd64.begin(300);
        amd64.read(300);
        let arm64 = pull.platform();
        assert_eq!(run.snapshot()[0].total, Some(300), "the next platform's manifest is not read yet");
        arm64.begin(200);
        arm64.read(150);
        // The platform failed (a reset connection) and is pulled again.
        arm64.begin(200);
        arm64.read(20);
        let snapshot = &run.snapshot()[0];
        assert_eq!((snapshot.total, snapshot.done), (Some(500), 320));
    }

    #[test]
    fn layers_left_for_a_later_round_or_read_again_change_the_total() {
        let run = RunProgress::new();
        let pull = run.start_pull("registry.example.org/app:1", "10.0.0.1");
        let platform = pull.platform();
        platform.forgo(10);
        assert_eq!(run.snapshot()[0].total, None, "nothing to take from before the manifest");
        platform.begin(1_000);
        platform.forgo(400);
        platform.expect_more(100);
        assert_eq!(run.snapshot()[0].total, Some(700));
    }
}
