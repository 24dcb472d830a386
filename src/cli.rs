//! The command line: argument parsing and the commands `now` and `validate`.
//! Each command turns its arguments into pull jobs, runs them, and hands the
//! results to an output; exit codes are decided here and nowhere else.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, ProbeKind};
use crate::frontend::{self, Frontend};
use crate::output;
use crate::platform::PlatformSelection;
use crate::probe::pull::{PullLimits, PullTarget};
use crate::probe::run::{PullJob, run_jobs};
use crate::reference::ImageReference;
use crate::registry::transport::TransportOptions;
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
    /// Parse and check probes.yaml.
    Validate(ValidateArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
struct NowArgs {
    /// Image references to probe (`registry.example.org/team/app:1.2`, `alpine`).
    images: Vec<String>,
    /// probes.yaml to read (default ./probes.yaml when no IMAGE is given).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Only these probes of the config (repeatable).
    #[arg(long = "probe")]
    probes: Vec<String>,
    /// Probe exactly these frontends, each separately: an address (10.0.0.1, 10.0.0.2:8443) or a URL.
    #[arg(long = "frontend")]
    frontends: Vec<String>,
    /// `all`, or OS/ARCH[/VARIANT].
    #[arg(long)]
    platform: Option<String>,
    /// Output format (`table` for humans, `json` for programs).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    output: OutputFormat,
    /// Use plain HTTP (default only for loopback registries).
    #[arg(long)]
    plain_http: bool,
    /// Skip TLS certificate verification.
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    #[arg(short = 'c', long = "config", default_value = "probes.yaml")]
    config: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::OK });
        }
    };
    init_logging();
    match cli.command {
        Command::Validate(args) => validate(&args),
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PULLPROBE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn validate(args: &ValidateArgs) -> ExitCode {
    match Config::load(&args.config) {
        Ok(config) => match unsupported_features(&config) {
            Some(problem) => {
                eprintln!("{}: {problem}", args.config.display());
                ExitCode::from(exit::USAGE)
            }
            None => {
                println!(
                    "{}: OK ({} probes, {} registries)",
                    args.config.display(),
                    config.probes.len(),
                    config.registries.len()
                );
                ExitCode::from(exit::OK)
            }
        },
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::USAGE)
        }
    }
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
    let results = run_jobs(jobs.jobs, concurrency, progress.as_ref().map(|p| p.counter.clone())).await;
    if let Some(p) = progress {
        p.finish();
    }
    match args.output {
        OutputFormat::Json => println!("{}", output::json::render(&results)),
        OutputFormat::Table => print!("{}", output::table::render(&results)),
    }
    ExitCode::from(exit_code(&results))
}

fn exit_code(results: &[ProbeResult]) -> u8 {
    if results.iter().any(|r| !r.ok) { exit::PROBE_FAILED } else { exit::OK }
}

struct NowPlan {
    jobs: Vec<PullJob>,
    concurrency: usize,
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
    let platform_override = match &args.platform {
        Some(p) => Some(PlatformSelection::parse(p).map_err(|e| UsageError(format!("--platform {p:?}: {e}")))?),
        None => None,
    };
    let defaults = config.as_ref().map(|c| c.defaults.clone()).unwrap_or_default();
    let limits = config.as_ref().map(pull_limits).unwrap_or_default();
    let location = defaults.location.clone();
    let base_transport = TransportOptions {
        insecure: args.insecure,
        max_redirects: config.as_ref().map(|c| c.limits.max_redirects as usize).unwrap_or(5),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(30)),
        ..TransportOptions::default()
    };
    if args.insecure {
        tracing::warn!("--insecure: TLS certificates are not verified");
    }

    let mut jobs = Vec::new();
    for raw in &args.images {
        let image = ImageReference::parse(raw).map_err(|e| UsageError(format!("image {raw:?}: {e}")))?;
        let target = PullTarget {
            probe: raw.clone(),
            registry: image.registry.clone(),
            image: image.clone(),
            location: location.clone(),
            platforms: platform_override.clone().unwrap_or_else(|| defaults.platforms.clone()),
            timeout: defaults.timeout,
            limits,
            layer_concurrency: layer_concurrency(),
        };
        let frontends = frontends_for(&args.frontends, &image, args.plain_http)?;
        jobs.push(PullJob { target, frontends, transport: base_transport.clone() });
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
            if let Some(problem) = unsupported_features(config) {
                return Err(UsageError(problem));
            }
            for probe in selected {
                let (image, registry) = config.resolve_image(probe).map_err(|e| UsageError(e.to_string()))?;
                let plain_http = args.plain_http;
                let target = PullTarget {
                    probe: probe.name.clone(),
                    registry: registry.map(|r| r.name.clone()).unwrap_or_else(|| image.registry.clone()),
                    image: image.clone(),
                    location: location.clone(),
                    platforms: platform_override.clone().unwrap_or_else(|| config.platforms_for(probe)),
                    timeout: config.timeout_for(probe),
                    limits,
                    layer_concurrency: layer_concurrency(),
                };
                let mut transport = base_transport.clone();
                if let Some(tls) = registry.and_then(|r| r.tls.as_ref()) {
                    transport.ca_file = tls.ca_file.clone();
                    transport.client_cert = tls.client_cert.clone();
                    transport.client_key = tls.client_key.clone();
                }
                let frontends = if args.frontends.is_empty() {
                    frontend::configured_frontends(registry, &image, plain_http).await.map_err(UsageError)?
                } else {
                    frontends_for(&args.frontends, &image, plain_http)?
                };
                jobs.push(PullJob { target, frontends, transport });
            }
        }
    }
    if jobs.is_empty() {
        return Err(UsageError("nothing to probe: give an IMAGE or a config with probes".into()));
    }
    Ok(NowPlan { jobs, concurrency: defaults.concurrency.max(1) })
}

fn load_config(path: &Path) -> Result<Config, UsageError> {
    Config::load(path).map_err(|e| UsageError(e.to_string()))
}

fn pull_limits(config: &Config) -> PullLimits {
    PullLimits {
        max_manifest_bytes: config.limits.max_manifest_bytes,
        max_pull_bytes: config.limits.max_pull_bytes,
        max_uncompressed_bytes: config.limits.max_uncompressed_bytes,
        max_uncompressed_ratio: config.limits.max_uncompressed_ratio,
    }
}

/// Layers verified at once per pull: one per core keeps inflate busy without
/// oversubscribing a small pod; at least two so the network overlaps the CPU.
fn layer_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(2, 8)
}

fn frontends_for(args: &[String], image: &ImageReference, plain_http: bool) -> Result<Vec<Frontend>, UsageError> {
    if args.is_empty() {
        return frontend::default_frontend(image, plain_http).map(|f| vec![f]).map_err(UsageError);
    }
    args.iter().map(|a| frontend::parse_frontend_arg(a, image, plain_http).map_err(UsageError)).collect()
}

/// Parts of probes.yaml that parse but that this version does not run yet: an
/// explicit error beats a probe silently not running or a page silently not sent.
fn unsupported_features(config: &Config) -> Option<String> {
    let mut problems = Vec::new();
    for probe in &config.probes {
        let name = &probe.name;
        match &probe.kind {
            ProbeKind::Image { tags: Some(_), .. } => {
                problems.push(format!("probe {name:?}: `tags:` selection is not supported by this version"))
            }
            ProbeKind::Image { .. } => {}
            other => {
                problems.push(format!("probe {name:?}: `{}:` probes are not supported by this version", other.key()))
            }
        }
        if !probe.expect.is_empty() {
            problems.push(format!("probe {name:?}: `expect:` assertions are not supported by this version"));
        }
    }
    for registry in &config.registries {
        let name = &registry.name;
        if registry.auth.is_some() {
            problems.push(format!("registry {name:?}: `auth:` is not supported by this version"));
        }
    }
    if config.alerting.alertmanager.is_some() || config.alerting.pushgateway.is_some() {
        problems.push("`alerting:` (Alertmanager, Pushgateway) is not supported by this version".to_string());
    }
    problems.into_iter().next()
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
