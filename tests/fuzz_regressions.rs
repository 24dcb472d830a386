//! Inputs the fuzz targets of `fuzz/` found that once broke a parser, replayed
//! with the property that target checks. Each fixture under
//! `tests/fixtures/fuzz/<target>/` is the exact input of that target (so
//! `fuzz/target/<triple>/release/<target> FILE` replays it too); the test reads
//! it the way the target does and asserts the reason and the message. The
//! content target builds layers from its input: its fixtures are those layers
//! as tar files, next to the input itself.

use std::path::Path;
use std::sync::Arc;

use pullprobe::config::{Config, PathExpectation, PathType};
use pullprobe::digest::Digest;
use pullprobe::frontend::toml_file::TomlFile;
use pullprobe::frontend::{containerd, registries_conf};
use pullprobe::manifest::parse_manifest;
use pullprobe::media_types;
use pullprobe::output::alertmanager::parse_alerts;
use pullprobe::output::pushgateway::parse_read_back;
use pullprobe::reason::Reason;
use pullprobe::reference::ImageReference;
use pullprobe::registry::client::cache_status;
use pullprobe::registry::cloud::provider_plugin::read_response;
use pullprobe::registry::cloud::{acr, ecr, gcp};
use pullprobe::registry::docker_config::{PullSecretFormat, PullSecretKeyring};
use pullprobe::registry::tags::next_page;
use pullprobe::signature::{bundle, cosign};
use pullprobe::verify::content::{ContentOutcome, ContentPlan, MAX_WALKS};
use pullprobe::verify::{CheckMode, Compression, LayerLimits, LayerSpec, verify_layer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LINK};
use url::Url;

/// Longest error message a parser may return, whatever the input (as in `fuzz/src/lib.rs`).
const MAX_MESSAGE_CHARS: usize = 4096;

fn fixture(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz").join(target).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn assert_bounded(message: &str) {
    let chars = message.chars().count();
    let start: String = message.chars().take(200).collect();
    assert!(chars <= MAX_MESSAGE_CHARS, "a message of {chars} characters: {start}…");
}

/// A manifest body that is one long JSON string: serde_json's message quoted it whole.
#[test]
fn a_manifest_error_does_not_quote_the_whole_document() {
    let input = fixture("manifest", "long-string-document");
    let (_, body) = input.split_first().expect("a content-type byte and a body");
    let err = parse_manifest(body, Some(media_types::OCI_MANIFEST)).expect_err("a string is not a manifest");
    assert_eq!(err.reason, Reason::ManifestInvalid);
    assert_bounded(&err.message);
    assert!(err.message.contains("line 1 column"), "{}", err.message);
}

/// `X-Cache: %`: a cache status with no word in it came out as `""` instead of none.
#[test]
fn a_cache_header_without_a_word_is_no_cache_status() {
    let input = fixture("response_headers", "x-cache-percent");
    let (_, value) = input.split_first().expect("a header-name byte and a value");
    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static("x-cache"), HeaderValue::from_bytes(value).expect("a header value"));
    assert_eq!(cache_status(&headers), None);
    headers.insert(HeaderName::from_static("x-cache-status"), HeaderValue::from_static(", hit"));
    assert_eq!(cache_status(&headers), None, "no word before the comma");
    headers.insert(HeaderName::from_static("cf-cache-status"), HeaderValue::from_static("HIT"));
    assert_eq!(cache_status(&headers).as_deref(), Some("HIT"), "the next header that has one");
}

/// A `.dockercfg` that is a number: serde_json's message quoted the value. Values
/// in a pull secret are credentials; an error names keys, never values.
#[test]
fn a_pull_secret_error_never_quotes_a_value() {
    let input = fixture("docker_config", "dockercfg-number");
    let (_, payload) = input.split_first().expect("a format byte and a payload");
    let err = PullSecretKeyring::default()
        .add(payload, PullSecretFormat::DockerCfg, "imagePullSecret prod/pull")
        .expect_err("a number is not a .dockercfg");
    assert_eq!(err.reason, Reason::AuthFailed);
    assert!(!err.message.contains("e-309"), "{}", err.message);
    // The same mistake with a real credential: an `auth` string where the entry belongs.
    let payload = br#"{"auths":{"registry.example.org":"YWxpY2U6aHVudGVyMg=="}}"#;
    let err = PullSecretKeyring::default()
        .add(payload, PullSecretFormat::DockerConfigJson, "imagePullSecret prod/pull")
        .expect_err("a string is not an auths entry");
    assert!(!err.message.contains("YWxpY2U6aHVudGVyMg"), "{}", err.message);
    assert!(err.message.contains("line 1 column"), "{}", err.message);
}

/// A Pushgateway answer that is one long JSON string: the message quoted it whole.
#[test]
fn a_read_back_error_does_not_quote_the_whole_answer() {
    let body = fixture("pushgateway_read_back", "long-string-document");
    let message = parse_read_back(&body, "pullprobe", "eqiad").expect_err("a string is not a read-back");
    assert_bounded(&message);
}

/// The same answer from an Alertmanager replica (`GET /api/v2/alerts`).
#[test]
fn an_alerts_error_does_not_quote_the_whole_answer() {
    let body = fixture("alertmanager_read_back", "long-string-document");
    let message = parse_alerts(&body).expect_err("a string is not a list of alerts");
    assert_bounded(&message);
}

/// A `Link` whose next page is on a host of 4 KB: the refusal named the host whole.
#[test]
fn a_next_page_on_another_host_is_named_briefly() {
    let input = fixture("link", "long-host-in-next");
    let (_, value) = input.split_first().expect("a request byte and header lines");
    let request = Url::parse("https://[::1]:8443/prefix/v2/a/b/c/tags/list?n=2&last=x").expect("a URL");
    let mut headers = HeaderMap::new();
    for line in value.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(LINK, value);
        }
    }
    let err = next_page(&request, &headers, "GET tags of team/app").expect_err("another host is refused");
    assert_eq!(err.reason, Reason::HttpStatus);
    assert!(err.message.contains("another host"), "{}", err.message);
    assert_bounded(&err.message);
}

/// A field name of tabs: the message escaped each as `\\t` after cutting it to 1,000
/// characters, so the message came out several times longer than that.
#[test]
fn a_config_error_is_one_line_of_at_most_1000_characters() {
    let text = String::from_utf8(fixture("probes_yaml", "escaped-tabs-in-a-field-name")).expect("UTF-8");
    let err = Config::from_str_named(&text, "probes.yaml").expect_err("an unknown field");
    assert!(err.message.starts_with("unknown field `"), "{}", err.message);
    assert!(err.message.chars().count() <= 1_001, "{} characters: {}", err.message.chars().count(), err.message);
    assert!(!err.message.contains('\t') && !err.message.contains('\n'), "{}", err.message);
}

fn walk(plan: &Arc<ContentPlan>, index: usize, tar: &[u8]) {
    let report = plan.walk_tar(index, tar);
    assert!(report.is_ok(), "{:?}", report.error);
}

/// The verdict after walking the layers in `order` first, then as the plan asks.
fn judge(tars: &[Vec<u8>], assertions: &[PathExpectation], order: &[usize]) -> Vec<pullprobe::reason::ProbeError> {
    let plan = ContentPlan::new(assertions, tars.iter().map(|t| Digest::of(t)).collect());
    for index in order {
        walk(&plan, *index, &tars[*index]);
    }
    for _ in 1..=MAX_WALKS {
        match plan.evaluate() {
            ContentOutcome::Decided(failures) => return failures,
            ContentOutcome::WalkAgain(again) => again.into_iter().for_each(|index| walk(&plan, index, &tars[index])),
        }
    }
    panic!("undecided after {MAX_WALKS} walks");
}

/// `/a` is a directory hard-linked from below in layer 1 and a file in layer 2; `/a/a`
/// must be a file with a sha256. The message describing `/a` named its sha256 when
/// layer 1 was walked first (the link made `/a` a path to hash) and not otherwise.
#[test]
fn a_content_verdict_does_not_depend_on_the_walk_order() {
    let dir = "hash-of-a-walked-file";
    let tars = [fixture("content", &format!("{dir}/layer-1.tar")), fixture("content", &format!("{dir}/layer-2.tar"))];
    assert!(!fixture("content", &format!("{dir}/input")).is_empty(), "the fuzz input is kept");
    let assertion = PathExpectation {
        kind: Some(PathType::File),
        min_size: Some(65_535),
        sha256: Some(Digest::of(b"")),
        ..PathExpectation::exists("/a/a")
    };
    let assertions = [assertion];
    let bottom_first = judge(&tars, &assertions, &[0, 1]);
    let top_first = judge(&tars, &assertions, &[1, 0]);
    assert_eq!(bottom_first, top_first, "the walk order changed the verdict");
    assert_eq!(bottom_first.len(), 1);
    assert_eq!(bottom_first[0].reason, Reason::ContentMissing);
    assert!(bottom_first[0].message.contains("/a is a regular file of 10 bytes"), "{}", bottom_first[0].message);
}

/// A symlink loop (`a -> .//` and friends) that the walks expand without end while
/// the lookup stops at 40 links. Walked top layer first, the walks' own tracking of
/// where links lead filled the 1,024 tracked paths before the verdict asked for the
/// few it needed, and the pull failed `too_large`; bottom first, it decided
/// (`content_mismatch` twice). Whether the cap is reached is now judged on the paths
/// the verdict looks at, the same in every order.
#[test]
fn the_path_cap_does_not_depend_on_the_walk_order() {
    let dir = "walk-order-and-the-path-cap";
    let tars: Vec<Vec<u8>> = (1..=4).map(|i| fixture("content", &format!("{dir}/layer-{i}.tar"))).collect();
    assert!(!fixture("content", &format!("{dir}/input")).is_empty(), "the fuzz input is kept");
    let sha256: Digest =
        "sha256:bd50e12c55dda3ee443c1cb6d71c7bcf6351c4ec96f7bc8d6adec015d1192eea".parse().expect("a digest");
    let assertions = [
        PathExpectation {
            kind: Some(PathType::Dir),
            min_size: Some(65_384),
            mode: Some(0o7777),
            sha256: Some(sha256),
            ..PathExpectation::exists("/a/sh/a")
        },
        PathExpectation {
            absent: true,
            kind: Some(PathType::Dir),
            sha256: Some(Digest::of(b"")),
            ..PathExpectation::exists("/a/a/a/a/")
        },
    ];
    let bottom_first = judge(&tars, &assertions, &[0, 1, 2, 3]);
    let reasons: Vec<Reason> = bottom_first.iter().map(|f| f.reason).collect();
    assert_eq!(reasons, [Reason::ContentMismatch, Reason::ContentMismatch], "{bottom_first:?}");
    assert!(bottom_first[1].message.contains("must be absent, found a symlink"), "{}", bottom_first[1].message);
    for order in [[3, 0, 1, 2], [3, 2, 1, 0], [1, 2, 3, 0], [2, 3, 0, 1]] {
        assert_eq!(judge(&tars, &assertions, &order), bottom_first, "the walk order {order:?} changed the verdict");
    }
}

/// A hosts.toml host written with credentials (`https://user:password@mirror`): the
/// refusal quoted the host as written, password and all.
#[test]
fn a_hosts_toml_error_does_not_quote_a_password() {
    let input = fixture("hosts_toml", "host-with-credentials");
    let (_, text) = input.split_first().expect("an image byte and a file");
    let text = String::from_utf8(text.to_vec()).expect("UTF-8");
    let hub = Url::parse("https://registry-1.docker.io").unwrap();
    let image = ImageReference::parse("docker.io/library/alpine:3").unwrap();
    // The refusal of a hosts.toml for docker.io with this text.
    let refused = |text: String, why: &str| {
        let file = TomlFile::from_text("hosts.toml", "/etc/containerd/certs.d/docker.io".into(), text);
        containerd::parse(&file, &hub, &image).expect_err(why)
    };
    let err = refused(text, "a host URL has no credentials");
    assert_eq!(err.to_string().split(": ").next(), Some("hosts.toml:1:7"));
    assert!(err.message.contains("no query, fragment or credentials"), "{err}");
    assert!(err.message.contains("mirror.example.com"), "{err}");
    assert!(!err.message.contains("hunter2-secret"), "{err}");

    // Without a scheme, containerd reads the host as https://…: the same credentials.
    let text = "[host.\"puller:hunter2-secret@mirror.example.com\"]\n".to_string();
    let err = refused(text, "a host URL has no credentials");
    assert!(err.message.contains("mirror.example.com"), "{err}");
    assert!(!err.message.contains("hunter2-secret"), "{err}");

    // Nor does a message about a key of that host's table, which names the table: the
    // fuzz input, then the same plainly.
    let input = fixture("hosts_toml", "unknown-key-in-a-host-with-credentials");
    let text = String::from_utf8(input[1..].to_vec()).expect("UTF-8");
    let err = refused(text, "an unknown key");
    assert!(err.message.starts_with("unknown key `capdial_timeout` in [host.\""), "{err}");
    assert!(!err.message.contains("user:password@"), "{err}");
    let text = "[host.\"puller:hunter2-secret@mirror.example.com\"]\n  capabilitys = [\"pull\"]\n".to_string();
    let err = refused(text, "an unknown key");
    assert!(err.message.contains("unknown key `capabilitys` in [host.\"mirror.example.com\"]"), "{err}");
    assert!(!err.message.contains("hunter2-secret"), "{err}");
}

/// A metadata server that answers a JSON string (here base64 of `AWS:password`) where
/// the token object belongs: serde_json's message quoted the string, and would quote a
/// token the same way. The other cloud answers and a plugin's stdout were read alike.
#[test]
fn a_token_answer_error_never_quotes_a_value() {
    let input = fixture("credential_provider", "answer-is-a-token-string");
    let (_, body) = input.split_first().expect("a selector byte and an answer");
    let token = "QVdTOnBhc3N3b3Jk";
    assert_eq!(body, format!("\"{token}\"").as_bytes());
    let step = "GCP metadata server metadata.google.internal: access token of the default service account";
    let errors = [
        gcp::read_token_answer(body, step, "default", "metadata.google.internal").map(|_| ()).unwrap_err(),
        ecr::read_token_answer(body, "ECR GetAuthorizationToken", "role/puller").map(|_| ()).unwrap_err(),
        acr::read_exchange_answer(body, "ACR token exchange", "client 0").map(|_| ()).unwrap_err(),
        read_response(body, b"", "credential provider /bin/plugin", "registry.example.org/app:1")
            .map(|_| ())
            .unwrap_err(),
    ];
    for err in errors {
        assert_eq!(err.reason, Reason::AuthFailed);
        assert!(err.message.contains("line 1 column"), "{}", err.message);
        assert!(!err.message.contains(token), "{}", err.message);
        assert_bounded(&err.message);
    }
}

/// Two client certificates, the first at a path that holds a URL with credentials:
/// the note saying which one pullprobe offers quoted the path whole, credentials
/// and all, and would quote a path of any length.
#[test]
fn a_hosts_toml_note_quotes_a_path_briefly_and_without_credentials() {
    let input = fixture("hosts_toml", "client-path-with-a-url");
    let text = String::from_utf8(input[1..].to_vec()).expect("UTF-8");
    let file = TomlFile::from_text("hosts.toml", "/etc/containerd/certs.d/docker.io".into(), text);
    let hub = Url::parse("https://registry-1.docker.io").unwrap();
    let image = ImageReference::parse("docker.io/library/alpine:3").unwrap();
    let hosts = containerd::parse(&file, &hub, &image).expect("a valid hosts.toml");
    let notes: Vec<&String> = hosts.iter().flat_map(|h| &h.notes).collect();
    assert!(notes.iter().any(|n| n.contains("client certificates configured")), "{notes:?}");
    for note in notes {
        assert!(!note.contains("user:password@"), "{note}");
        assert_bounded(note);
    }
}

/// A simple signing payload whose `docker-manifest-digest` holds escaped newlines
/// (`sha256:aaa…\nyISg\n2aaa`): the refusal quoted the decoded value as it was, so
/// one log line became three. A bundle's subject and a referrer's subject quote alike.
#[test]
fn a_signature_refusal_quotes_a_digest_on_one_line() {
    let input = fixture("signature", "newlines-in-the-signed-digest");
    let (&first, rest) = input.split_first().expect("a selector byte and a payload");
    assert_eq!(first % 2, 0, "a cosign payload");
    let nul = rest.iter().position(|b| *b == 0).expect("a payload, then its signature");
    let (payload, signature) = (&rest[..nul], String::from_utf8_lossy(&rest[nul + 1..]).into_owned());
    let image: Digest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
    let err = cosign::check(payload, Some(&signature), &image, &[]).expect_err("another image's digest");
    assert!(err.0.contains("copied from another image"), "{}", err.0);
    assert!(err.0.contains(r"aaaanyByYWhgn\nyISg\n2aaa"), "the digest quoted with its escapes: {}", err.0);
    assert!(!err.0.contains('\n'), "one line: {}", err.0);

    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","payload":"PAYLOAD","signatures":[]}}"#;
    let statement = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"x","digest":{"sha256":"ab\ncd"}}],"predicateType":"p","predicate":{}}"#;
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(statement);
    let bundle = String::from_utf8_lossy(bundle).replace("PAYLOAD", &encoded);
    let err = bundle::check(bundle.as_bytes(), &image, &[]).expect_err("another subject");
    assert!(err.0.contains("not this image"), "{}", err.0);
    assert!(!err.0.contains('\n'), "one line: {}", err.0);
}

/// A registries_conf fixture's text (its first byte picks the image).
fn registries_conf_text(name: &str) -> String {
    String::from_utf8(fixture("registries_conf", name)[1..].to_vec()).expect("UTF-8")
}

fn parse_registries_conf(text: &str) -> Result<Vec<registries_conf::RegistryEntry>, pullprobe::config::ConfigError> {
    registries_conf::parse(&TomlFile::from_text("registries.conf", "".into(), text.into()))
}

/// A version-1 registries.conf blocking `*.registry.untery*unsafe.com`: the names of
/// `[registries.*]` lists became entries unchecked, so a wildcard with a second `*`
/// (and an empty name, or a URL) was taken where a `[[registry]]` prefix is refused.
#[test]
fn a_version_1_name_is_checked_like_a_prefix() {
    let text = registries_conf_text("v1-block-of-a-wildcard-with-two-stars");
    let err = parse_registries_conf(&text).expect_err("a wildcard is *.example.com only");
    assert!(err.message.contains("a wildcard is `*.example.com` only"), "{err}");
    assert!(err.message.contains("*.registry.untery*unsafe.com"), "{err}");
    assert_eq!(err.to_string().split(": ").next(), Some("registries.conf:8:15"), "{err}");

    for (names, why) in [("['']", "an empty name"), ("['https://mirror.example.com']", "a URL, not a name")] {
        let err = parse_registries_conf(&format!("[registries.insecure]\nregistries = {names}\n")).expect_err(why);
        assert!(err.message.contains("expected host[:port][/path]"), "{why}: {err}");
    }
    // A plain wildcard still blocks every subdomain; a name is still a registry.
    let entries =
        parse_registries_conf("[registries.block]\nregistries = ['*.example.com', 'quay.io']\n").expect("valid");
    assert_eq!(
        entries.iter().map(|e| (e.prefix.as_str(), e.location.as_str(), e.blocked)).collect::<Vec<_>>(),
        [("*.example.com", "", true), ("quay.io", "quay.io", true)]
    );
}

/// A gzip member whose deflate data refers back before its start: ISA-L refused it,
/// and left its count of input bytes below zero, which the decoder subtracted from
/// what it had given and panicked on. Now that is a `decompress_error` like any fault.
#[test]
fn a_gzip_fault_that_confuses_the_inflater_is_decompress_error() {
    let input = fixture("layer", "gzip-fault-with-input-count-below-zero");
    let blob = &input[8..];
    assert_eq!(input[0], 1, "a gzip layer");
    let mut inflated = Vec::new();
    let err = pullprobe::verify::decoder(Compression::Gzip, blob)
        .and_then(|mut d| std::io::Read::read_to_end(&mut d, &mut inflated))
        .expect_err("not a gzip stream");
    assert!(err.to_string().contains("back-reference before the start"), "{err}");
    let spec = LayerSpec {
        digest: Digest::of(blob),
        size: blob.len() as u64,
        compression: Some(Compression::Gzip),
        diff_id: None,
        mode: CheckMode::Full,
        limits: LayerLimits::UNLIMITED,
    };
    let report = verify_layer(blob, &spec, None);
    let error = report.error.expect("a failed layer");
    assert_eq!(error.reason, Reason::DecompressError, "{}", error.message);
}

/// A `proxy` whose user info has a carriage return in it (`http://proxy:80!!us\r:password@…`):
/// URL parsers drop tabs and newlines, so that is user info, but the note that the
/// proxy is not applied stopped looking for it at the `\r` and quoted the password.
#[test]
fn a_proxy_note_hides_credentials_split_by_a_newline() {
    let text = registries_conf_text("proxy-with-credentials-around-a-carriage-return");
    let entries = parse_registries_conf(&text).expect("a valid registries.conf");
    let notes: Vec<&String> = entries.iter().flat_map(|e| &e.notes).collect();
    assert!(notes.iter().any(|n| n.contains("is not applied")), "{notes:?}");
    assert!(notes.iter().all(|n| !n.contains(":password@") && !n.contains("pWssword")), "{notes:?}");

    for proxy in ["http://puller\t:hunter2-secret@proxy:3128", "http://pul\nler:hunter2-secret@proxy:3128"] {
        let text = format!("[[registry]]\nlocation = \"quay.io\"\nproxy = {proxy:?}\n");
        let entries = parse_registries_conf(&text).expect("a valid registries.conf");
        assert!(entries[0].notes.iter().all(|n| !n.contains("hunter2")), "{:?}", entries[0].notes);
    }
}
