//! `pullprobe now`: plan, run, print the results (a table or JSON), deliver
//! them to `alerting:`, and exit with what happened (DESIGN.md, "Commands").

use std::process::ExitCode;

use super::args::{NowArgs, OutputFormat};
use super::{exit, progress};
use crate::config::AlertingConfig;
use crate::output::{self, delivery};
use crate::probe::plan::{self, CommandPlan, Request};
use crate::probe::run::{self, RoundOptions};
use crate::result::ProbeResult;

pub(super) async fn now(args: &NowArgs) -> ExitCode {
    let request = match args.request() {
        Ok(request) => request,
        Err(e) => {
            eprintln!("pullprobe: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let CommandPlan { plan, config, options } = match plan::plan_command(&request).await {
        Ok(planned) => planned,
        Err(e) => {
            eprintln!("pullprobe: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let (alerting, context) = delivery_context(&request, config.as_ref(), &plan);
    let display = progress::show(args.output);
    let options = RoundOptions { progress: display.as_ref().map(|d| d.run.clone()), ..options };
    let results = run::run(plan.jobs, options).await;
    if let Some(display) = display {
        display.finish();
    }
    match args.output {
        OutputFormat::Json => println!("{}", output::json::render(&results)),
        OutputFormat::Table => print!("{}", output::table::render(&results)),
    }
    let report = delivery::deliver_now(&results, &alerting, &context, output::http::RetryPolicy::default()).await;
    ExitCode::from(exit_code(&results, &report, args.no_fail))
}

/// 1 if a probe failed (unless `--no-fail` and Alertmanager has every failure),
/// else 3 if an output could not be delivered, else 0.
fn exit_code(results: &[ProbeResult], report: &delivery::DeliveryReport, no_fail: bool) -> u8 {
    let failed = results.iter().any(|r| !r.ok);
    if failed && !(no_fail && report.every_failure_paged(results)) {
        exit::PROBE_FAILED
    } else if !report.failures.is_empty() {
        exit::DELIVERY_FAILED
    } else {
        exit::OK
    }
}

/// What delivery needs besides the results: `alerting:`, each probe's severity,
/// the probes whose vanished series this run may resolve (none when the
/// command line narrowed frontends or platforms: then it did not see them all),
/// and the images discovery stands for but did not probe this run.
fn delivery_context(
    request: &Request,
    config: Option<&crate::config::Config>,
    planned: &plan::Plan,
) -> (AlertingConfig, delivery::RunContext) {
    let Some(config) = config else { return Default::default() };
    let narrowed = request.narrows();
    let context = delivery::RunContext {
        severities: config.probes.iter().map(|p| (p.name.clone(), p.severity)).collect(),
        owned_probes: if narrowed { Default::default() } else { planned.probes().map(String::from).collect() },
        carried: planned
            .coverage
            .iter()
            .flat_map(|(probe, coverage)| coverage.candidates.iter().map(|image| (probe.clone(), image.clone())))
            .collect(),
        shard: request.shard,
        location: config.defaults.location.clone(),
        owned: if narrowed { Default::default() } else { planned.owned.clone() },
        canaries: config
            .probes
            .iter()
            .filter(|p| matches!(p.kind, crate::config::ProbeKind::Canary(_)))
            .map(|p| p.name.clone())
            .collect(),
    };
    (config.alerting.clone(), context)
}
