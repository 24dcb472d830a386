//! A gauge family as the outputs hand it around: a name, its HELP text and
//! its samples, each a label set and a value. [`crate::output::metrics`] and
//! [`crate::output::canary_metrics`] build them from results, serve adds its
//! own, and `metrics` (text) and `pushgateway` (protobuf) encode them.
//!
//! Plain values only: no registry, no encoding, nothing about results.

/// The labels of one series, in order: `[("probe", "golden-base"), …]`.
pub type Labels = Vec<(String, String)>;

/// One series: its labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub value: f64,
}

/// A gauge family: name (without the prefix), HELP text, samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub samples: Vec<Sample>,
}

impl GaugeFamily {
    /// A family without samples yet.
    pub fn new(name: &'static str, help: &'static str) -> Self {
        GaugeFamily { name, help, samples: Vec::new() }
    }

    pub fn push(&mut self, labels: Labels, value: f64) {
        self.samples.push(Sample { labels, value });
    }
}
