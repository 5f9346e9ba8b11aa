//! Dates and durations of the report: unix seconds as UTC calendar times
//! (no time-zone library), window lengths as "24h" or "7d".

/// "24h", "7d", "30m", "90s".
pub fn fmt_window(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s >= 86_400 && s != 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s >= 3600 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Unix seconds as "YYYY-MM-DD HH:MM:SS" (UTC); "-" for 0.
pub fn fmt_time(t: u32) -> String {
    if t == 0 {
        return "-".into();
    }
    let days = i64::from(t / 86_400);
    let rem = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = (if mp < 10 { mp + 3 } else { mp - 9 }) as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
