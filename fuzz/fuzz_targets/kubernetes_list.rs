//! Kubernetes API answers as discovery reads them: list pages of the six workload
//! kinds (the first input byte picks the kind), image pull Secrets and the
//! `Status` of a refusal. Every container image found either parses as a
//! reference that prints and parses back the same, or is refused in a bounded
//! message; pull secret names and payloads are read without a panic.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pullprobe::probe::discover::kubernetes::objects::{Kind, List, Secret, Status};
use pullprobe::reference::ImageReference;
use pullprobe::registry::docker_config::{PullSecretFormat, PullSecretKeyring};
use pullprobe_fuzz::check_message_within;

/// A reference error quotes the input and the bad part, each cut to 300 characters and escaped.
const MAX_REFERENCE_MESSAGE_CHARS: usize = 8192;

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let kind = Kind::ALL[usize::from(first) % Kind::ALL.len()];
    if let Ok(page) = serde_json::from_slice::<List>(body) {
        let _ = page.kind.as_deref() == Some(kind.list_kind());
        let _ = page.metadata.and_then(|m| m.continue_token);
        for object in page.items.iter().flatten() {
            let _ = kind.path(object.metadata.as_ref().and_then(|m| m.namespace.as_deref()));
            let Some(spec) = kind.pod_spec(object) else { continue };
            let _ = spec.pull_secrets();
            for (_, image) in spec.images() {
                match ImageReference::parse(image) {
                    Ok(reference) => {
                        let printed = reference.to_string();
                        assert_eq!(ImageReference::parse(&printed).as_ref(), Ok(&reference), "{image:?}");
                    }
                    Err(e) => check_message_within("image", &e.to_string(), MAX_REFERENCE_MESSAGE_CHARS),
                }
            }
        }
    }
    if let Ok(secret) = serde_json::from_slice::<Secret>(body) {
        let data = secret.data.unwrap_or_default();
        for (encoded, format) in [
            (data.docker_config_json, PullSecretFormat::DockerConfigJson),
            (data.docker_cfg, PullSecretFormat::DockerCfg),
        ] {
            let Some(payload) = encoded.and_then(|e| base64::engine::general_purpose::STANDARD.decode(e.trim()).ok())
            else {
                continue;
            };
            let _ = PullSecretKeyring::default().add(&payload, format, "imagePullSecret prod/pull");
        }
    }
    let _ = serde_json::from_slice::<Status>(body);
});
