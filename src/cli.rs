//! The command line: argument parsing and the commands `now`, `check` and `validate`.
//! Each command turns its arguments into pull jobs, runs them, and hands the
//! results to an output; exit codes are decided here and nowhere else.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{AlertingConfig, Config, ProbeKind};
use crate::output;
use crate::platform::PlatformSelection;
use crate::probe::canary::CanaryJob;
use crate::probe::run::{PullJob, RoundOptions, run_round};
use crate::probe::{discover, plan};
use crate::result::ProbeResult;

/// Exit codes of `now` (DESIGN.md, "Commands").
pub mod exit {
    pub const OK: u8 = 0;
    pub const PROBE_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DELIVERY_FAILED: u8 = 3;
}

#[derive(Debug, Parser)]
#[command(name = "pullprobe", version, about = "Synthetic pull prober for container registries", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe once and report.
    Now(NowArgs),
    /// Monitoring Plugins / Icinga / Nagios check of one image or probe.
    #[command(version, after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Run every probe on its schedule; serve /metrics, /probe, /healthz and a status page.
    Serve(ServeArgs),
    /// Parse and check probes.yaml.
    Validate(ValidateArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// probes.yaml to run (reloaded on SIGHUP and when the file changes).
    #[arg(short = 'c', long = "config", default_value = "probes.yaml")]
    config: PathBuf,
    /// Address for /metrics, /probe, /healthz and /.
    #[arg(long, default_value = "127.0.0.1:9640")]
    listen: std::net::SocketAddr,
    /// Log as JSON lines (one line per probe result); default: JSON unless stderr is a terminal.
    #[arg(long)]
    log_json: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, Default, clap::Args)]
struct NowArgs {
    /// Image references to probe (`registry.example.org/team/app:1.2`, `alpine`).
    images: Vec<String>,
    /// probes.yaml to read (default ./probes.yaml when no IMAGE is given).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Only these probes of the config (repeatable).
    #[arg(long = "probe")]
    probes: Vec<String>,
    #[command(flatten)]
    pull: PullOptions,
    /// Output format (`table` for humans, `json` for programs).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    /// Exit 0 rather than 1 for a failed probe when Alertmanager has the failure
    /// (for a CronJob whose failures already page).
    #[arg(long)]
    no_fail: bool,
    /// Skip `canary:` probes (they push to the registry): a read-only run.
    #[arg(long)]
    no_push: bool,
    /// The round number for the bandwidth rotation (default: the wall clock over `defaults.interval`).
    #[arg(long, hide = true)]
    round: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    #[arg(short = 'c', long = "config", default_value = "probes.yaml")]
    config: PathBuf,
}

const CHECK_HELP: &str = "\
Pulls the image (or the probe's images) through each frontend and verifies every byte.

States (exit codes):
  OK (0)        every pull passed, the slowest frontend within -w
  WARNING (1)   every pull passed, the slowest frontend took longer than -w
  CRITICAL (2)  a pull failed (any registry-side reason, connect_error and timeout included),
                or the slowest frontend took longer than -c
  UNKNOWN (3)   pullprobe's own problem: bad arguments, a bad config

Output: one status line with the worst result first and perfdata
(time=SLOWEST s;WARN;CRIT;0 bytes=…B layers=… frontends_failed=…), then one line per result.
It never sends alerts or pushes metrics (use `pullprobe now` for that).

Examples:
  pullprobe check registry.example.org/team/app:1.2 -w 5 -c 10
  pullprobe check --probe golden-base --config /etc/pullprobe/probes.yaml -t 120";

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["image", "probe"])))]
struct CheckArgs {
    /// The image reference to pull (or --probe).
    image: Option<String>,
    /// A probe of the config.
    #[arg(long = "probe")]
    probe: Option<String>,
    /// probes.yaml (default ./probes.yaml with --probe); `-c` is the critical threshold here.
    #[arg(long = "config")]
    config: Option<PathBuf>,
    /// WARNING when the slowest frontend takes longer than this many seconds.
    #[arg(short = 'w', long = "warning", value_name = "SECONDS", value_parser = parse_seconds)]
    warning: Option<f64>,
    /// CRITICAL when the slowest frontend takes longer than this many seconds.
    #[arg(short = 'c', long = "critical", value_name = "SECONDS", value_parser = parse_seconds)]
    critical: Option<f64>,
    /// Seconds the whole check may take (also caps each pull's timeout).
    #[arg(short = 't', long = "timeout", value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    timeout: f64,
    #[command(flatten)]
    pull: PullOptions,
}

/// How to pull, shared by `now` and `check`.
#[derive(Debug, Default, Clone, clap::Args)]
struct PullOptions {
    /// Probe exactly these frontends, each separately: an address (10.0.0.1, 10.0.0.2:8443) or a URL.
    #[arg(long = "frontend")]
    frontends: Vec<String>,
    /// `all`, or OS/ARCH[/VARIANT].
    #[arg(long)]
    platform: Option<String>,
    /// Use plain HTTP (default only for loopback registries).
    #[arg(long)]
    plain_http: bool,
    /// Skip TLS certificate verification.
    #[arg(long)]
    insecure: bool,
    /// A path that must exist in the image's final filesystem (repeatable; added to every probe's `expect:`).
    #[arg(long = "expect-path", value_name = "PATH")]
    expect_paths: Vec<String>,
}

/// Seconds for `-w`/`-c`/`-t`: `5`, `2.5` or `10s`; more than 0.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a number of seconds more than 0, like 5 or 2.5, got {text:?}")),
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && std::env::args().nth(1).as_deref() == Some("check") => {
            // A plugin's bad arguments are UNKNOWN, with a status line on stdout.
            let text = e.to_string();
            let message = text.split("\n\n").next().unwrap_or_default().trim_start_matches("error: ");
            let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
            print!("{}", output::icinga::unknown(&message).text);
            let _ = e.print();
            return ExitCode::from(output::icinga::PluginState::Unknown.exit_code());
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging();
    }
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Check(args) => check(args),
        Command::Serve(args) => serve(args),
        Command::Now(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("pullprobe: cannot start the async runtime: {e}");
                    return ExitCode::from(exit::USAGE);
                }
            };
            runtime.block_on(now(args))
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let json = args.log_json.unwrap_or_else(|| !std::io::stderr().is_terminal());
    init_serve_logging(json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pullprobe: cannot start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let outcome = runtime.block_on(crate::serve::run(args.config, args.listen));
    // Verification threads of cancelled pulls end as soon as their input closes; don't wait on a straggler.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("pullprobe serve: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// serve logs at info (one line per probe result), as JSON lines for a log pipeline.
fn init_serve_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULLPROBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls_platform_verifier=off"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::redact::RedactedStderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULLPROBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rustls_platform_verifier=off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::redact::RedactedStderr).try_init();
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match Config::load(&args.config)
        .and_then(|config| crate::frontend::node_config::check_files(&config).map(|()| config))
    {
        Ok(config) => {
            println!(
                "{}: OK ({} probes, {} registries)",
                args.config.display(),
                config.probes.len(),
                config.registries.len()
            );
            ExitCode::from(exit::OK)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// `pullprobe check`: probe like `now`, judge like a Monitoring Plugin, deliver nothing.
fn check(args: CheckArgs) -> ExitCode {
    use output::icinga::{self, Thresholds};
    let thresholds = Thresholds { warning: args.warning, critical: args.critical };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            print!("{}", icinga::unknown(&format!("cannot start the async runtime: {e}")).text);
            return ExitCode::from(icinga::PluginState::Unknown.exit_code());
        }
    };
    let limit = Duration::from_secs_f64(args.timeout);
    let now_args = NowArgs {
        images: args.image.into_iter().collect(),
        config: args.config,
        probes: args.probe.into_iter().collect(),
        pull: args.pull,
        output: OutputFormat::Json,
        ..NowArgs::default()
    };
    let outcome = runtime.block_on(async {
        let mut plan = match plan_now(&now_args).await {
            Ok(plan) => plan,
            Err(UsageError(message)) => return icinga::unknown(&message),
        };
        for job in &mut plan.jobs {
            job.target.timeout = job.target.timeout.min(limit);
        }
        let round = RoundOptions {
            concurrency: plan.concurrency,
            max_round_bytes: Some(plan.max_round_bytes),
            round: plan::clock_slot(plan.interval),
            progress: None,
            permits: None,
        };
        let mut results = plan.failed;
        match tokio::time::timeout(limit, run_round(plan.jobs, plan.canaries, round)).await {
            Ok(pulled) => {
                results.extend(pulled);
                discover::annotate(&mut results, &plan.discovered);
                icinga::render(&results, thresholds)
            }
            Err(_) => icinga::timed_out(args.timeout, thresholds),
        }
    });
    print!("{}", outcome.text);
    ExitCode::from(outcome.state.exit_code())
}

/// A usage or configuration error: printed, exit 2.
struct UsageError(String);

async fn now(args: NowArgs) -> ExitCode {
    let jobs = match plan_now(&args).await {
        Ok(jobs) => jobs,
        Err(UsageError(message)) => {
            eprintln!("pullprobe: {message}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let concurrency = jobs.concurrency;
    let progress = show_progress(args.output);
    let round = RoundOptions {
        concurrency,
        max_round_bytes: Some(jobs.max_round_bytes),
        round: args.round.unwrap_or_else(|| plan::clock_slot(jobs.interval)),
        progress: progress.as_ref().map(|p| p.counter.clone()),
        permits: None,
    };
    let mut results = jobs.failed;
    results.extend(run_round(jobs.jobs, jobs.canaries, round).await);
    discover::annotate(&mut results, &jobs.discovered);
    if let Some(p) = progress {
        p.finish();
    }
    match args.output {
        OutputFormat::Json => println!("{}", output::json::render(&results)),
        OutputFormat::Table => print!("{}", output::table::render(&results)),
    }
    let report = output::delivery::deliver_now(
        &results,
        &jobs.alerting,
        &jobs.run_context,
        output::http::RetryPolicy::default(),
    )
    .await;
    ExitCode::from(exit_code(&results, &report, args.no_fail))
}

/// 1 if a probe failed (unless `--no-fail` and Alertmanager has every failure),
/// else 3 if an output could not be delivered, else 0.
fn exit_code(results: &[ProbeResult], report: &output::delivery::DeliveryReport, no_fail: bool) -> u8 {
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
/// and the probes whose vanished series this run may resolve (none when the
/// command line narrowed frontends or platforms: then it did not see them all).
fn delivery_context(
    args: &NowArgs,
    config: Option<&Config>,
    probes: impl Iterator<Item = String>,
) -> (AlertingConfig, output::delivery::RunContext) {
    let Some(config) = config else { return Default::default() };
    let narrowed = !args.pull.frontends.is_empty() || args.pull.platform.is_some();
    let context = output::delivery::RunContext {
        severities: config.probes.iter().map(|p| (p.name.clone(), p.severity)).collect(),
        owned_probes: if narrowed { Default::default() } else { probes.collect() },
        carried: Default::default(),
    };
    (config.alerting.clone(), context)
}

struct NowPlan {
    jobs: Vec<PullJob>,
    /// `canary:` probes (none with `--no-push`).
    canaries: Vec<CanaryJob>,
    /// Results of probes that failed before pulling (a discovery that failed).
    failed: Vec<ProbeResult>,
    /// What each discovery rule found, by probe name.
    discovered: Vec<(String, discover::Found)>,
    alerting: AlertingConfig,
    run_context: output::delivery::RunContext,
    concurrency: usize,
    max_round_bytes: u64,
    /// Between scheduled runs: what the wall-clock round number counts.
    interval: Duration,
}

async fn plan_now(args: &NowArgs) -> Result<NowPlan, UsageError> {
    let config_path = match (&args.config, args.images.is_empty()) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => Some(PathBuf::from("probes.yaml")),
        (None, false) => None,
    };
    let config = match &config_path {
        Some(path) => Some(load_config(path)?),
        None => None,
    };
    let platform_override = match &args.pull.platform {
        Some(p) => Some(PlatformSelection::parse(p).map_err(|e| UsageError(format!("--platform {p:?}: {e}")))?),
        None => None,
    };
    if args.pull.insecure {
        tracing::warn!("--insecure: TLS certificates are not verified");
    }
    // Ad-hoc images use the config's defaults and limits (or the built-in ones)
    // and the settings of a configured registry with the same host.
    let base = config.clone().unwrap_or_default();
    let defaults = base.defaults.clone();
    let overrides = plan::Overrides {
        plain_http: args.pull.plain_http,
        insecure: args.pull.insecure,
        platforms: platform_override,
        frontends: args.pull.frontends.clone(),
        timeout: None,
        expect_paths: args.pull.expect_paths.clone(),
    };
    let mut jobs = Vec::new();
    let mut canaries = Vec::new();
    let mut skipped_canaries = 0;
    let mut failed = Vec::new();
    let mut discovered = Vec::new();
    for raw in &args.images {
        jobs.push(plan::job_for_image(&base, raw, &overrides).await.map_err(UsageError)?);
    }

    if let Some(config) = &config {
        let selected: Vec<_> =
            config.probes.iter().filter(|p| args.probes.is_empty() || args.probes.contains(&p.name)).collect();
        for wanted in &args.probes {
            if !config.probes.iter().any(|p| &p.name == wanted) {
                return Err(UsageError(format!("--probe {wanted:?}: no such probe in the config")));
            }
        }
        if !args.images.is_empty() && args.probes.is_empty() {
            // Images on the command line with -c: the config gives defaults, not probes.
        } else {
            for probe in selected {
                if let ProbeKind::Canary(_) = probe.kind {
                    if args.no_push {
                        skipped_canaries += 1;
                    } else {
                        canaries.push(plan::canary_job_for_probe(config, probe, &overrides).await.map_err(UsageError)?);
                    }
                    continue;
                }
                let slot = args.round.unwrap_or_else(|| plan::clock_slot(config.interval_for(probe)));
                let planned = plan::plan_probe(config, probe, &overrides, slot).await.map_err(UsageError)?;
                jobs.extend(planned.jobs);
                failed.extend(planned.failed);
                if let Some(found) = planned.discovery {
                    discovered.push((probe.name.clone(), found));
                }
            }
        }
    }
    if jobs.is_empty() && canaries.is_empty() && failed.is_empty() {
        let why = if skipped_canaries > 0 {
            format!(" (--no-push skipped {skipped_canaries} canary probe(s))")
        } else {
            String::new()
        };
        return Err(UsageError(format!("nothing to probe: give an IMAGE or a config with probes{why}")));
    }
    let limits_config = config.as_ref().map(|c| c.limits).unwrap_or_default();
    let probed = jobs
        .iter()
        .map(|j| j.target.probe.clone())
        .chain(canaries.iter().map(|c| c.probe.clone()))
        .chain(failed.iter().map(|r| r.probe.clone()));
    let (alerting, mut run_context) = delivery_context(args, config.as_ref(), probed);
    for (probe, found) in &discovered {
        run_context.carried.extend(found.candidates.iter().map(|image| (probe.clone(), image.clone())));
    }
    Ok(NowPlan {
        jobs,
        canaries,
        failed,
        discovered,
        alerting,
        run_context,
        concurrency: defaults.concurrency.max(1),
        max_round_bytes: limits_config.max_round_bytes,
        interval: defaults.interval,
    })
}

fn load_config(path: &Path) -> Result<Config, UsageError> {
    Config::load(path).map_err(|e| UsageError(e.to_string()))
}

/// A live byte counter on stderr, only on a terminal.
struct ProgressDisplay {
    counter: Arc<AtomicU64>,
    bar: indicatif::ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl ProgressDisplay {
    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

fn show_progress(format: OutputFormat) -> Option<ProgressDisplay> {
    if !std::io::stderr().is_terminal() || (format == OutputFormat::Table && !std::io::stdout().is_terminal()) {
        return None;
    }
    let counter = Arc::new(AtomicU64::new(0));
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} pulling: {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let ticker = {
        let counter = counter.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                bar.set_message(output::human_bytes(counter.load(Ordering::Relaxed)));
                bar.tick();
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
        })
    };
    Some(ProgressDisplay { counter, bar, ticker })
}
