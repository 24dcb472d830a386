//! serve's HTTP endpoints: `/metrics`, `/probe` (blackbox-style, one probe now),
//! `/healthz`, and `/` (a status page with the last results).
//!
//! `/probe` probes only what the config names: a configured probe, a
//! configured probe's image, or a reference matching `serve.allow_targets`;
//! `frontend=` picks one of that registry's configured frontends by label and
//! never a URL of the caller's choosing, so serve is not an open proxy.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::config::{Config, ProbeKind};
use crate::output::gauge_family::{GaugeFamily, Sample};
use crate::output::history::{History, advance};
use crate::output::metrics::{self, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::probe::connection::ConnectionOverrides;
use crate::probe::plan::{self, Overrides, Plan, PlanError};
use crate::probe::run::{self, Job, RoundOptions};
use crate::reference::ImageReference;
use crate::serve::alerts::AlertSender;
use crate::serve::page;
use crate::serve::state::ServeState;

/// Subtracted from Prometheus' scrape timeout, as blackbox_exporter does, so the answer arrives in time.
const SCRAPE_TIMEOUT_OFFSET: Duration = Duration::from_millis(500);

#[derive(Clone)]
struct App {
    state: Arc<ServeState>,
    alerts: Arc<AlertSender>,
}

pub fn router(state: Arc<ServeState>, alerts: Arc<AlertSender>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics_endpoint))
        .route("/probe", get(probe_endpoint))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(App { state, alerts })
}

/// OpenMetrics when the scraper asks for it, else the Prometheus text format.
fn encode(headers: &HeaderMap, families: &[GaugeFamily], counters: Option<&metrics::RunCounters>) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], metrics::encode_openmetrics(families, counters))
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, TEXT_CONTENT_TYPE)], metrics::encode_text(families, counters)).into_response()
    }
}

async fn metrics_endpoint(State(app): State<App>, headers: HeaderMap) -> Response {
    let mut families = app.state.metric_families();
    families.push(GaugeFamily {
        name: "serve_alert_delivery_failures",
        help: "Alert batches an Alertmanager replica did not accept, since start",
        samples: app
            .alerts
            .failures()
            .into_iter()
            .map(|(replica, n)| Sample { labels: vec![("alertmanager".into(), replica)], value: n as f64 })
            .collect(),
    });
    encode(&headers, &families, Some(&app.state.counters()))
}

#[derive(Debug, Deserialize)]
struct ProbeQuery {
    target: Option<String>,
    probe: Option<String>,
    frontend: Option<String>,
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
}

async fn probe_endpoint(State(app): State<App>, headers: HeaderMap, Query(query): Query<ProbeQuery>) -> Response {
    let config = app.state.config();
    let scrape_timeout = headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(SCRAPE_TIMEOUT_OFFSET).max(Duration::from_millis(100)));
    let overrides = Overrides {
        connection: ConnectionOverrides { timeout: scrape_timeout, ..ConnectionOverrides::default() },
        ..Overrides::default()
    };
    let planned = match plan_request(&config, &query, &overrides).await {
        Ok(planned) => planned,
        Err((status, message)) => return refuse(status, message),
    };
    let options = RoundOptions { bandwidth: app.state.bandwidth(), ..RoundOptions::of(&config, 0) };
    let results = run::run(planned.jobs, options).await;
    let history = advance(&History::default(), &results);
    let mut families = metrics::gauge_families(&results, &history);
    let severities = config.probes.iter().map(|p| (p.name.clone(), p.severity)).collect();
    families.push(metrics::probe_info(&results, &severities));
    encode(&headers, &families, None)
}

/// What a `/probe` request may run (a discovery probe: its rule expanded once), or why not.
async fn plan_request(
    config: &Config,
    query: &ProbeQuery,
    overrides: &Overrides,
) -> Result<Plan, (StatusCode, String)> {
    let unplanned = |e: PlanError| (StatusCode::BAD_GATEWAY, e.to_string());
    let mut planned = match (&query.probe, &query.target) {
        (Some(name), _) => {
            let probe = config
                .probes
                .iter()
                .find(|p| &p.name == name && !matches!(p.kind, ProbeKind::Canary(_)))
                .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no pull probe named {name:?} in the config")))?;
            let slot = plan::clock_slot(config.interval_for(probe));
            plan::plan_probe(config, probe, overrides, slot).await.map_err(unplanned)?
        }
        (None, Some(target)) => {
            let image = ImageReference::parse(target)
                .map_err(|e| (StatusCode::BAD_REQUEST, format!("target {target:?}: {e}")))?;
            let configured = config.probes.iter().find(|p| {
                matches!(p.kind, ProbeKind::Image { tags: None, .. })
                    && config.resolve_image(p).is_ok_and(|(resolved, _)| resolved == image)
            });
            let job = match configured {
                Some(probe) => plan::job_for_probe(config, probe, overrides).await,
                None if config.serve.allows(target) || config.serve.allows(&image.to_string()) => {
                    plan::job_for_image(config, target, overrides).await
                }
                None => {
                    return Err((
                        StatusCode::FORBIDDEN,
                        format!(
                            "target {target:?} is neither a configured probe's image nor allowed by serve.allow_targets"
                        ),
                    ));
                }
            };
            Plan { jobs: vec![Job::Pull(job.map_err(unplanned)?)], ..Plan::default() }
        }
        (None, None) => return Err((StatusCode::BAD_REQUEST, "give target=IMAGE or probe=NAME".to_string())),
    };
    if let Some(label) = &query.frontend {
        only_frontend(&mut planned, label)?;
    }
    Ok(planned)
}

/// `frontend=`: only that one of the registry's configured frontends.
fn only_frontend(planned: &mut Plan, label: &str) -> Result<(), (StatusCode, String)> {
    let known: BTreeSet<String> = planned.pulls().flat_map(|j| j.frontends.iter().map(|f| f.label.clone())).collect();
    let (mut pulls, mut left) = (0, 0);
    for job in planned.pulls_mut() {
        job.frontends.retain(|f| f.label == label);
        pulls += 1;
        left += job.frontends.len();
    }
    if pulls > 0 && left == 0 {
        let known: Vec<String> = known.into_iter().collect();
        return Err((
            StatusCode::BAD_REQUEST,
            format!("frontend {label:?} is not one of this registry's frontends ({})", known.join(", ")),
        ));
    }
    Ok(())
}

async fn status_page(State(app): State<App>) -> Html<String> {
    Html(page::render(&app.state.config(), &app.state.latest(), &app.state.recent()))
}
