//! Process-wide caches of what clouds and plugins issue: a value is kept until
//! shortly before it expires, and each key has one fetch in flight — callers that
//! arrive while it runs wait for it and share its result, so a hundred probes of
//! one registry cause one token fetch, in `now` and in `serve` alike.
//!
//! A fetch that fails is remembered for a few seconds, so the callers waiting
//! behind it do not each try again; a value the registry refused is fetched anew
//! once, however many probes saw the refusal ([`Cache::renew`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::reason::ProbeError;

/// The longest a value is renewed ahead of its expiry.
const MAX_RENEW_AHEAD: Duration = Duration::from_secs(5 * 60);
/// How long a failed fetch answers for its key.
const FAILURE_HOLD: Duration = Duration::from_secs(5);

/// What a fetch returns: the value and how long it is valid (`None`: until refused).
pub(super) struct Issued<T> {
    pub value: T,
    pub lifetime: Option<Duration>,
}

impl<T> Issued<T> {
    pub fn new(value: T, lifetime: Option<Duration>) -> Self {
        Issued { value, lifetime }
    }
}

/// One run at a time per key: callers that arrive while a run is in flight wait for
/// it. A failed run answers for its key for [`FAILURE_HOLD`], without running again.
#[derive(Default)]
pub(super) struct Flights {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<LastFailure>>>>,
}

/// A key's last failed run and when it ended; `None` after a run that succeeded.
type LastFailure = Option<(ProbeError, Instant)>;

impl Flights {
    pub async fn run<T, F, Fut>(&self, key: &str, run: F) -> Result<T, ProbeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ProbeError>>,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.to_string()).or_default().clone()
        };
        let mut failure = slot.lock().await;
        if let Some((err, at)) = failure.as_ref()
            && at.elapsed() < FAILURE_HOLD
        {
            return Err(err.clone());
        }
        let result = run().await;
        *failure = result.as_ref().err().map(|err| (err.clone(), Instant::now()));
        result
    }
}

/// Values by key until shortly before they expire, with one fetch in flight per key.
pub(super) struct Cache<T> {
    flights: Flights,
    /// The value and when to fetch anew (`None`: never, until refused).
    values: Mutex<HashMap<String, (T, Option<Instant>)>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Cache { flights: Flights::default(), values: Mutex::default() }
    }
}

impl<T: Clone> Cache<T> {
    /// The value of `key` while it is fresh, else what `fetch` issues.
    pub async fn get<F, Fut>(&self, key: &str, fetch: F) -> Result<T, ProbeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued<T>, ProbeError>>,
    {
        self.fetch_unless(key, |_| true, fetch).await
    }

    /// After `refused(value)` was refused: fetched anew, unless the cache already holds
    /// another value (a caller that saw the same refusal renewed it first).
    pub async fn renew<F, Fut>(&self, key: &str, refused: impl Fn(&T) -> bool, fetch: F) -> Result<T, ProbeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued<T>, ProbeError>>,
    {
        self.fetch_unless(key, |value| !refused(value), fetch).await
    }

    /// The cached value if it is fresh and `usable`, else a fetch (one at a time per key).
    async fn fetch_unless<F, Fut>(&self, key: &str, usable: impl Fn(&T) -> bool, fetch: F) -> Result<T, ProbeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Issued<T>, ProbeError>>,
    {
        if let Some(value) = self.fresh(key, &usable) {
            return Ok(value);
        }
        self.flights
            .run(key, || async {
                // A fetch that finished while this caller waited answers for it.
                if let Some(value) = self.fresh(key, &usable) {
                    return Ok(value);
                }
                let issued = fetch().await?;
                let renew_at = issued.lifetime.map(|lifetime| Instant::now() + lifetime - renew_ahead(lifetime));
                let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
                values.insert(key.to_string(), (issued.value.clone(), renew_at));
                Ok(issued.value)
            })
            .await
    }

    fn fresh(&self, key: &str, usable: impl Fn(&T) -> bool) -> Option<T> {
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let (value, renew_at) = values.get(key)?;
        (renew_at.is_none_or(|at| Instant::now() < at) && usable(value)).then(|| value.clone())
    }
}

/// How long before its expiry a value of this lifetime is fetched anew: a tenth of
/// it, at most five minutes (a 12 h ECR token: 5 min; a 60 s token: 6 s).
pub(super) fn renew_ahead(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_RENEW_AHEAD)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::reason::Reason;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn callers_share_one_fetch() {
        let cache: Arc<Cache<String>> = Arc::default();
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..100 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get("registry", || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(Issued::new("token".to_string(), Some(Duration::from_secs(3600))))
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "token");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn expiry_renewal_and_failures() {
        let cache: Cache<u32> = Cache::default();
        let issue = |n: u32, secs: u64| async move { Ok(Issued::new(n, Some(Duration::from_secs(secs)))) };
        assert_eq!(cache.get("k", || issue(1, 3600)).await.unwrap(), 1);
        assert_eq!(cache.get("k", || issue(2, 3600)).await.unwrap(), 1, "still fresh");
        // Refused: fetched anew once; a second caller with the same refusal gets the new value.
        assert_eq!(cache.renew("k", |v| *v == 1, || issue(3, 3600)).await.unwrap(), 3);
        assert_eq!(cache.renew("k", |v| *v == 1, || issue(4, 3600)).await.unwrap(), 3);
        // A value within its renewal margin is fetched anew.
        assert_eq!(cache.get("short", || issue(5, 0)).await.unwrap(), 5);
        assert_eq!(cache.get("short", || issue(6, 0)).await.unwrap(), 6);
        // A failure answers for its key for a moment, without another fetch.
        let fail = || async { Err(ProbeError::new(Reason::AuthFailed, "STS: HTTP status 403")) };
        assert!(cache.get("bad", fail).await.is_err());
        let err = cache.get("bad", || issue(7, 3600)).await.unwrap_err();
        assert!(err.message.contains("403"), "{}", err.message);
        assert_eq!(renew_ahead(Duration::from_secs(12 * 3600)), MAX_RENEW_AHEAD);
        assert_eq!(renew_ahead(Duration::from_secs(60)), Duration::from_secs(6));
    }
}
