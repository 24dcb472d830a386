//! Image configs as a registry sends them. A config that parses is written
//! again with the project's own serde types and must parse to the same diff_ids,
//! platform, creation time and labels; one that does not is `manifest_invalid`
//! with a bounded message.

#![no_main]

use image_builder::{ImageConfig, RootFs};
use libfuzzer_sys::fuzz_target;
use pullprobe::manifest::parse_image_config;
use pullprobe::reason::Reason;
use pullprobe_fuzz::check_error;

fuzz_target!(|body: &[u8]| {
    let config = match parse_image_config(body) {
        Ok(config) => config,
        Err(e) => return check_error("image config", &e, &[Reason::ManifestInvalid]),
    };
    let labels: serde_json::Map<String, serde_json::Value> =
        config.labels.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    let printed = ImageConfig {
        created: config.created.clone(),
        architecture: config.platform.as_ref().map(|p| p.architecture.clone()).unwrap_or_default(),
        os: config.platform.as_ref().map(|p| p.os.clone()).unwrap_or_default(),
        variant: config.platform.as_ref().and_then(|p| p.variant.clone()),
        config: serde_json::Map::from_iter([("Labels".to_string(), serde_json::Value::Object(labels))]),
        rootfs: RootFs::layers(
            config.diff_ids.iter().map(|d| d.to_string().parse().expect("a parsed digest prints as one")).collect(),
        ),
    };
    let printed = serde_json::to_vec(&printed).expect("a config serialises");
    let again = parse_image_config(&printed)
        .unwrap_or_else(|e| panic!("{config:?} printed as {}: {e}", String::from_utf8_lossy(&printed)));
    assert_eq!(again.diff_ids, config.diff_ids);
    assert_eq!(again.platform, config.platform);
    assert_eq!(again.created, config.created);
    assert_eq!(again.labels, config.labels);
});
