//! The command line as clap reads it: every command, flag and help text
//! (DESIGN.md, "Commands": a user-facing contract), and what `now` and `check`
//! ask the planner for.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::probe::plan::Request;
use crate::shard::{self, PodIdentity, Shard, ShardError, ShardSpec};

#[derive(Debug, Parser)]
#[command(name = "pullprobe", version, about = "Synthetic pull prober for container registries", long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Debug, Subcommand)]
pub(super) enum Command {
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
pub(super) struct ServeArgs {
    /// probes.yaml to run (reloaded on SIGHUP and when the file changes).
    #[arg(short = 'c', long = "config", default_value = "probes.yaml")]
    pub(super) config: PathBuf,
    /// Address for /metrics, /probe, /healthz and /.
    #[arg(long, default_value = "127.0.0.1:9640")]
    pub(super) listen: std::net::SocketAddr,
    /// Log as JSON lines (one line per probe result); default: JSON unless stderr is a terminal.
    #[arg(long)]
    pub(super) log_json: Option<bool>,
    #[command(flatten)]
    pub(super) shard: ShardOptions,
}

/// Which share of the images this process probes, when several pods split them.
#[derive(Debug, Clone, Default, clap::Args)]
pub(super) struct ShardOptions {
    /// Probe only the images of shard I of N (0-based; every shard reads the same
    /// config), or `auto`: I from JOB_COMPLETION_INDEX (an Indexed Job), else
    /// PULLPROBE_SHARD_INDEX, else the host name's -<ordinal> (a StatefulSet pod).
    #[arg(long, value_name = "I/N|auto", value_parser = parse_shard)]
    pub(super) shard: Option<ShardSpec>,
    /// The shard count N for `--shard auto` (default: PULLPROBE_SHARDS).
    #[arg(long, value_name = "N")]
    pub(super) shards: Option<u32>,
}

impl ShardOptions {
    /// The shard this process is (the pod's environment for `auto`).
    pub(super) fn resolve(&self) -> Result<Shard, ShardError> {
        shard::resolve(self.shard, self.shards, &PodIdentity::current())
    }
}

fn parse_shard(text: &str) -> Result<ShardSpec, String> {
    ShardSpec::parse(text).map_err(|e| e.to_string().trim_start_matches("--shard: ").to_string())
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub(super) enum OutputFormat {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(super) struct NowArgs {
    /// Image references to probe (`registry.example.org/team/app:1.2`, `alpine`).
    pub(super) images: Vec<String>,
    /// probes.yaml to read (default ./probes.yaml when no IMAGE is given).
    #[arg(short = 'c', long = "config")]
    pub(super) config: Option<PathBuf>,
    /// Only these probes of the config (repeatable).
    #[arg(long = "probe")]
    pub(super) probes: Vec<String>,
    #[command(flatten)]
    pub(super) pull: PullOptions,
    /// Output format (`table` for humans, `json` for programs).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub(super) output: OutputFormat,
    /// Exit 0 rather than 1 for a failed probe when Alertmanager has the failure
    /// (for a CronJob whose failures already page).
    #[arg(long)]
    pub(super) no_fail: bool,
    /// Skip `canary:` probes (they push to the registry): a read-only run.
    #[arg(long)]
    pub(super) no_push: bool,
    /// The round number for the bandwidth rotation (default: the wall clock over `defaults.interval`).
    #[arg(long, hide = true)]
    pub(super) round: Option<u64>,
    #[command(flatten)]
    pub(super) shard: ShardOptions,
}

#[derive(Debug, clap::Args)]
pub(super) struct ValidateArgs {
    #[arg(short = 'c', long = "config", default_value = "probes.yaml")]
    pub(super) config: PathBuf,
    /// Check probes.yaml only, not the files it names (TLS files, password files,
    /// Docker configs, node mirror files): for a config written for another
    /// machine, such as the one a chart renders for its pods.
    #[arg(long)]
    pub(super) no_files: bool,
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
pub(super) struct CheckArgs {
    /// The image reference to pull (or --probe).
    pub(super) image: Option<String>,
    /// A probe of the config.
    #[arg(long = "probe")]
    pub(super) probe: Option<String>,
    /// probes.yaml (default ./probes.yaml with --probe); `-c` is the critical threshold here.
    #[arg(long = "config")]
    pub(super) config: Option<PathBuf>,
    /// WARNING when the slowest frontend takes longer than this many seconds.
    #[arg(short = 'w', long = "warning", value_name = "SECONDS", value_parser = parse_seconds)]
    pub(super) warning: Option<f64>,
    /// CRITICAL when the slowest frontend takes longer than this many seconds.
    #[arg(short = 'c', long = "critical", value_name = "SECONDS", value_parser = parse_seconds)]
    pub(super) critical: Option<f64>,
    /// Seconds the whole check may take (also caps each pull's timeout).
    #[arg(short = 't', long = "timeout", value_name = "SECONDS", default_value = "60", value_parser = parse_seconds)]
    pub(super) timeout: f64,
    #[command(flatten)]
    pub(super) pull: PullOptions,
    #[command(flatten)]
    pub(super) shard: ShardOptions,
}

/// How to pull, shared by `now` and `check`.
#[derive(Debug, Clone, clap::Args)]
pub(super) struct PullOptions {
    /// Probe exactly these frontends, each separately: an address (10.0.0.1, 10.0.0.2:8443) or a URL.
    #[arg(long = "frontend")]
    pub(super) frontends: Vec<String>,
    /// `all`, or OS/ARCH[/VARIANT].
    #[arg(long)]
    pub(super) platform: Option<String>,
    /// Use plain HTTP (default only for loopback registries).
    #[arg(long)]
    pub(super) plain_http: bool,
    /// Skip TLS certificate verification.
    #[arg(long)]
    pub(super) insecure: bool,
    /// A path that must exist in the image's final filesystem (repeatable; added to every probe's `expect:`).
    #[arg(long = "expect-path", value_name = "PATH")]
    pub(super) expect_paths: Vec<String>,
}

/// Seconds for `-w`/`-c`/`-t`: `5`, `2.5` or `10s`; more than 0.
fn parse_seconds(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v < 1e9 => Ok(v),
        _ => Err(format!("expected a number of seconds more than 0, like 5 or 2.5, got {text:?}")),
    }
}

impl PullOptions {
    /// The request of `now` or `check`, with these ways to pull.
    fn request(self, images: Vec<String>, config: Option<PathBuf>, probes: Vec<String>) -> Request {
        Request {
            images,
            config,
            probes,
            frontends: self.frontends,
            platform: self.platform,
            plain_http: self.plain_http,
            insecure: self.insecure,
            expect_paths: self.expect_paths,
            no_push: false,
            round: None,
            shard: Shard::ALL,
        }
    }
}

impl NowArgs {
    /// What `now` asks the planner for; a shard that cannot be resolved is a usage error.
    pub(super) fn request(&self) -> Result<Request, ShardError> {
        Ok(Request {
            no_push: self.no_push,
            round: self.round,
            shard: self.shard.resolve()?,
            ..self.pull.clone().request(self.images.clone(), self.config.clone(), self.probes.clone())
        })
    }
}

impl CheckArgs {
    /// What `check` asks the planner for: the image, or the probe.
    pub(super) fn request(&self) -> Result<Request, ShardError> {
        let request = self.pull.clone().request(
            self.image.iter().cloned().collect(),
            self.config.clone(),
            self.probe.iter().cloned().collect(),
        );
        Ok(Request { shard: self.shard.resolve()?, ..request })
    }
}
