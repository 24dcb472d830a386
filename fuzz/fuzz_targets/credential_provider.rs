//! What a credential source outside pullprobe answers (the first input byte picks
//! which): a kubelet credential provider plugin's `CredentialProviderResponse`
//! (stdout, then after a NUL byte its stderr), ECR's `GetAuthorizationToken`
//! answer, the GCP metadata server's token answer, and ACR's `/oauth2/exchange`
//! answer. A refusal is `auth_failed`, names the plugin or step, is bounded, and
//! never quotes a value where a credential may be (what the plugin printed but
//! the fields a refusal names, any value of a cloud's answer). Accepted credentials are the
//! token the answer carries, and neither prints nor describes itself with it.

#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pullprobe::reason::{ProbeError, Reason};
use pullprobe::registry::cloud::provider_plugin::{CacheKeyType, read_response};
use pullprobe::registry::cloud::{acr, ecr, gcp};
use pullprobe::registry::credentials::{Credentials, Secret};
use pullprobe::registry::docker_config::normalize_key;
use pullprobe_fuzz::check_error;
use serde_json::Value;

/// Values shorter than this may occur in a message by chance.
const MIN_VALUE_LEN: usize = 8;
const PLUGIN: &str = "credential provider /usr/local/bin/ecr-credential-provider";
const IMAGE: &str = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app:1";
const ECR_STEP: &str = "ECR GetAuthorizationToken in eu-west-1 for role arn:aws:iam::123456789012:role/puller";
const GCP_STEP: &str = "GCP metadata server metadata.google.internal: access token of the default service account";
const ACR_STEP: &str = "ACR token exchange at myreg.azurecr.io for Entra client id 0000 in tenant 1111";
/// The fixed words of the messages, which a value may happen to match.
const FIXED_WORDS: &str = "printed no CredentialProviderResponse JSON for answered apiVersion kind expected \
     credentialprovider.kubelet.k8s.io/v1 cacheKeyType Image, Registry or Global cacheDuration is not a duration \
     not a .dockercfg (not valid JSON, JSON of the wrong shape, JSON cut short, unreadable at line column) \
     entry for `auth` is not base64 of user:password, `auth` is not UTF-8, needs both a user name and a password \
     the answer is not the expected JSON invalid type: string integer floating point boolean map sequence unit \
     struct TokenAnswer AuthorizationData ExchangeAnswer missing field `authorizationToken` `access_token` \
     `refresh_token` duplicate field has no authorizationData the authorization token is not base64 text \
     not user:password an empty access_token service account default; stderr: [redacted] an ECR authorization \
     token for a GCP access token of from the metadata server an ACR refresh token for";

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    match first % 4 {
        0 => plugin(body),
        1 => {
            let answer = ecr::read_token_answer(body, ECR_STEP, "role/puller");
            let issued = answer.map(|(credentials, _)| credentials);
            check(body, ECR_STEP, issued.as_ref(), &[], |credentials, json| {
                let data = &field(json, "authorizationData", 0)[0];
                let token = field(data, "authorizationToken", 0).as_str().expect("a token");
                let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).expect("base64");
                let Secret::Password(password) = credentials.secret() else { panic!("ECR gives a password") };
                assert_eq!(format!("{}:{password}", credentials.username()).into_bytes(), decoded);
            });
        }
        2 => {
            let answer = gcp::read_token_answer(body, GCP_STEP, "default", "metadata.google.internal");
            if let (Ok((_, lifetime)), Ok(json)) = (&answer, serde_json::from_slice::<Value>(body)) {
                assert_eq!(lifetime.map(|d| d.as_secs()), field(&json, "expires_in", 1).as_u64());
            }
            let issued = answer.map(|(credentials, _)| credentials);
            check(body, GCP_STEP, issued.as_ref(), &["service account default: "], |credentials, json| {
                let token = field(json, "access_token", 0).as_str().expect("a token");
                assert!(!token.is_empty());
                assert_eq!(credentials.username(), "oauth2accesstoken");
                assert_eq!(credentials.secret(), &Secret::Password(token.to_string()));
            });
        }
        _ => {
            let answer = acr::read_exchange_answer(body, ACR_STEP, "Entra client id 0000 in tenant 1111");
            let issued = answer.map(|(credentials, _)| credentials);
            check(body, ACR_STEP, issued.as_ref(), &[], |credentials, json| {
                let token = field(json, "refresh_token", 0).as_str().expect("a token");
                assert_eq!(credentials.secret(), &Secret::IdentityToken(token.to_string()));
            });
        }
    }
});

/// A cloud's answer: refused in a bounded message for `step` that quotes none of its
/// values, or credentials that `accepted` checks against the answer as JSON.
fn check(
    body: &[u8],
    step: &str,
    result: Result<&Credentials, &ProbeError>,
    prefixes: &[&str],
    accepted: impl FnOnce(&Credentials, &Value),
) {
    match result {
        Ok(credentials) => {
            // serde_json takes bytes that are not UTF-8 in a field it skips; a Value does not.
            let Ok(json) = serde_json::from_slice::<Value>(body) else { return };
            accepted(credentials, &json);
            let token = match credentials.secret() {
                Secret::Password(p) | Secret::IdentityToken(p) => p,
            };
            if token.chars().count() >= MIN_VALUE_LEN && !FIXED_WORDS.contains(token.as_str()) {
                let shown = format!("{credentials:?} {}", credentials.describe());
                assert!(!shown.contains(token.as_str()), "credentials print their secret: {shown}");
            }
        }
        Err(e) => {
            check_error(step, e, &[Reason::AuthFailed]);
            let named = prefixes.iter().any(|p| e.message.starts_with(&format!("{p}{step}: ")));
            assert!(named || e.message.starts_with(&format!("{step}: ")), "the step is not named: {}", e.message);
            let Ok(json) = serde_json::from_slice::<Value>(body) else { return };
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            collect(&json, &mut keys, &mut values);
            no_value_quoted(&e.message, &values, &keys, step);
        }
    }
}

/// A plugin's stdout and stderr: refused as `auth_failed` naming the plugin, quoting
/// no value of stdout but the fields it names; accepted with its cache key type.
fn plugin(body: &[u8]) {
    let (stdout, stderr) = match body.iter().position(|&b| b == 0) {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => (body, &[][..]),
    };
    let json: Option<Value> = serde_json::from_slice(stdout).ok();
    match read_response(stdout, stderr, PLUGIN, IMAGE) {
        Ok(answer) => {
            // serde_json takes bytes that are not UTF-8 in a field it skips; a Value does not.
            let Some(json) = json else { return };
            let kind = json["cacheKeyType"].as_str();
            let expected = match answer.cache_key_type {
                CacheKeyType::Image => "Image",
                CacheKeyType::Registry => "Registry",
                CacheKeyType::Global => "Global",
            };
            assert_eq!(kind, Some(expected));
            if json["cacheDuration"].as_str().is_none_or(str::is_empty) {
                assert_eq!(answer.cache_duration.as_secs(), 300, "the default");
            }
            for key in json["auth"].as_object().into_iter().flat_map(|m| m.keys()) {
                let _ = answer.keyring.lookup(&normalize_key(key), "team/app");
            }
            let _ = answer.keyring.lookup("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "team/app");
        }
        Err(e) => {
            check_error("plugin", &e, &[Reason::AuthFailed]);
            assert!(e.message.starts_with(&format!("{PLUGIN}: ")), "the plugin is not named: {}", e.message);
            let Some(json) = json else { return };
            // Stdout is never shown: no value of it is quoted but the four fields a
            // refusal names (`apiVersion`, `kind`, `cacheKeyType`, `cacheDuration`).
            let mut secret = json.clone();
            let mut shown = vec![String::from_utf8_lossy(stderr).into_owned()];
            let named = ["apiVersion", "kind", "cacheKeyType", "cacheDuration"];
            match &mut secret {
                Value::Object(fields) => {
                    for field in named {
                        if let Some(Value::String(s)) = fields.remove(field) {
                            shown.push(s);
                        }
                    }
                }
                // serde reads a struct from an array too, field by field.
                Value::Array(items) => {
                    let rest = items.split_off(named.len().min(items.len()));
                    shown.extend(items.iter().filter_map(|v| v.as_str().map(str::to_string)));
                    *items = rest;
                }
                _ => {}
            }
            let mut secrets = Vec::new();
            collect(&secret, &mut shown, &mut secrets);
            if let Value::String(s) = &secret {
                secrets.push(s.clone());
            }
            no_value_quoted(&e.message, &secrets, &shown, &format!("{PLUGIN} {IMAGE}"));
        }
    }
}

/// Panic if `message` quotes one of `values`, unless it may be there by chance: it is
/// within `shown` (what the message may quote), the fixed words or `context`.
fn no_value_quoted(message: &str, values: &[String], shown: &[String], context: &str) {
    for value in values.iter().filter(|v| v.chars().count() >= MIN_VALUE_LEN) {
        let by_chance = shown.iter().any(|k| k.contains(value.as_str()))
            || FIXED_WORDS.contains(value.as_str())
            || context.contains(value.as_str());
        assert!(by_chance || !message.contains(value.as_str()), "the error quotes {value:?}: {message}");
    }
}

/// A field of an answer as serde reads a struct: by name from an object, by
/// position from an array.
fn field<'a>(json: &'a Value, name: &str, index: usize) -> &'a Value {
    match json {
        Value::Array(items) => items.get(index).unwrap_or(&Value::Null),
        _ => &json[name],
    }
}

/// Every object key, and every string and number of a JSON document.
fn collect(value: &Value, keys: &mut Vec<String>, values: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                keys.push(key.clone());
                collect(value, keys, values);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, keys, values)),
        Value::String(s) => values.push(s.clone()),
        Value::Number(n) => values.push(n.to_string()),
        Value::Bool(_) | Value::Null => {}
    }
}
