//! Docker `config.json` / `.dockerconfigjson` (first input byte even) and the
//! legacy `.dockercfg` (odd), as a mounted file or an image pull Secret holds
//! them, read into the keyring that looks credentials up the way the kubelet
//! does. A payload that is refused is `auth_failed`, bounded, and names keys but
//! never quotes a value of the document (a password, an `auth`, a token, or any
//! value where one was expected).

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::reason::Reason;
use pullprobe::registry::docker_config::{PullSecretFormat, PullSecretKeyring, normalize_key};
use pullprobe_fuzz::check_error;

/// Values shorter than this may occur in a message by chance.
const MIN_VALUE_LEN: usize = 8;

/// What this target names the payload in errors.
const SOURCE: &str = "imagePullSecret prod/pull";

/// The fixed words of the keyring's messages, which a value may happen to match.
const FIXED_WORDS: &str = "imagePullSecret prod/pull: not a .dockerconfigjson .dockercfg (not valid JSON, JSON of the \
     wrong shape, JSON cut short, unreadable at line column) auths entry for `auth` is not base64 of user:password, \
     `auth` is not UTF-8, needs both a user name and a password";

fuzz_target!(|data: &[u8]| {
    let Some((&first, payload)) = data.split_first() else { return };
    let format = if first % 2 == 0 { PullSecretFormat::DockerConfigJson } else { PullSecretFormat::DockerCfg };
    let mut keyring = PullSecretKeyring::default();
    let added = keyring.add(payload, format, SOURCE);
    let json: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let mut keys = Vec::new();
    let mut values = Vec::new();
    if let Some(json) = &json {
        collect(json, &mut keys, &mut values);
    }
    for key in &keys {
        let _ = keyring.lookup(&normalize_key(key), "team/app");
    }
    let Err(e) = added else { return };
    check_error("pull secret", &e, &[Reason::AuthFailed]);
    for value in values.iter().filter(|v| v.len() >= MIN_VALUE_LEN) {
        let by_chance = keys.iter().any(|k| k.contains(value.as_str())) || FIXED_WORDS.contains(value.as_str());
        assert!(by_chance || !e.message.contains(value.as_str()), "the error quotes a value: {}", e.message);
    }
});

/// Every object key, and every string, number and boolean of the document.
fn collect(value: &serde_json::Value, keys: &mut Vec<String>, values: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                keys.push(key.clone());
                collect(value, keys, values);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, keys, values)),
        serde_json::Value::String(s) => values.push(s.clone()),
        serde_json::Value::Number(n) => values.push(n.to_string()),
        serde_json::Value::Bool(_) | serde_json::Value::Null => {}
    }
}
