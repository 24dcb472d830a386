//! `pullprobe serve`: every probe on its schedule, Prometheus metrics, a
//! blackbox-style `/probe`, a status page, and paging while it runs.
//!
//! The config is reloaded on SIGHUP and when the file changes; a config that
//! does not validate is logged (with file:line:column) and the old one keeps
//! running. SIGTERM or SIGINT stops the schedule (in-flight pulls are
//! cancelled) and the HTTP server.

pub mod alerts;
pub mod http;
pub mod page;
pub mod scheduler;
pub mod state;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::serve::alerts::AlertSender;
use crate::serve::state::ServeState;
use crate::shard::Shard;

/// How often the config file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Why serve stopped before it could serve, or its HTTP server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// probes.yaml does not load at start (a reload that fails keeps the running config).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: SocketAddr, source: std::io::Error },
    /// The listening socket or a signal handler could not be set up.
    #[error("{0}")]
    Setup(#[from] std::io::Error),
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Run until SIGTERM/SIGINT. Errors are for startup only (bad config, port in use).
pub async fn run(config_path: PathBuf, listen: SocketAddr, shard: Shard) -> Result<(), ServeError> {
    let config = Config::load(&config_path)?;
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| ServeError::Listen { address: listen, source })?;
    let local = listener.local_addr()?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let state = Arc::new(ServeState::new(config_path.clone(), config, shard));
    let alerts = Arc::new(AlertSender::new(shard));
    let (stop_server, server_stopped) = watch::channel(false);
    let app = http::router(state.clone(), alerts.clone());
    let server = tokio::spawn(async move {
        let mut stopped = server_stopped;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(listen = %local, config = %config_path.display(), shard = %shard, "serving");

    let mut stamp = file_stamp(&config_path);
    let mut poll = tokio::time::interval(CONFIG_POLL);
    loop {
        let (stop_schedule, schedule_stopped) = watch::channel(false);
        let schedule = tokio::spawn(scheduler::run_schedule(state.clone(), alerts.clone(), schedule_stopped));
        // `Some(config)` to reload, `None` to stop.
        let next = loop {
            let reason = tokio::select! {
                _ = sighup.recv() => "SIGHUP",
                _ = poll.tick() => {
                    let now = file_stamp(&config_path);
                    if now == stamp { continue; }
                    stamp = now;
                    "file change"
                }
                _ = sigterm.recv() => break None,
                _ = sigint.recv() => break None,
            };
            match Config::load(&config_path) {
                Ok(config) => {
                    tracing::info!(trigger = reason, probes = config.probes.len(), "config reloaded");
                    break Some(config);
                }
                Err(e) => {
                    tracing::error!(trigger = reason, error = %e, "config reload failed; keeping the running config");
                    state.reload_failed();
                }
            }
        };
        // Stop the old schedule before the new config takes over, so no run of
        // a removed probe records its series afterwards.
        let _ = stop_schedule.send(true);
        let _ = schedule.await;
        match next {
            Some(config) => state.replace_config(config),
            None => break,
        }
    }
    tracing::info!("stopping");
    let _ = stop_server.send(true);
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(Ok(Err(e))) => Err(ServeError::Server(e)),
        _ => Ok(()),
    }
}
