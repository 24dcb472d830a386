//! A process-wide cap on the bytes per second pulls read (`limits:
//! max_bytes_per_second`), for a prober that shares a link: a token bucket
//! every pull of the process draws from. A read that would go over the rate
//! waits (work is slowed, never skipped), and the time spent waiting is
//! counted for `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The bucket: `rate` bytes per second, at most one second of bytes saved up.
#[derive(Debug)]
pub struct Bandwidth {
    rate: u64,
    bucket: Mutex<Bucket>,
    waited_nanos: AtomicU64,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be read now; below zero, what earlier reads owe.
    tokens: f64,
    refilled: Instant,
}

impl Bandwidth {
    /// A cap of `rate` bytes per second (at least 1).
    pub fn new(rate: u64) -> Bandwidth {
        let rate = rate.max(1);
        Bandwidth {
            rate,
            bucket: Mutex::new(Bucket { tokens: rate as f64, refilled: Instant::now() }),
            waited_nanos: AtomicU64::new(0),
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// `bytes` were read: wait until the rate allows them.
    pub async fn take(&self, bytes: usize) {
        let wait = {
            let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let saved = bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * self.rate as f64;
            bucket.tokens = saved.min(self.rate as f64) - bytes as f64;
            bucket.refilled = now;
            (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / self.rate as f64))
        };
        if let Some(wait) = wait {
            self.waited_nanos.fetch_add(u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
            tokio::time::sleep(wait).await;
        }
    }

    /// Time reads have waited for the cap, summed over every pull.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn reads_over_the_rate_wait_for_it() {
        let cap = Bandwidth::new(1000);
        let started = Instant::now();
        cap.take(1000).await; // the first second's bytes are there
        assert_eq!(started.elapsed(), Duration::ZERO);
        cap.take(500).await;
        cap.take(1500).await;
        // 3,000 bytes at 1,000 per second, one second saved up: two seconds.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(cap.waited(), Duration::from_secs(2), "the waits are counted");
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = Instant::now();
        cap.take(1000).await;
        assert_eq!(idle.elapsed(), Duration::ZERO, "at most one second is saved up, and it was");
        cap.take(1).await;
        assert!(idle.elapsed() > Duration::ZERO, "not ten");
    }
}
