//! Writes small generated images for the soak benchmark into an OCI image
//! layout: `bench_images LAYOUT_DIR COUNT` tags `app-<i>` for i in 0..COUNT,
//! each two gzip layers (a shared base and one of its own). `bench/soak`
//! pushes them with skopeo.

use std::path::Path;
use std::process::ExitCode;

use image_builder::{Format, GeneratedContent, ImageBuilder, LayerBuilder, LayerCompression, Layout};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(count)) = (args.get(1), args.get(2).and_then(|c| c.parse::<u64>().ok())) else {
        eprintln!("usage: bench_images LAYOUT_DIR COUNT");
        return ExitCode::from(2);
    };
    match write(Path::new(dir), count) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_images: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &Path, count: u64) -> std::io::Result<()> {
    let mut layout = Layout::new(dir)?;
    let base = LayerBuilder::new()
        .file("usr/lib/base.so", GeneratedContent::random(7, 256 * 1024))
        .write(dir, LayerCompression::Gzip)?;
    for i in 0..count {
        let own = LayerBuilder::new()
            .file("srv/app.log", GeneratedContent::text(100 + i, 512 * 1024))
            .write(dir, LayerCompression::Gzip)?;
        let image = ImageBuilder::new(Format::Oci).layer(base.clone()).layer(own).build(dir)?;
        layout.add(&image, &format!("app-{i}"))?;
    }
    layout.finish()?;
    println!("wrote {count} images");
    Ok(())
}
