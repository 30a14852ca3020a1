//! Event times: RFC 3339 in UTC with microseconds, written fast.

/// The event time: now, RFC 3339 in UTC with microseconds.
pub(crate) fn now() -> String {
    rfc3339_micros(&chrono::Utc::now())
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
