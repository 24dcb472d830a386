//! `bench/throughput` end to end on a small image: it sets up its registry and
//! frontends, pushes, measures every row once (also under the CPU quota where the
//! machine allows one) and writes a JSON report with every row and ratio. No
//! timing is asserted: the bench reports, humans judge.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::process::run_with_timeout;
use serde_json::Value;

/// The rows every pass of the report has (inflate rows per layer come on top).
const ROWS: [&str; 11] = [
    "pullprobe_now",
    "pullprobe_now_3_frontends",
    "pullprobe_now_small",
    "skopeo_copy",
    "skopeo_copy_decompress",
    "shell_pipeline",
    "transfer_limit",
    "in_process_2_threads",
    "in_process_1_thread",
    "in_process_2_threads_manifest_order",
    "inflate_limit",
];
const LAYERS: [&str; 5] = ["binaries", "text", "random", "small-files", "small-layer"];
const RATIOS: [&str; 8] = [
    "skopeo_copy_over_pullprobe",
    "skopeo_copy_decompress_over_pullprobe",
    "shell_pipeline_over_pullprobe",
    "pullprobe_over_in_process_2_threads",
    "manifest_order_over_largest_first",
    "pullprobe_over_transfer_limit",
    "pullprobe_cpu_over_in_process_1_thread_cpu",
    "extra_frontend_cpu_over_first",
];

/// The bench helper example, built in the profile of the binary under test.
fn bench_helper() -> PathBuf {
    let pullprobe = Path::new(env!("CARGO_BIN_EXE_pullprobe"));
    let profile_dir = pullprobe.parent().expect("the binary has a directory");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "--example", "bench_throughput"]).current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let out = run_with_timeout(&mut build, Duration::from_secs(600));
    assert_eq!(out.code, 0, "building the bench helper failed:\n{}", out.stderr);
    let helper = profile_dir.join("examples").join("bench_throughput");
    assert!(helper.is_file(), "{} was not built", helper.display());
    helper
}

/// The layer-heavy shape is what its name says: one layer holds at least 40 % of the
/// compressed bytes, and it is tens of thousands of small files at full size.
#[test]
fn the_heavy_bench_image_has_one_dominant_layer() {
    let helper = bench_helper();
    let dir = tempfile::Builder::new().prefix("pullprobe-bench-heavy-").tempdir().expect("temp dir");
    let mut build = Command::new(&helper);
    build.arg("build").arg(dir.path()).args(["48", "heavy"]);
    let out = run_with_timeout(&mut build, Duration::from_secs(300));
    assert_eq!(out.code, 0, "bench_throughput build failed:\n{}", out.stderr);
    let images: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("layers.json")).expect("layers.json")).expect("JSON");
    let big = &images["big"];
    let total = big["size"].as_u64().expect("size") as f64;
    let largest = big["layers"].as_array().expect("layers").iter().filter_map(|l| l["size"].as_u64()).max();
    let share = largest.expect("a layer") as f64 / total;
    assert!(share >= 0.4, "the largest layer holds {share:.2} of {total} bytes: {big}");
}

#[test]
fn throughput_bench_runs_end_to_end_on_a_small_image() {
    let helper = bench_helper();
    let dir = tempfile::Builder::new().prefix("pullprobe-bench-test-").tempdir().expect("temp dir");
    let report_path = dir.path().join("throughput.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/throughput");
    let mut command = Command::new(&script);
    command
        .env("PULLPROBE_BENCH_MIB", "6")
        .env("PULLPROBE_BENCH_REPS", "1")
        .env("PULLPROBE_BENCH_QUOTA_REPS", "1")
        .env("PULLPROBE_BENCH_OUT", &report_path)
        .env("PULLPROBE_BENCH_INSTALL", "0")
        .env("PULLPROBE_BIN", env!("CARGO_BIN_EXE_pullprobe"))
        .env("PULLPROBE_BENCH_HELPER", &helper)
        .env_remove("RUST_LOG");
    let out = run_with_timeout(&mut command, Duration::from_secs(600));
    assert_eq!(out.code, 0, "bench/throughput failed:\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pullprobe_now"), "no table on stdout:\n{}", out.stdout);

    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).expect("the JSON report was written"))
        .expect("the report is JSON");
    let machine = &report["machine"];
    assert!(machine["nproc"].as_u64().is_some_and(|n| n >= 1), "{machine}");
    assert!(machine["cpu_model"].as_str().is_some_and(|m| !m.is_empty()), "{machine}");
    assert!(machine["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{machine}");

    let big = &report["image"]["big"];
    let names: Vec<&str> =
        big["layers"].as_array().expect("layers").iter().filter_map(|l| l["name"].as_str()).collect();
    assert_eq!(names, LAYERS, "{big}");
    assert!(big["uncompressed"].as_u64().is_some_and(|u| u >= 6 << 20), "{big}");

    let quota = report["settings"]["quota_method"].as_str().expect("quota_method");
    let mut passes = vec!["plain"];
    if quota != "none" {
        passes.push("quota");
    }
    let rows = report["rows"].as_array().expect("rows");
    for pass in &passes {
        let mut wanted: Vec<String> = ROWS.iter().map(|r| r.to_string()).collect();
        wanted.extend(LAYERS.iter().map(|l| format!("inflate_limit:{l}")));
        for name in wanted {
            let row = rows
                .iter()
                .find(|r| r["pass"] == *pass && r["name"] == name.as_str())
                .unwrap_or_else(|| panic!("no row {name} in pass {pass}"));
            for key in ["wall_s", "cpu_s", "rss_mib", "mb_s_compressed", "cpu_s_per_gb", "services_cpu_s"] {
                assert!(row[key].as_f64().is_some_and(|v| v >= 0.0), "{pass} {name}: {key} in {row}");
            }
            assert!(row["rss_mib"].as_f64().is_some_and(|v| v > 0.0), "{pass} {name}: {row}");
            assert_eq!(row["runs"], 1, "{pass} {name}");
        }
        let ratios = &report["ratios"][pass];
        // CPU seconds come in hundredths: on this small image the in-process CPU may
        // round to 0, and the report gives a ratio over it as null, not infinity.
        let in_process_cpu_is_zero = rows
            .iter()
            .any(|r| r["pass"] == *pass && r["name"] == "in_process_1_thread" && r["cpu_s"].as_f64() == Some(0.0));
        for ratio in RATIOS {
            let over_zero = ratio == "pullprobe_cpu_over_in_process_1_thread_cpu" && in_process_cpu_is_zero;
            assert!(
                ratios[ratio].is_number() || over_zero && ratios[ratio].is_null(),
                "ratio {ratio} in pass {pass}: {ratios}"
            );
        }
    }
    assert_eq!(report["settings"]["shape"], "even");
    let now = rows.iter().find(|r| r["pass"] == "plain" && r["name"] == "pullprobe_now").expect("pullprobe_now");
    assert!(now["cpu_s_per_gb_tar"].as_f64().is_some_and(|v| v > 0.0), "{now}");
    let busy = &report["ratios"]["plain"]["pullprobe_wall_over_busy_cores"];
    assert!(busy.as_f64().is_some_and(|v| v > 0.0), "{busy}");
    // Three frontends: every layer checked in full once, by digest on the others.
    let checks = &report["three_frontends_layer_checks"];
    assert_eq!(checks["full"], 5, "{checks}");
    assert_eq!(checks["digest_only"], 10, "{checks}");
}
