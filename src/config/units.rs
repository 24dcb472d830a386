//! Durations (`30s`, `5m`, `1h30m`, `500ms`, `30d`) and sizes (`4MiB`, `16GiB`,
//! `1MB`, plain bytes) as written in probes.yaml and on the command line.

use std::time::Duration;

/// A string that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a duration like 30s, 5m, 2h, 1h30m or 500ms, got {0:?}")]
pub struct DurationError(pub String);

/// A string that is not a size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a size like 4MiB, 16GiB, 1MB or a number of bytes, got {0:?}")]
pub struct SizeError(pub String);

/// Parse one or more `<integer><unit>` groups, units `ms`, `s`, `m`, `h`, `d`, `w`
/// (`1h30m`). A bare number is refused: its unit would be a guess.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let error = || DurationError(shorten(s));
    let text = s.trim();
    if text.is_empty() {
        return Err(error());
    }
    let mut total: u64 = 0; // milliseconds
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(error());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| error())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(error()),
        };
        rest = rest[unit_len..].trim_start();
        total = number.checked_mul(millis_per_unit).and_then(|ms| total.checked_add(ms)).ok_or_else(error)?;
    }
    Ok(Duration::from_millis(total))
}

/// Parse a byte size: an integer, optionally followed by a decimal (`kB`, `MB`,
/// `GB`, `TB`) or binary (`KiB`, `MiB`, `GiB`, `TiB`; also `Ki`, `Mi`, …) unit, or `B`.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let error = || SizeError(shorten(s));
    let text = s.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(error());
    }
    let number: u64 = text[..digits].parse().map_err(|_| error())?;
    let multiplier: u64 = match text[digits..].trim_start() {
        "" | "B" => 1,
        "k" | "kB" | "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        "T" | "TB" => 1_000_000_000_000,
        "Ki" | "KiB" => 1 << 10,
        "Mi" | "MiB" => 1 << 20,
        "Gi" | "GiB" => 1 << 30,
        "Ti" | "TiB" => 1 << 40,
        _ => return Err(error()),
    };
    number.checked_mul(multiplier).ok_or_else(error)
}

/// Write a duration the way probes.yaml would (`1h30m`, `500ms`, `0s`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2w"), Ok(secs(14 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "30", "5 minutes", "-5m", "1.5h", "5M", "m", "1h30", "s5", "99999999999999999999s"] {
            assert_eq!(parse_duration(bad), Err(DurationError(bad.to_string())), "{bad:?}");
        }
        assert!(parse_duration(&format!("{}d", u64::MAX / 1000)).is_err(), "overflow is an error");
        assert_eq!(
            parse_duration("5 minutes").unwrap_err().to_string(),
            "expected a duration like 30s, 5m, 2h, 1h30m or 500ms, got \"5 minutes\""
        );
    }

    #[test]
    fn formats_durations() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("16GiB"), Ok(16 << 30));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("2Gi"), Ok(2 << 30));
        assert_eq!(parse_size("10B"), Ok(10));
        for bad in ["", "MiB", "4 MiBs", "-1", "1.5GiB", "4mib", "20000000TiB", "99999999999999999999"] {
            assert_eq!(parse_size(bad), Err(SizeError(bad.to_string())), "{bad:?}");
        }
    }
}
