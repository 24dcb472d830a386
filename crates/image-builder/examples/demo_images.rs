//! Writes the demo images into an OCI image layout, which `scripts/demo` pushes
//! to its registry with skopeo.
//!
//! Usage: `demo_images LAYOUT_DIR`. The layout holds `app` (gzip, zstd and
//! uncompressed layers in one image) and `base` (a two-platform index). Prints,
//! on its last line, the digest of the layer the demo later corrupts.

use std::path::Path;
use std::process::ExitCode;

use image_builder::{
    Entry, Format, GeneratedContent, ImageBuilder, IndexBuilder, LayerBuilder, LayerCompression, Layout, Platform,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir] = args.as_slice() else {
        eprintln!("usage: demo_images LAYOUT_DIR");
        return ExitCode::from(2);
    };
    match write(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo_images: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: &Path) -> std::io::Result<()> {
    let mut layout = Layout::new(dir)?;

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
    println!("app {}", layout.add(&app, "app")?);

    let mut index = IndexBuilder::new(Format::Oci);
    for (platform, seed) in [(Platform::linux_amd64(), 10), (Platform::linux_arm64_v8(), 11)] {
        let layer = LayerBuilder::new()
            .file("etc/arch", platform.to_string().as_str())
            .file("usr/lib/libdemo.so", GeneratedContent::random(seed, 1 << 20))
            .write(dir, LayerCompression::Gzip)?;
        index = index.image(ImageBuilder::new(Format::Oci).platform(platform).layer(layer).build(dir)?);
    }
    println!("base {}", layout.add(&index.build(), "base")?);
    layout.finish()?;
    println!("{victim}");
    Ok(())
}
