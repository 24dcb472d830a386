//! The command line: clap's arguments ([`args`]) to a plan, and the exit
//! codes — decided here and nowhere else. Each command starts the same run
//! path of the library (plan, run, outputs) and says where results go:
//! `now` ([`now`]) prints and delivers them (with a progress display on a
//! terminal, [`progress`]), `check` ([`check`]) judges them as a Monitoring
//! Plugin, `serve` hands over to [`crate::serve`], `validate` only reads the config.

mod args;
mod check;
mod now;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

pub use self::args::Cli;
use self::args::{Command, ServeArgs, ValidateArgs};
use crate::config::Config;
use crate::output;

/// Exit codes of `now`, `serve` and `validate` (DESIGN.md, "Commands");
/// `check` exits with its plugin state.
pub mod exit {
    pub const OK: u8 = 0;
    pub const PROBE_FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DELIVERY_FAILED: u8 = 3;
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
        Command::Check(args) => check::check(&args),
        Command::Serve(args) => serve(args),
        Command::Now(args) => match runtime() {
            Ok(runtime) => runtime.block_on(now::now(&args)),
            Err(e) => {
                eprintln!("pullprobe: cannot start the async runtime: {e}");
                ExitCode::from(exit::USAGE)
            }
        },
    }
}

/// The async runtime of every command. Its workers only move bytes (HTTP, TLS, the
/// hand-over to the verifiers); verifications run on blocking threads, a pull's layers
/// two to eight at once (one per core). So it has half as many workers as cores (at
/// least one): with one per core, a 2-core pull had twice as many busy threads as
/// cores preempting and waking each other, which cost the heavy benchmark image about
/// 0.1 CPU s (docs/performance.md). One worker decrypts TLS far faster than two
/// verifiers consume. tokio's `TOKIO_WORKER_THREADS`, if set, still decides.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        builder.worker_threads(cores.div_ceil(2));
    }
    builder.enable_all().build()
}

fn serve(args: ServeArgs) -> ExitCode {
    let json = args.log_json.unwrap_or_else(|| !std::io::stderr().is_terminal());
    init_serve_logging(json);
    let shard = match args.shard.resolve() {
        Ok(shard) => shard,
        Err(e) => {
            eprintln!("pullprobe serve: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pullprobe: cannot start the async runtime: {e}");
            return ExitCode::from(exit::USAGE);
        }
    };
    let outcome = runtime.block_on(crate::serve::run(args.config, args.listen, shard));
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
    let files = |config: Config| {
        if args.no_files {
            return Ok(config);
        }
        crate::frontend::node_config::check_files(&config)?;
        crate::probe::connection::check_all_files(&config)?;
        Ok(config)
    };
    match Config::load(&args.config).and_then(files) {
        Ok(config) => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
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
