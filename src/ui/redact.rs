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
            Some(m) => m.replace_all(text, &vec![MASK; self.needles.len()]),
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
/// URL-safe, with and without padding), URL-encoded (strict and form
/// style), JSON-escaped and shell-quoted.
fn encodings(value: &str) -> Vec<String> {
    let b = value.as_bytes();
    let json = serde_json::to_string(value).expect("strings always serialize");
    let json_inner = json[1..json.len() - 1].to_string();
    vec![
        value.to_string(),
        base64::engine::general_purpose::STANDARD.encode(b),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(b),
        base64::engine::general_purpose::URL_SAFE.encode(b),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        utf8_percent_encode(value, NON_ALPHANUMERIC).to_string(),
        form_urlencode(value),
        json_inner,
        shell_words::quote(value).into_owned(),
        // The body of a single-quoted shell word: `'` becomes `'\''`.
        value.replace('\'', r"'\''"),
    ]
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
