//! `pullprobe check`: plan and run like `now`, judge like a Monitoring
//! Plugin, deliver nothing. Every problem of pullprobe's own is UNKNOWN.

use std::process::ExitCode;
use std::time::Duration;

use super::args::CheckArgs;
use crate::output::icinga::{self, CheckOutput, PluginState, Thresholds};
use crate::probe::plan::{self, CommandPlan};
use crate::probe::run;

pub(super) fn check(args: &CheckArgs) -> ExitCode {
    let runtime = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            print!("{}", icinga::unknown(&format!("cannot start the async runtime: {e}")).text);
            return ExitCode::from(PluginState::Unknown.exit_code());
        }
    };
    let outcome = runtime.block_on(judge(args));
    print!("{}", outcome.text);
    ExitCode::from(outcome.state.exit_code())
}

/// The status line: UNKNOWN for a plan that cannot be made, a timeout for a
/// run over `-t`, else the verdict on the results.
async fn judge(args: &CheckArgs) -> CheckOutput {
    let thresholds = Thresholds { warning: args.warning, critical: args.critical };
    let limit = Duration::from_secs_f64(args.timeout);
    let request = match args.request() {
        Ok(request) => request,
        Err(e) => return icinga::unknown(&e.to_string()),
    };
    let CommandPlan { mut plan, options, .. } = match plan::plan_command(&request).await {
        Ok(planned) => planned,
        Err(e) => return icinga::unknown(&e.to_string()),
    };
    if plan.jobs.is_empty() {
        return icinga::not_owned(&request.shard.to_string());
    }
    plan.cap_pull_timeouts(limit);
    match tokio::time::timeout(limit, run::run(plan.jobs, options)).await {
        Ok(results) => icinga::render(&results, thresholds),
        Err(_) => icinga::timed_out(args.timeout, thresholds),
    }
}
