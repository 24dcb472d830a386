//! How long opening a connection took, step by step: the DNS lookup, the TCP
//! connect and the TLS handshake (DESIGN.md: `connect` is TCP only, `tls` the
//! handshake). It measures; it never decides anything about a pull.
//!
//! reqwest opens a connection in one piece — resolve, connect, handshake —
//! inside its connector, so no single place sees where TCP ends and TLS
//! begins. Three observers each see one edge:
//!
//! - the connector layer ([`TimedConnectLayer`]) sees reqwest ask for a new
//!   connection and sees it ready;
//! - the DNS resolver (in `transport`) reports how long its lookup took
//!   ([`note_dns`]);
//! - rustls asks the client's session store for a session to resume as it
//!   builds the ClientHello, the first thing it does once the TCP connection
//!   stands: [`timed_resumption`] is rustls's own in-memory store, which
//!   first notes that instant (rustls 0.23 does so for TLS 1.2 and 1.3; were
//!   an upgrade to stop, `tls` would vanish and tests/auth_tls.rs would say so).
//!
//! So `connect` = ClientHello − start − DNS and `tls` = ready − ClientHello;
//! a plain-HTTP connection builds no ClientHello and has no `tls` at all (not
//! a zero). Through a proxy, `connect` also holds the proxy's CONNECT.
//!
//! The layer keeps one record per connection being opened and makes it
//! current (a task-local) around every poll of that connection's future, so
//! the resolver and the session store write into the connection they work
//! for even when a pull opens several side by side, whichever task polls
//! them. Outside such a future (another client's TLS, e.g. the Kubernetes API)
//! the notes go nowhere.
//!
//! Which connection a pull reports: every pull step makes a fresh client
//! (`probe::pull::attempt`), and a client keeps the timings of its first
//! connection that became ready — the one its first request opened. A request
//! on a pooled connection opened nothing and adds nothing.

use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::NamedGroup;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
// tokio's clock: the same as std's, except that tests can pause it.
use tokio::time::Instant;

/// Server names whose sessions a client remembers (rustls's default).
const REMEMBERED_SESSIONS: usize = 256;

/// The timings of one connection, or of a client's first connection.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ConnectTimings {
    /// The DNS lookup (none for a pinned address: nothing was looked up).
    pub dns: Option<Duration>,
    /// The TCP connect (through a proxy: to the proxy, and its CONNECT).
    pub connect: Option<Duration>,
    /// The TLS handshake; none for plain HTTP.
    pub tls: Option<Duration>,
}

/// What the observers noted about one connection while it was being opened.
#[derive(Debug, Default)]
struct Opening {
    dns: OnceLock<Duration>,
    client_hello: OnceLock<Instant>,
}

impl Opening {
    /// The steps of a connection asked for at `started` and ready at `ready`.
    fn timings(&self, started: Instant, ready: Instant) -> ConnectTimings {
        let dns = self.dns.get().copied();
        let tcp_started = started + dns.unwrap_or_default();
        let (tcp_ended, tls) = match self.client_hello.get() {
            Some(hello) => (*hello, Some(ready.saturating_duration_since(*hello))),
            None => (ready, None),
        };
        ConnectTimings { dns, connect: Some(tcp_ended.saturating_duration_since(tcp_started)), tls }
    }
}

tokio::task_local! {
    /// The connection whose opening is being polled now.
    static OPENING: Arc<Opening>;
}

/// The resolver's lookup for the connection being opened took `took`.
pub fn note_dns(took: Duration) {
    let _ = OPENING.try_with(|opening| opening.dns.set(took));
}

/// The connection being opened starts its TLS handshake now (the first ClientHello counts).
fn note_client_hello() {
    let _ = OPENING.try_with(|opening| opening.client_hello.set(Instant::now()));
}

/// Where a client keeps its connection timings: the first lookup, the first ready connection.
#[derive(Debug, Default)]
pub struct TimingSlot {
    timings: Mutex<ConnectTimings>,
}

impl TimingSlot {
    /// The client's first DNS lookup took `took`: kept even if its connection then fails,
    /// so that a failed pull still says how long the lookup took.
    pub fn record_dns(&self, took: Duration) {
        if let Ok(mut t) = self.timings.lock() {
            t.dns.get_or_insert(took);
        }
    }

    /// A connection became ready: the client's first one sets `connect` and `tls`.
    fn record_connection(&self, opened: ConnectTimings) {
        if let Ok(mut t) = self.timings.lock()
            && t.connect.is_none()
        {
            t.connect = opened.connect;
            t.tls = opened.tls;
            if opened.dns.is_some() {
                t.dns = opened.dns;
            }
        }
    }

    pub fn timings(&self) -> ConnectTimings {
        self.timings.lock().map(|t| *t).unwrap_or_default()
    }
}

/// The connector layer that opens a record for each new connection.
#[derive(Clone)]
pub struct TimedConnectLayer {
    pub slot: Arc<TimingSlot>,
}

impl<S> tower_layer::Layer<S> for TimedConnectLayer {
    type Service = TimedConnect<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimedConnect { inner, slot: self.slot.clone() }
    }
}

#[derive(Clone)]
pub struct TimedConnect<S> {
    inner: S,
    slot: Arc<TimingSlot>,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, Req> tower_service::Service<Req> for TimedConnect<S>
where
    S: tower_service::Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let started = Instant::now();
        let opening = Arc::new(Opening::default());
        let slot = self.slot.clone();
        let connecting = OPENING.sync_scope(opening.clone(), || self.inner.call(req));
        let connecting = OPENING.scope(opening.clone(), connecting);
        Box::pin(async move {
            let result = connecting.await;
            if result.is_ok() {
                slot.record_connection(opening.timings(started, Instant::now()));
            }
            result
        })
    }
}

/// Session resumption as rustls does it by default, through a store that notes
/// when each handshake starts (see the module's documentation).
pub fn timed_resumption() -> Resumption {
    Resumption::store(Arc::new(HandshakeClock { sessions: ClientSessionMemoryCache::new(REMEMBERED_SESSIONS) }))
}

/// rustls's in-memory session store; a lookup for a session to resume (done as the
/// ClientHello is built) notes the start of the handshake.
#[derive(Debug)]
struct HandshakeClock {
    sessions: ClientSessionMemoryCache,
}

impl ClientSessionStore for HandshakeClock {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.sessions.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        note_client_hello();
        self.sessions.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.sessions.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        note_client_hello();
        self.sessions.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.sessions.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(&self, server_name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.sessions.insert_tls13_ticket(server_name, value);
    }

    fn take_tls13_ticket(&self, server_name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        note_client_hello();
        self.sessions.take_tls13_ticket(server_name)
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use tower_layer::Layer;
    use tower_service::Service;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn tcp_ends_where_the_handshake_begins() {
        let t0 = Instant::now();
        let opening = Opening::default();
        opening.dns.set(2 * MS).unwrap();
        opening.client_hello.set(t0 + 5 * MS).unwrap();
        let timings = opening.timings(t0, t0 + 12 * MS);
        assert_eq!(timings, ConnectTimings { dns: Some(2 * MS), connect: Some(3 * MS), tls: Some(7 * MS) });
    }

    #[test]
    fn plain_http_and_pinned_addresses_have_no_tls_and_no_dns() {
        let t0 = Instant::now();
        let timings = Opening::default().timings(t0, t0 + 4 * MS);
        assert_eq!(timings, ConnectTimings { dns: None, connect: Some(4 * MS), tls: None });
    }

    /// A stand-in for reqwest's connector: looks up for `dns`, connects for `tcp`,
    /// then (with `tls`) asks the session store as rustls does and handshakes for it.
    #[derive(Clone)]
    struct FakeConnector {
        store: Arc<dyn ClientSessionStore>,
    }

    impl Service<(Duration, Duration, Option<Duration>)> for FakeConnector {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::pin::Pin<Box<dyn Future<Output = Result<(), Self::Error>> + Send>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (dns, tcp, tls): (Duration, Duration, Option<Duration>)) -> Self::Future {
            let store = self.store.clone();
            Box::pin(async move {
                tokio::time::sleep(dns).await;
                note_dns(dns);
                tokio::time::sleep(tcp).await;
                if let Some(tls) = tls {
                    let name = ServerName::try_from("registry.example.org").expect("a DNS name");
                    let _ = store.take_tls13_ticket(&name);
                    tokio::time::sleep(tls).await;
                }
                Ok(())
            })
        }
    }

    fn fake_client() -> (Arc<TimingSlot>, TimedConnect<FakeConnector>) {
        let slot = Arc::new(TimingSlot::default());
        let store: Arc<dyn ClientSessionStore> =
            Arc::new(HandshakeClock { sessions: ClientSessionMemoryCache::new(REMEMBERED_SESSIONS) });
        (slot.clone(), TimedConnectLayer { slot }.layer(FakeConnector { store }))
    }

    #[tokio::test(start_paused = true)]
    async fn each_connection_gets_its_own_steps_and_the_client_keeps_the_first() {
        let (slot, mut connector) = fake_client();
        // Two connections opened side by side: the slow TLS one is ready first.
        let first = connector.call((10 * MS, 20 * MS, Some(30 * MS)));
        let second = connector.call((MS, 100 * MS, None));
        let (a, b) = tokio::join!(first, second);
        assert!(a.is_ok() && b.is_ok());
        let timings = slot.timings();
        assert_eq!(timings, ConnectTimings { dns: Some(10 * MS), connect: Some(20 * MS), tls: Some(30 * MS) });
        // A later connection of the same client changes nothing.
        let _ = connector.call((MS, MS, Some(MS))).await;
        assert_eq!(slot.timings(), timings);
    }

    #[tokio::test(start_paused = true)]
    async fn a_plain_connection_reports_no_tls() {
        let (slot, mut connector) = fake_client();
        let _ = connector.call((MS, 7 * MS, None)).await;
        assert_eq!(slot.timings(), ConnectTimings { dns: Some(MS), connect: Some(7 * MS), tls: None });
    }

    #[test]
    fn notes_outside_a_connection_go_nowhere() {
        note_dns(MS);
        note_client_hello();
        let store = HandshakeClock { sessions: ClientSessionMemoryCache::new(1) };
        let name = ServerName::try_from("registry.example.org").expect("a DNS name");
        assert!(store.take_tls13_ticket(&name).is_none());
    }
}
