//! Event times: RFC 3339 in UTC with microseconds, written fast.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// The event time: now, RFC 3339 in UTC with microseconds.
pub(crate) fn now() -> String {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => at_unix(since.as_secs(), since.subsec_micros()),
        // Before 1970: the clock is wrong, and chrono writes it.
        Err(_) => rfc3339_micros(&chrono::Utc::now()),
    }
}

thread_local! {
    /// The second last written on this thread: its Unix time and its
    /// "YYYY-MM-DDTHH:MM:SS" (the events of a second share it).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// The time `secs` seconds and `micros` microseconds after the Unix epoch,
/// as [`rfc3339_micros`] writes it: the date and time of day are written
/// once per second (per thread), then only the microseconds.
fn at_unix(secs: u64, micros: u32) -> String {
    SECOND.with_borrow_mut(|(second, prefix)| {
        if *second != secs {
            let Some(t) = i64::try_from(secs)
                .ok()
                .and_then(|s| chrono::DateTime::from_timestamp(s, micros.saturating_mul(1_000)))
            else {
                return rfc3339_micros(&chrono::Utc::now());
            };
            let full = rfc3339_micros(&t);
            if full.len() != 27 {
                // Past year 9999: chrono's longer form, not cached.
                return full;
            }
            prefix.clear();
            prefix.push_str(&full[..19]);
            *second = secs;
            return full;
        }
        let mut out = String::with_capacity(27);
        out.push_str(prefix);
        out.push('.');
        let mut digits = [b'0'; 6];
        let mut value = micros.min(999_999);
        for d in digits.iter_mut().rev() {
            *d = b'0' + (value % 10) as u8;
            value /= 10;
        }
        for d in digits {
            out.push(char::from(d));
        }
        out.push('Z');
        out
    })
}

/// `t.to_rfc3339_opts(SecondsFormat::Micros, true)`, written digit by digit:
/// chrono's formatter goes through `core::fmt`, which costs more than the
/// rest of a pre-rendered event. Falls back to chrono outside years
/// 0000–9999 and for a leap second.
pub(crate) fn rfc3339_micros(t: &chrono::DateTime<chrono::Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (t.year(), t.nanosecond());
    let Ok(year) = u32::try_from(year) else {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    }
    let mut out = [0u8; 27];
    let fields: [(usize, usize, u32); 7] = [
        (0, 4, year),
        (5, 2, t.month()),
        (8, 2, t.day()),
        (11, 2, t.hour()),
        (14, 2, t.minute()),
        (17, 2, t.second()),
        (20, 6, nanos / 1_000),
    ];
    for (at, width, mut value) in fields {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (26, b'Z'),
    ] {
        out[at] = sep;
    }
    // ASCII digits and separators: one copy, not a push per character.
    std::str::from_utf8(&out).map_or_else(
        |_| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chronos(secs: u64, micros: u32) -> String {
        chrono::DateTime::from_timestamp(secs as i64, micros * 1_000)
            .expect("in range")
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }

    /// Times written from the second cached on the thread are chrono's,
    /// within a second, across seconds, days, years and leap days, and when
    /// the clock goes back.
    #[test]
    fn times_written_from_the_cached_second_are_chronos() {
        let starts = [
            0u64,
            951_782_399, // 2000-02-28T23:59:59: a leap day follows
            1_704_067_199,
            1_798_761_599,
            253_402_300_799, // 9999-12-31T23:59:59
        ];
        for start in starts {
            for (secs, micros) in [
                (start, 0),
                (start, 1),
                (start, 999_999),
                (start, 123_456),
                (start + 1, 0),
                (start + 1, 500_000),
                (start, 42), // back: the cache is written again
                (start + 86_400, 7),
            ] {
                assert_eq!(
                    at_unix(secs, micros),
                    chronos(secs, micros),
                    "{secs} {micros}"
                );
            }
        }
        // Past year 9999: chrono's form, not cached.
        assert_eq!(at_unix(253_402_300_800, 5), chronos(253_402_300_800, 5));
        assert_eq!(at_unix(253_402_300_800, 6), chronos(253_402_300_800, 6));
        let now = now();
        assert_eq!(now.len(), 27, "{now}");
        assert!(chrono::DateTime::parse_from_rfc3339(&now).is_ok(), "{now}");
    }
}
