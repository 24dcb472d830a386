//! The helper of `bench/throughput`: writes the benchmark images with the
//! project's image builder, and measures the in-process limits the bench
//! compares `pullprobe now` against with the prober's own verifier. It lives
//! with the prober's examples because it uses both.
//!
//! ```text
//! bench_throughput build WORK_DIR MIB [even|heavy]
//!     write the OCI image layout WORK_DIR with the tags `big` (about MIB MiB
//!     uncompressed, 5 gzip layers: binaries, text, incompressible random, many
//!     small files, one small layer) and `small` (about 3 MB), for the bench to
//!     push; write WORK_DIR/layers.json. `even` (the default) spreads the bytes
//!     over the layers; `heavy` gives one layer (a tree of tens of thousands of
//!     small files: sources, objects and compressed assets) over 40 % of the
//!     compressed bytes, the shape where one layer decides the wall time, and
//!     models binaries as machine-code-like bytes, the slowest kind to inflate
//! bench_throughput inflate BLOB
//!     decompress one gzip layer blob on this thread with the prober's decoder
//! bench_throughput verify WORK_DIR THREADS [largest-first|manifest-order]
//!     full verification (digest, inflate, diff_id, tar walk) of every layer of
//!     bench/big read from its blob file, THREADS layers at a time, largest first
//!     (as `pullprobe` schedules them) or in manifest order
//! ```
//!
//! Every image is a function of MIB only: the same MIB gives the same digests.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use image_builder::{
    CompressionLevel, Format, GeneratedContent, Image, ImageBuilder, Layer, LayerBuilder, LayerCompression, Layout,
};
use pullprobe::digest::Digest;
use pullprobe::verify::{self, CheckMode, Compression, LayerLimits, LayerSpec};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1 << 20;

/// One layer of bench/big as `layers.json` records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    name: String,
    digest: Digest,
    diff_id: Digest,
    size: u64,
    uncompressed: u64,
    path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct ImageRecord {
    reference: String,
    size: u64,
    uncompressed: u64,
    layers: Vec<LayerRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Images {
    big: ImageRecord,
    small: ImageRecord,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        ["build", dir, mib, shape @ ..] => match (mib.parse::<u64>(), shape) {
            (Ok(mib), [] | ["even"]) => build(Path::new(dir), mib, Shape::Even),
            (Ok(mib), ["heavy"]) => build(Path::new(dir), mib, Shape::Heavy),
            _ => Err(format!("want MIB [even|heavy], not {mib:?} {shape:?}").into()),
        },
        ["inflate", blob] => inflate(Path::new(blob)),
        ["verify", dir, threads, order @ ..] => match (threads.parse::<usize>(), order) {
            (Ok(threads), [] | ["largest-first"]) => verify_all(Path::new(dir), threads.max(1), true),
            (Ok(threads), ["manifest-order"]) => verify_all(Path::new(dir), threads.max(1), false),
            _ => Err(format!("want THREADS [largest-first|manifest-order], not {threads:?} {order:?}").into()),
        },
        _ => {
            eprintln!(
                "usage: bench_throughput build WORK_DIR MIB [even|heavy] | inflate BLOB | verify WORK_DIR THREADS [largest-first|manifest-order]"
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_throughput: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How bench/big spreads its bytes over its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No dominant layer.
    Even,
    /// The small-files layer holds over 40 % of the compressed bytes.
    Heavy,
}

/// The five layers of bench/big, scaled to `mib` MiB uncompressed in total.
fn big_layers(mib: u64, shape: Shape) -> Vec<(&'static str, LayerBuilder)> {
    let total = mib.max(1) * MIB;
    let part = |percent: u64| (total * percent / 100).max(64 * 1024);
    // Percent of the uncompressed bytes per layer.
    let (binaries_part, text_part, random_part, small_part) = match shape {
        Shape::Even => (30, 36, 12, 22),
        Shape::Heavy => (30, 28, 10, 32),
    };

    // Binaries: executables and libraries are a mix of code, embedded data and zero
    // padding. The even image models code as text and embeds compressed data (random);
    // the heavy one uses machine-code-like bytes, the slowest kind to inflate.
    let mut binaries = LayerBuilder::new();
    let file_size = (part(binaries_part) / 48).max(4096);
    for i in 0..48u64 {
        let content = match (shape, i % 4) {
            (Shape::Even, 0) => GeneratedContent::text(1000 + i, file_size),
            (Shape::Even, 1) => GeneratedContent::random(1000 + i, file_size),
            (Shape::Heavy, 0 | 1) => GeneratedContent::code(1000 + i, file_size),
            (Shape::Heavy, 2) => GeneratedContent::text(1000 + i, file_size),
            _ => GeneratedContent::zeros(file_size),
        };
        binaries = binaries.file(&format!("usr/lib/bench/lib{i:02}.so"), content);
    }

    // Text: a few large logs.
    let mut text = LayerBuilder::new();
    let log_size = (part(text_part) / 8).max(4096);
    for i in 0..8u64 {
        text = text.file(&format!("var/log/bench/app-{i}.log"), GeneratedContent::text(2000 + i, log_size));
    }

    // Incompressible: already-compressed assets.
    let random = LayerBuilder::new()
        .file("srv/assets/bundle-a.bin", GeneratedContent::random(3000, part(random_part) / 2))
        .file("srv/assets/bundle-b.bin", GeneratedContent::random(3001, part(random_part) / 2));

    // Many small files (2–13 KiB): source trees and locales, one in six incompressible
    // (even); a tree of sources, compiled objects and compressed assets, a third each
    // (heavy).
    let mut small_files = LayerBuilder::new();
    let budget = part(small_part);
    let mut used = 0;
    let mut i = 0u64;
    while used < budget {
        let size = 2048 + (i * 7919 % 12) * 1024;
        let content = match (shape, i % 6) {
            (Shape::Even, 5) | (Shape::Heavy, 0 | 3) => GeneratedContent::random(4000 + i, size),
            (Shape::Heavy, 1 | 4) => GeneratedContent::code(4000 + i, size),
            _ => GeneratedContent::text(4000 + i, size),
        };
        small_files = small_files.file(&format!("usr/share/bench/{:03}/file-{i}.txt", i % 512), content);
        used += size + 512;
        i += 1;
    }

    // One small layer: configuration.
    let config = LayerBuilder::new()
        .file("etc/bench/app.conf", "listen = 8080\nworkers = 4\n")
        .file("etc/bench/motd", GeneratedContent::text(5000, 8 * 1024));

    vec![
        ("binaries", binaries),
        ("text", text),
        ("random", random),
        ("small-files", small_files),
        ("small-layer", config),
    ]
}

/// bench/small: about 3 MB, two layers.
fn small_layers() -> Vec<(&'static str, LayerBuilder)> {
    vec![
        ("random", LayerBuilder::new().file("usr/bin/tool", GeneratedContent::random(6000, 2 * MIB))),
        ("text", LayerBuilder::new().file("usr/share/doc/tool.txt", GeneratedContent::text(6001, 3 * MIB))),
    ]
}

fn write_image(
    dir: &Path,
    repository: &str,
    layers: Vec<(&'static str, LayerBuilder)>,
) -> Result<(Image, ImageRecord), BoxError> {
    let mut written: Vec<(&'static str, Layer)> = Vec::new();
    for (name, builder) in layers {
        let started = Instant::now();
        let layer = builder.compression_level(CompressionLevel::Default).write(dir, LayerCompression::Gzip)?;
        eprintln!(
            "{repository}: layer {name}: {} bytes gzip, {} uncompressed ({:.1} s)",
            layer.blob.size,
            layer.uncompressed_size,
            started.elapsed().as_secs_f64()
        );
        written.push((name, layer));
    }
    let records: Vec<LayerRecord> = written
        .iter()
        .map(|(name, l)| LayerRecord {
            name: name.to_string(),
            digest: Digest::from_bytes(*l.blob.digest.as_bytes()),
            diff_id: Digest::from_bytes(*l.diff_id.as_bytes()),
            size: l.blob.size,
            uncompressed: l.uncompressed_size,
            path: l.blob.path.clone(),
        })
        .collect();
    let image = ImageBuilder::new(Format::Oci).layers(written.into_iter().map(|(_, l)| l)).build(dir)?;
    let record = ImageRecord {
        reference: format!("{repository}:latest"),
        size: records.iter().map(|l| l.size).sum(),
        uncompressed: records.iter().map(|l| l.uncompressed).sum(),
        layers: records,
    };
    Ok((image, record))
}

fn build(dir: &Path, mib: u64, shape: Shape) -> Result<(), BoxError> {
    let mut layout = Layout::new(dir)?;
    let (big, big_record) = write_image(dir, "bench/big", big_layers(mib, shape))?;
    let (small, small_record) = write_image(dir, "bench/small", small_layers())?;
    for (image, tag) in [(&big, "big"), (&small, "small")] {
        eprintln!("wrote {tag} {}", layout.add(image, tag)?);
    }
    layout.finish()?;
    let images = Images { big: big_record, small: small_record };
    std::fs::write(dir.join("layers.json"), serde_json::to_vec_pretty(&images)?)?;
    println!("{}", serde_json::to_string(&images)?);
    Ok(())
}

/// Decompress one layer on this thread: the inflate limit, without hashing or the tar walk.
fn inflate(blob: &Path) -> Result<(), BoxError> {
    let started = Instant::now();
    let uncompressed = verify::decompressed_len(Compression::Gzip, File::open(blob)?)?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{}", serde_json::json!({"blob": blob, "uncompressed": uncompressed, "seconds": seconds}));
    Ok(())
}

/// The best in-process schedule: `threads` layers verified at once, largest first,
/// read from the blob files (page cache), no network. `largest_first: false` keeps
/// the manifest order, to show what the order is worth.
fn verify_all(dir: &Path, threads: usize, largest_first: bool) -> Result<(), BoxError> {
    let images: Images = serde_json::from_slice(&std::fs::read(dir.join("layers.json"))?)?;
    let mut queue = images.big.layers.clone();
    if largest_first {
        queue.sort_by_key(|l| std::cmp::Reverse(l.size));
    }
    let queue = Mutex::new(queue.into_iter());
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut q| q.next()).unwrap_or(None);
                    let Some(layer) = next else { break };
                    let spec = LayerSpec {
                        digest: layer.digest,
                        size: layer.size,
                        compression: Some(Compression::Gzip),
                        diff_id: Some(layer.diff_id),
                        mode: CheckMode::Full,
                        limits: LayerLimits::UNLIMITED,
                    };
                    let report = match File::open(&layer.path) {
                        Ok(file) => verify::verify_layer(BufReader::with_capacity(64 * 1024, file), &spec, None),
                        Err(e) => {
                            if let Ok(mut f) = failures.lock() {
                                f.push(format!("{}: {e}", layer.path.display()));
                            }
                            continue;
                        }
                    };
                    if let Some(error) = report.error
                        && let Ok(mut f) = failures.lock()
                    {
                        f.push(format!("{} {}: {error}", layer.name, layer.digest));
                    }
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let failures = failures.into_inner().unwrap_or_default();
    if !failures.is_empty() {
        return Err(failures.join("; ").into());
    }
    println!("{}", serde_json::json!({"threads": threads, "largest_first": largest_first, "seconds": seconds}));
    Ok(())
}
