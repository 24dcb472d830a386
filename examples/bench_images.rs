//! Pushes small generated images for the soak benchmark: `bench_images
//! REGISTRY_URL WORK_DIR COUNT` pushes `soak/app-<i>:latest` for i in 0..COUNT,
//! each two gzip layers (a shared base and one of its own).

use std::path::PathBuf;
use std::process::ExitCode;

use pullprobe::image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression};
use pullprobe::registry::push::{UploadMethod, push_image};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(dir), Some(count)) =
        (args.get(1), args.get(2), args.get(3).and_then(|c| c.parse::<u64>().ok()))
    else {
        eprintln!("usage: bench_images REGISTRY_URL WORK_DIR COUNT");
        return ExitCode::from(2);
    };
    match run(url, &PathBuf::from(dir), count).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_images: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(url: &str, dir: &std::path::Path, count: u64) -> Result<(), Box<dyn std::error::Error>> {
    let base_url = url::Url::parse(url)?;
    let client = reqwest::Client::new();
    std::fs::create_dir_all(dir)?;
    let base = LayerBuilder::new()
        .file("usr/lib/base.so", GeneratedContent::random(7, 256 * 1024))
        .write(dir, LayerCompression::Gzip)?;
    for i in 0..count {
        let own = LayerBuilder::new()
            .file("srv/app.log", GeneratedContent::text(100 + i, 512 * 1024))
            .write(dir, LayerCompression::Gzip)?;
        let image = ImageBuilder::new(Format::Oci).layer(base.clone()).layer(own).build(dir)?;
        push_image(&client, &base_url, &format!("soak/app-{i}"), "latest", &image, UploadMethod::Monolithic).await?;
    }
    println!("pushed {count} images");
    Ok(())
}
