//! The progress display of `pullprobe now` on a terminal: one bar per pull
//! (an image through one frontend) while it runs — bytes read of the bytes its
//! manifests promise, the rate, the time left, the image and the frontend —
//! as skopeo and docker pull show. Before a pull's manifests are read it is a
//! spinner with its byte count.
//!
//! What is known comes from [`RunProgress`] (the pulls write it, see
//! `probe::progress`); this file only draws it, with indicatif, on stderr. It
//! is shown only when stderr is a terminal (and, for the table, stdout too):
//! piped or redirected, `now` prints nothing but its output.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::args::OutputFormat;
use crate::probe::progress::{PullSnapshot, RunProgress};

/// How often the bars are brought up to date.
const REFRESH: Duration = Duration::from_millis(100);

/// A pull whose total is known: bar, bytes of total, rate, ETA, then image and frontend
/// (cut to the terminal's width).
const BAR: &str =
    "[{bar:24}] {binary_bytes:>10} / {binary_total_bytes:<10} {binary_bytes_per_sec:>12}  ETA {eta:<4} {wide_msg}";
/// A pull still reading its manifests: its bytes so far, image and frontend in the bar's columns.
const SPINNER: &str = "{spinner:<26} {binary_bytes:>10}   reading manifests                 {wide_msg}";

/// The bars of a run, drawn until [`ProgressDisplay::finish`].
pub(super) struct ProgressDisplay {
    pub run: Arc<RunProgress>,
    bars: Arc<Mutex<Bars>>,
    ticker: tokio::task::JoinHandle<()>,
}

/// A display for `now`'s pulls, if stderr (and for the table, stdout) is a terminal.
pub(super) fn show(format: OutputFormat) -> Option<ProgressDisplay> {
    if !std::io::stderr().is_terminal() || (format == OutputFormat::Table && !std::io::stdout().is_terminal()) {
        return None;
    }
    let run = RunProgress::new();
    let bars = Arc::new(Mutex::new(Bars::default()));
    let ticker = {
        let (run, bars) = (run.clone(), bars.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(mut bars) = bars.lock() {
                    bars.update(&run.snapshot());
                }
                tokio::time::sleep(REFRESH).await;
            }
        })
    };
    Some(ProgressDisplay { run, bars, ticker })
}

impl ProgressDisplay {
    /// Stop drawing and clear the bars, before the results are printed.
    pub fn finish(self) {
        self.ticker.abort();
        if let Ok(mut bars) = self.bars.lock() {
            bars.close();
        }
    }
}

/// indicatif's bars, one per running pull.
#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    by_pull: HashMap<usize, ProgressBar>,
    /// Once closed, nothing is drawn again (a last tick may still be on its way).
    closed: bool,
}

impl Bars {
    fn update(&mut self, pulls: &[PullSnapshot]) {
        if self.closed {
            return;
        }
        for pull in pulls {
            if pull.finished {
                if let Some(bar) = self.by_pull.remove(&pull.id) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                continue;
            }
            let multi = &self.multi;
            let bar = self.by_pull.entry(pull.id).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style(SPINNER)));
                bar.set_message(format!("{} via {}", pull.image, pull.frontend));
                bar
            });
            match pull.total {
                Some(total) => {
                    if bar.length() != Some(total) {
                        if bar.length().is_none() {
                            bar.set_style(style(BAR));
                        }
                        bar.set_length(total);
                    }
                    bar.set_position(pull.done.min(total));
                }
                None => {
                    bar.set_position(pull.done);
                    bar.tick();
                }
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        for (_, bar) in self.by_pull.drain() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}
