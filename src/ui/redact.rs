//! The one redaction point: every string that leaves kiln (events, logs,
//! error messages) passes through a [`Redactor`] built from the build's
//! sensitive values, in every encoding a value is likely to be printed in.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// What a redacted value is replaced with in logs, events and errors.
pub const MASK: &str = "<redacted>";

/// How `inspect` shows a sensitive value (a value, not a hole in a log).
pub const SENSITIVE: &str = "<sensitive>";

/// Lines of a multi-line secret shorter than this are not redacted on their
/// own: masking every `}` or `-----` would make logs unreadable while
/// revealing nothing the whole value does not already cover.
const MIN_LINE_LEN: usize = 4;

/// Replaces every known sensitive value, and its encodings, with [`MASK`].
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Vec<String>,
    matcher: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the needles themselves.
        write!(f, "Redactor({} patterns)", self.needles.len())
    }
}

impl Redactor {
    /// Builds a redactor for these sensitive values.
    pub fn new<I, S>(values: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut r = Redactor::default();
        for v in values {
            r.add_forms(v.as_ref());
        }
        r.rebuild();
        r
    }

    /// Adds more sensitive values (e.g. once secrets are fetched).
    pub fn extend<I, S>(&mut self, values: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for v in values {
            self.add_forms(v.as_ref());
        }
        self.rebuild();
    }

    /// Number of patterns (value forms) this redactor looks for.
    pub fn len(&self) -> usize {
        self.needles.len()
    }

    /// True when nothing is sensitive.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// Returns `text` with every sensitive form replaced by [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        match &self.matcher {
            Some(m) => {
                let mut out = String::with_capacity(text.len());
                m.replace_all_with(text, &mut out, |_, _, dst| {
                    dst.push_str(MASK);
                    true
                });
                out
            }
            None => text.to_string(),
        }
    }

    fn add_forms(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        let mut forms = encodings(value);
        if value.contains('\n') {
            for line in value.lines() {
                let line = line.trim_end_matches('\r');
                if line.trim().len() >= MIN_LINE_LEN {
                    forms.extend(encodings(line));
                }
            }
        }
        for f in forms {
            if !f.is_empty() && !self.needles.contains(&f) {
                self.needles.push(f);
            }
        }
    }

    fn rebuild(&mut self) {
        self.matcher = if self.needles.is_empty() {
            None
        } else {
            // Leftmost-longest so that a value's encoded form wins over a
            // shorter value it happens to contain.
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&self.needles)
                    .expect("literal patterns always compile"),
            )
        };
    }
}

/// The forms a value is commonly printed in: itself, base64 (standard,
/// URL-safe, with and without padding), hex (`xxd -p`, upper case, and
/// `od -An -tx1`'s spaced bytes — with the start and end of the value, at
/// least [`MIN_HEX_PIECE`] bytes, on their own, for a dump wrapped across
/// lines), URL-encoded (RFC 3986 unreserved only, as Python's `quote` with
/// and without `/` safe, JavaScript's `encodeURIComponent`, upper- and
/// lower-case `%xx`, and form style), JSON-escaped (as is, `\u` for every
/// non-ASCII character as Python's `ensure_ascii` does, Go's `<>&` escapes,
/// and every character as `\u00XX`) and shell-quoted.
fn encodings(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let json = serde_json::to_string(value).expect("strings always serialize");
    let json_inner = json[1..json.len() - 1].to_string();
    let mut out = vec![
        value.to_string(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        base64::engine::general_purpose::URL_SAFE.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
        percent(b, b"", false),
        percent(b, b"", true),
        percent(b, b"/", false),
        percent(b, b"!'()*", false),
        form_urlencode(value),
        json_inner,
        json_ascii(value, false, false),
        json_ascii(value, true, false),
        json_ascii(value, false, true),
        json_ascii(value, false, true)
            .to_uppercase()
            .replace("\\U", "\\u"),
        shell_words::quote(value).into_owned(),
        // The body of a single-quoted shell word: `'` becomes `'\''`.
        value.replace('\'', r"'\''"),
    ];
    for upper in [false, true] {
        for sep in ["", " "] {
            out.push(hex(b, upper, sep));
            // A hex dump wraps: each piece of the value's start and end.
            for k in MIN_HEX_PIECE..b.len() {
                out.push(hex(&b[..k], upper, sep));
                out.push(hex(&b[b.len() - k..], upper, sep));
            }
        }
    }
    out
}

/// The shortest start or end of a value redacted on its own in a hex dump.
const MIN_HEX_PIECE: usize = 8;

/// Bytes as hex, upper or lower case, with `sep` between bytes (`od` and
/// `xxd -g1` write them spaced). The leak scan searches the same forms.
pub fn hex(bytes: &[u8], upper: bool, sep: &str) -> String {
    bytes
        .iter()
        .map(|x| {
            if upper {
                format!("{x:02X}")
            } else {
                format!("{x:02x}")
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// Percent-encoding keeping RFC 3986's unreserved bytes and `safe`.
pub fn percent(b: &[u8], safe: &[u8], lower: bool) -> String {
    let mut out = String::new();
    for &byte in b {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || safe.contains(&byte) {
            out.push(byte as char);
        } else if lower {
            out.push_str(&format!("%{byte:02x}"));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A JSON string's body with `\uXXXX` escapes: every non-ASCII character
/// (UTF-16, surrogate pairs past U+FFFF), `<>&` too when `html`, and every
/// character when `all`.
fn json_ascii(value: &str, html: bool, all: bool) -> String {
    let mut out = String::new();
    for c in value.chars() {
        let short = match c {
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            _ => None,
        };
        let escape = all || !c.is_ascii() || c.is_ascii_control() || (html && "<>&".contains(c));
        match short {
            Some(s) if !all => out.push_str(s),
            _ if escape => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn form_urlencode(value: &str) -> String {
    // application/x-www-form-urlencoded: unreserved bytes stay, space is `+`.
    let mut out = String::new();
    for &byte in value.as_bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "p@ss w'rd/\"x\"+=";

    #[test]
    fn redacts_value_and_every_encoding() {
        let r = Redactor::new([SECRET]);
        for form in encodings(SECRET) {
            let out = r.redact(&format!("before {form} after"));
            assert_eq!(out, format!("before {MASK} after"), "form {form:?} leaked");
        }
    }

    #[test]
    fn redacts_each_line_of_multiline_value() {
        let key = "-----BEGIN KEY-----\nMIIEabcdefgh\nqwertyuiop12\n-----END KEY-----";
        let r = Redactor::new([key]);
        let out = r.redact("line: qwertyuiop12 and MIIEabcdefgh");
        assert!(
            !out.contains("qwertyuiop12") && !out.contains("MIIEabcdefgh"),
            "{out}"
        );
        assert!(r.redact(key).matches(MASK).count() == 1);
    }

    /// Each encoding as the tools named in its comment print it.
    #[test]
    fn redacts_hex_percent_and_unicode_escapes() {
        let secret = "Zürich <pw> & /sec ret~!";
        let r = Redactor::new([secret]);
        let hex = hex::encode(secret);
        let spaced: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let cases = [
            ("xxd -p", hex.clone()),
            ("upper hex", hex.to_uppercase()),
            ("od -An -tx1", spaced.join(" ")),
            ("od, upper", spaced.join(" ").to_uppercase()),
            (
                "RFC 3986",
                "Z%C3%BCrich%20%3Cpw%3E%20%26%20%2Fsec%20ret~%21".into(),
            ),
            (
                "quote()",
                "Z%C3%BCrich%20%3Cpw%3E%20%26%20/sec%20ret~%21".into(),
            ),
            (
                "encodeURIComponent",
                "Z%C3%BCrich%20%3Cpw%3E%20%26%20%2Fsec%20ret~!".into(),
            ),
            (
                "lower %xx",
                "Z%c3%bcrich%20%3cpw%3e%20%26%20%2fsec%20ret~%21".into(),
            ),
            ("json.dumps", r"Z\u00fcrich <pw> & /sec ret~!".into()),
            (
                "Go json",
                r"Z\u00fcrich \u003cpw\u003e \u0026 /sec ret~!".into(),
            ),
            (
                "all \\u",
                secret
                    .chars()
                    .map(|c| format!("\\u{:04x}", c as u32))
                    .collect(),
            ),
            (
                "all \\u upper",
                secret
                    .chars()
                    .map(|c| format!("\\u{:04X}", c as u32))
                    .collect(),
            ),
        ];
        for (what, form) in cases {
            let out = r.redact(&format!("x {form} y"));
            assert_eq!(out, format!("x {MASK} y"), "{what}: {form}");
        }
        // An od dump wraps every 16 bytes: both pieces are masked.
        let line1 = spaced[..16].join(" ");
        let line2 = spaced[16..].join(" ");
        assert!(r.redact(&line1).contains(MASK) && r.redact(&line2).contains(MASK));
        let emoji = Redactor::new(["key🔑value"]);
        assert_eq!(emoji.redact(r"key\ud83d\udd11value"), MASK);
    }

    /// The benchmark in docs/benchmarks.md (`scripts/bench/redact.sh`):
    /// 100 MB of build-output lines, 20 secrets, through `redact`.
    #[test]
    #[ignore = "benchmark: scripts/bench/redact.sh"]
    fn redact_throughput() {
        let secrets: Vec<String> = (0..20)
            .map(|i| format!("secret-{i:02}-{}", "Zx9/+q".repeat(4)))
            .collect();
        let t0 = std::time::Instant::now();
        let r = Redactor::new(&secrets);
        let built = t0.elapsed();
        // Lines like apt and compiler output; one in 1000 carries a secret.
        let words = [
            "Get:1",
            "http://deb.debian.org",
            "bookworm/main",
            "amd64",
            "libssl3",
            "[2,345 kB]",
            "Unpacking",
            "Setting",
            "up",
            "(3.0.11-1~deb12u2)",
            "...",
            "warning:",
            "unused",
        ];
        let mut lines = vec![];
        let mut total = 0usize;
        let mut i = 0usize;
        while total < 100_000_000 {
            let mut l = String::new();
            for k in 0..12 {
                l.push_str(words[(i * 7 + k * 3) % words.len()]);
                l.push(' ');
            }
            if i.is_multiple_of(1000) {
                l.push_str(&secrets[i / 1000 % 20]);
            }
            total += l.len() + 1;
            lines.push(l);
            i += 1;
        }
        let t = std::time::Instant::now();
        let mut masked = 0;
        for l in &lines {
            masked += r.redact(l).matches(MASK).count();
        }
        let secs = t.elapsed().as_secs_f64();
        assert!(masked >= lines.len() / 1000);
        eprintln!(
            "redactor: {} patterns built in {:.1} ms; {} lines, {:.1} MB in {:.2} s = {:.0} MB/s",
            r.len(),
            built.as_secs_f64() * 1000.0,
            lines.len(),
            total as f64 / 1e6,
            secs,
            total as f64 / 1e6 / secs
        );
    }

    #[test]
    fn leaves_other_text_alone() {
        let r = Redactor::new(["hunter2"]);
        assert_eq!(r.redact("nothing to see"), "nothing to see");
        assert!(Redactor::new(Vec::<String>::new()).is_empty());
    }

    #[test]
    fn debug_does_not_show_values() {
        let r = Redactor::new(["hunter2"]);
        assert!(!format!("{r:?}").contains("hunter2"));
    }
}
