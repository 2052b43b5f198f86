//! Scalar config values that parse themselves during deserialisation: durations, byte sizes,
//! worker counts. Because they fail inside serde, toml attaches the value's span to the error and
//! the user sees `file:line:col` for free.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Parses `"500ms"`, `"10s"`, `"2m"`, `"1h"` (an unsigned integer and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected an integer and a unit, e.g. \"500ms\", \"10s\", \"2m\", \"1h\""
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: number too large"))?;
    let mul_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be one of ms, s, m, h"
            ))
        }
    };
    let ms = n
        .checked_mul(mul_ms)
        .filter(|ms| *ms <= 365 * 24 * 3_600_000)
        .ok_or_else(|| format!("invalid duration {s:?}: longer than a year"))?;
    Ok(Duration::from_millis(ms))
}

/// Formats a duration the way the config writes it (for summaries).
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// Parses a byte size: `"1024"`, `"512KiB"`, `"16MiB"`, `"1GiB"` (also `"NNB"`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    if num.is_empty() {
        return Err(format!(
            "invalid size {s:?}: expected an integer with an optional unit B, KiB, MiB or GiB"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: number too large"))?;
    let mul: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size {s:?}: unit must be one of B, KiB, MiB, GiB"
            ))
        }
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

/// A duration that must be greater than zero (`ZERO_OK = false`) or may be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur<const ZERO_OK: bool>(pub Duration);

impl<'de, const ZERO_OK: bool> Deserialize<'de> for Dur<ZERO_OK> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const Z: bool>;
        impl<const Z: bool> Visitor<'_> for V<Z> {
            type Value = Dur<Z>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"10s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur<Z>, E> {
                let d = parse_duration(s).map_err(E::custom)?;
                if !Z && d.is_zero() {
                    return Err(E::custom(format!(
                        "invalid duration {s:?}: must be greater than zero"
                    )));
                }
                Ok(Dur(d))
            }
        }
        d.deserialize_any(V::<ZERO_OK>)
    }
}

/// A byte size: a TOML integer or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size: an integer number of bytes or a string such as \"16MiB\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {n}: must not be negative")))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Size, E> {
                parse_size(s).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `workers = "auto"` or an integer >= 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Workers {
    #[default]
    Auto,
    Count(usize),
}

impl<'de> Deserialize<'de> for Workers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Workers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"auto\" or an integer >= 1")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Workers, E> {
                if !(1..=1024).contains(&n) {
                    return Err(E::custom(format!(
                        "invalid workers {n}: must be \"auto\" or an integer from 1 to 1024"
                    )));
                }
                Ok(Workers::Count(n as usize))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Workers, E> {
                self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Workers, E> {
                if s == "auto" {
                    Ok(Workers::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid workers {s:?}: must be \"auto\" or an integer from 1 to 1024"
                    )))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "10",
            "10 s",
            "1.5s",
            "-1s",
            "10sec",
            "9999999h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn duration_format_round_trips() {
        for s in ["0s", "500ms", "1500ms", "10s", "2m", "1h"] {
            assert_eq!(fmt_duration(parse_duration(s).unwrap()), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "16MB",
            "16 MiB",
            "1.5MiB",
            "99999999999999999999GiB",
            "-1",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
