//! `formatdate(SPEC, TIMESTAMP)`: RFC 3339 timestamps (what `timestamp()`
//! returns) formatted with Packer's and Terraform's specification letters
//! (`YYYY-MM-DD`, `hh:mm`, `EEE, DD MMM YYYY`, `'literal'`…). Written here
//! because the calendar arithmetic is a few lines and no date crate is in
//! the tree.

/// A parsed timestamp: the local date and time as written, and its offset.
#[derive(Debug, PartialEq)]
struct Stamp {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// Minutes east of UTC; `None` for `Z`.
    offset: Option<i32>,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn parse(ts: &str) -> Result<Stamp, String> {
    let bad = || {
        format!("`{ts}` is not an RFC 3339 timestamp (like 2024-05-01T13:45:00Z, what timestamp() returns)")
    };
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let s = &ts[r];
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (year, month, day) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (hour, minute, second) = (
        num(11..13)? as u32,
        num(14..16)? as u32,
        num(17..19)? as u32,
    );
    let mut rest = &ts[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => None,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let h: i32 = o[1..3].parse().map_err(|_| bad())?;
            let m: i32 = o[4..6].parse().map_err(|_| bad())?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let sign = if o.starts_with('-') { -1 } else { 1 };
            Some(sign * (h * 60 + m))
        }
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("`{ts}` is not a valid date and time"));
    }
    Ok(Stamp {
        year,
        month,
        day,
        hour,
        minute,
        second,
        offset,
    })
}

fn offset_text(offset: Option<i32>, colon: bool) -> String {
    let o = offset.unwrap_or(0);
    let sign = if o < 0 { '-' } else { '+' };
    let (h, m) = (o.abs() / 60, o.abs() % 60);
    if colon {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}")
    }
}

/// Formats `ts` by `spec`. Letters form sequences (`YYYY`, `MM`, `D`…);
/// an unknown sequence is an error, text in single quotes is literal
/// (`''` is a quote), other characters are copied.
pub fn formatdate(spec: &str, ts: &str) -> Result<String, String> {
    let t = parse(ts)?;
    let weekday = (days_from_civil(t.year, t.month, t.day) + 3).rem_euclid(7) as usize;
    let hour12 = match t.hour % 12 {
        0 => 12,
        h => h,
    };
    let chars: Vec<char> = spec.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            // A quoted literal; `''` inside it is a quote too.
            i += 1;
            loop {
                match (chars.get(i), chars.get(i + 1)) {
                    (None, _) => return Err(format!("unclosed quote in `{spec}`")),
                    (Some('\''), Some('\'')) => {
                        out.push('\'');
                        i += 2;
                    }
                    (Some('\''), _) => {
                        i += 1;
                        break;
                    }
                    (Some(&c), _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let seq: String = chars[i..i + run].iter().collect();
        let text = match seq.as_str() {
            "YYYY" => format!("{:04}", t.year),
            "YY" => format!("{:02}", t.year.rem_euclid(100)),
            "MMMM" => MONTHS[t.month as usize - 1].to_string(),
            "MMM" => MONTHS[t.month as usize - 1][..3].to_string(),
            "MM" => format!("{:02}", t.month),
            "M" => t.month.to_string(),
            "DD" => format!("{:02}", t.day),
            "D" => t.day.to_string(),
            "EEEE" => DAYS[weekday].to_string(),
            "EEE" => DAYS[weekday][..3].to_string(),
            "hh" => format!("{:02}", t.hour),
            "h" => t.hour.to_string(),
            "HH" => format!("{hour12:02}"),
            "H" => hour12.to_string(),
            "AA" => (if t.hour < 12 { "AM" } else { "PM" }).to_string(),
            "aa" => (if t.hour < 12 { "am" } else { "pm" }).to_string(),
            "mm" => format!("{:02}", t.minute),
            "m" => t.minute.to_string(),
            "ss" => format!("{:02}", t.second),
            "s" => t.second.to_string(),
            "ZZZZZ" => offset_text(t.offset, true),
            "ZZZZ" => offset_text(t.offset, false),
            "ZZZ" => match t.offset {
                None | Some(0) => "UTC".to_string(),
                o => offset_text(o, false),
            },
            "Z" => match t.offset {
                None => "Z".to_string(),
                o => offset_text(o, true),
            },
            other => {
                return Err(format!(
                    "unknown sequence `{other}` in `{spec}` (YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H AA aa mm m ss s ZZZZZ ZZZZ ZZZ Z; quote literal letters: 'T')"
                ))
            }
        };
        out.push_str(&text);
        i += run;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_specification_letters() {
        let ts = "2024-03-09T07:05:03Z";
        assert_eq!(formatdate("YYYY-MM-DD", ts).unwrap(), "2024-03-09");
        assert_eq!(formatdate("YYYYMMDDhhmmss", ts).unwrap(), "20240309070503");
        assert_eq!(
            formatdate("EEEE, D MMMM YY", ts).unwrap(),
            "Saturday, 9 March 24"
        );
        assert_eq!(formatdate("EEE MMM h:m:s", ts).unwrap(), "Sat Mar 7:5:3");
        assert_eq!(
            formatdate("HH:mm AA aa H", "2024-03-09T19:05:03Z").unwrap(),
            "07:05 PM pm 7"
        );
        assert_eq!(formatdate("H AA", "2024-03-09T00:00:00Z").unwrap(), "12 AM");
        assert_eq!(
            formatdate("DD MMM YYYY hh:mm ZZZ", ts).unwrap(),
            "09 Mar 2024 07:05 UTC"
        );
        assert_eq!(formatdate("Z", ts).unwrap(), "Z");
        assert_eq!(
            formatdate("hh:mm ZZZZZ ZZZZ ZZZ Z", "2024-03-09T07:05:03.25-05:30").unwrap(),
            "07:05 -05:30 -0530 -0530 -05:30"
        );
        assert_eq!(
            formatdate("YYYY-MM-DD'T'hh:mm 'o''clock'''", ts).unwrap(),
            "2024-03-09T07:05 o'clock'"
        );
        // Weekdays across the epoch, leap days and centuries.
        assert_eq!(
            formatdate("EEEE", "1970-01-01T00:00:00Z").unwrap(),
            "Thursday"
        );
        assert_eq!(
            formatdate("EEEE", "2000-02-29T00:00:00Z").unwrap(),
            "Tuesday"
        );
        assert_eq!(
            formatdate("EEEE", "1969-12-31T23:59:59Z").unwrap(),
            "Wednesday"
        );
    }

    #[test]
    fn bad_specs_and_timestamps_are_errors() {
        let e = formatdate("YYYY-QQ", "2024-03-09T07:05:03Z").unwrap_err();
        assert!(e.contains("unknown sequence `QQ`"), "{e}");
        assert!(formatdate("'open", "2024-03-09T07:05:03Z")
            .unwrap_err()
            .contains("unclosed quote"));
        for bad in [
            "2024-03-09",
            "2024-03-09 07:05:03Z",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-03-09T07:05:03+5:00",
            "yesterday",
        ] {
            assert!(formatdate("YYYY", bad).is_err(), "{bad}");
        }
    }
}
