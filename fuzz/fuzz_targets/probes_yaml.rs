//! probes.yaml as `validate` reads it, and the durations and sizes written in it.
//! A config that is refused says where (a line and column inside the text) and
//! why, in one bounded message; one that is accepted has positive intervals and
//! timeouts that print as durations that parse back the same, and platform
//! selections that do too.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pullprobe::config::{Config, format_duration, parse_duration, parse_size};
use pullprobe::platform::PlatformSelection;
use pullprobe_fuzz::{check_message, text};

/// A config error keeps its message to this many characters, plus an ellipsis.
const MAX_CONFIG_MESSAGE_CHARS: usize = 1_000;

fuzz_target!(|data: &[u8]| {
    let Some(input) = text(data) else { return };
    units(input);
    let config = match Config::from_str_named(input, "probes.yaml") {
        Ok(config) => config,
        Err(e) => {
            assert_eq!(e.file, "probes.yaml");
            assert!(e.message.chars().count() <= MAX_CONFIG_MESSAGE_CHARS + 1, "{e}");
            assert!(!e.message.contains('\n'), "a multi-line message: {e}");
            if let Some(position) = e.position {
                // YAML line breaks: `\r\n`, `\r` and `\n`.
                let lines = input.replace("\r\n", "\n").split(['\r', '\n']).count() as u64;
                assert!(position.line >= 1 && position.line <= lines + 1, "{e}: the text has {lines} lines");
                assert!(position.column >= 1, "{e}");
            }
            return;
        }
    };
    for probe in &config.probes {
        for duration in [config.interval_for(probe), config.timeout_for(probe)] {
            assert!(!duration.is_zero(), "probe {}: a zero interval or timeout", probe.name);
            let printed = format_duration(duration);
            assert_eq!(parse_duration(&printed), Ok(duration), "{printed}");
        }
        let platforms = config.platforms_for(probe);
        let printed = platforms.to_string();
        assert_eq!(PlatformSelection::parse(&printed).as_ref(), Ok(&platforms), "{printed}");
    }
});

fn units(input: &str) {
    match parse_duration(input) {
        Ok(duration) => {
            let printed = format_duration(duration);
            assert_eq!(parse_duration(&printed), Ok(duration), "{input:?} printed as {printed}");
        }
        Err(e) => check_message("duration", &e.to_string()),
    }
    if let Err(e) = parse_size(input) {
        check_message("size", &e.to_string());
    }
}
