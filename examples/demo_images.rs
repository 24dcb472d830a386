//! Builds the demo images with pullprobe's own image builder and pushes them
//! through a registry's upload API. Used by `scripts/demo`.
//!
//! Usage: `demo_images REGISTRY_URL WORK_DIR`. Prints, on its last line, the
//! digest of the layer the demo later corrupts.

use std::path::PathBuf;
use std::process::ExitCode;

use pullprobe::image_builder::{
    Entry, Format, GeneratedContent, ImageBuilder, IndexBuilder, LayerBuilder, LayerCompression, Platform,
};
use pullprobe::registry::push::{UploadMethod, push_image};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(dir)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: demo_images REGISTRY_URL WORK_DIR");
        return ExitCode::from(2);
    };
    match run(url, &PathBuf::from(dir)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_images: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let base_url = url::Url::parse(url)?;
    let client = reqwest::Client::new();
    std::fs::create_dir_all(dir)?;

    // demo/app: gzip, zstd and uncompressed layers in one image.
    let base = LayerBuilder::new()
        .dir("etc")
        .file("etc/os-release", "ID=pullprobe-demo\n")
        .entry(Entry::file("bin/app", GeneratedContent::random(1, 4 << 20)).mode(0o755))
        .symlink("bin/sh", "app")
        .write(dir, LayerCompression::Gzip)?;
    let data = LayerBuilder::new()
        .file("srv/data.log", GeneratedContent::text(2, 8 << 20))
        .write(dir, LayerCompression::Zstd)?;
    let config = LayerBuilder::new().file("etc/app.conf", "listen = 8080\n").write(dir, LayerCompression::None)?;
    let victim = base.blob.digest;
    let app = ImageBuilder::new(Format::Oci).layer(base).layer(data).layer(config).build(dir)?;
    let digest = push_image(&client, &base_url, "demo/app", "latest", &app, UploadMethod::Monolithic).await?;
    println!("pushed demo/app:latest {digest}");

    // demo/base: a two-platform index.
    let mut index = IndexBuilder::new(Format::Oci);
    for (platform, seed) in [(Platform::linux_amd64(), 10), (Platform::linux_arm64_v8(), 11)] {
        let layer = LayerBuilder::new()
            .file("etc/arch", platform.to_string().as_str())
            .file("usr/lib/libdemo.so", GeneratedContent::random(seed, 1 << 20))
            .write(dir, LayerCompression::Gzip)?;
        index = index.image(ImageBuilder::new(Format::Oci).platform(platform).layer(layer).build(dir)?);
    }
    let digest = push_image(
        &client,
        &base_url,
        "demo/base",
        "latest",
        &index.build(),
        UploadMethod::Chunked { chunk_size: 1 << 20 },
    )
    .await?;
    println!("pushed demo/base:latest {digest}");
    println!("{victim}");
    Ok(())
}
