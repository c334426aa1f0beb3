//! Where each character of a TOML string's value sits in the file: the
//! string's source form (basic or literal, single- or multi-line, with
//! escapes and line-ending backslashes) decoded again here, keeping for
//! every byte of the value the offset it came from. Lets an error about
//! a character inside a value (a `boot_command` key name) point at that
//! character in the template.

/// For the source text `raw` of a TOML string (delimiters included), the
/// offset in `raw` where each byte of its value starts, plus one entry
/// for the end (the closing delimiter). `None` when `raw` is no TOML
/// string or decodes to something other than `value` (a value built by
/// `${…}`, or `$${` written for `${`): then no character maps exactly.
pub fn value_offsets(raw: &str, value: &str) -> Option<Vec<usize>> {
    let (delim, multi) = if raw.starts_with("\"\"\"") {
        ("\"\"\"", true)
    } else if raw.starts_with("'''") {
        ("'''", true)
    } else if raw.starts_with('"') {
        ("\"", false)
    } else if raw.starts_with('\'') {
        ("'", false)
    } else {
        return None;
    };
    let end = raw.len().checked_sub(delim.len())?;
    if end < delim.len() || !raw[end..].starts_with(delim) {
        return None;
    }
    let mut i = delim.len();
    // A newline right after the opening delimiter is not part of it.
    if multi {
        if raw[i..].starts_with("\r\n") {
            i += 2;
        } else if raw[i..].starts_with('\n') {
            i += 1;
        }
    }
    let basic = delim.starts_with('"');
    let mut out = String::new();
    let mut map = vec![];
    let mut push = |c: char, at: usize, out: &mut String| {
        out.push(c);
        map.extend(std::iter::repeat_n(at, c.len_utf8()));
    };
    while i < end {
        let rest = &raw[i..end];
        let c = rest.chars().next()?;
        if basic && c == '\\' {
            let (decoded, used) = escape(rest, multi)?;
            if let Some(d) = decoded {
                push(d, i, &mut out);
            }
            i += used;
            continue;
        }
        if multi && rest.starts_with("\r\n") {
            // A CRLF in the file is a newline in the value.
            push('\n', i, &mut out);
            i += 2;
            continue;
        }
        push(c, i, &mut out);
        i += c.len_utf8();
    }
    map.push(end);
    (out == value).then_some(map)
}

/// The escape at the start of `rest` (a backslash): the character it
/// stands for (none for a line-ending backslash) and its length.
fn escape(rest: &str, multi: bool) -> Option<(Option<char>, usize)> {
    let next = rest[1..].chars().next()?;
    let simple = match next {
        'b' => Some('\u{8}'),
        't' => Some('\t'),
        'n' => Some('\n'),
        'f' => Some('\u{c}'),
        'r' => Some('\r'),
        'e' => Some('\u{1b}'),
        '"' => Some('"'),
        '\\' => Some('\\'),
        _ => None,
    };
    if let Some(c) = simple {
        return Some((Some(c), 2));
    }
    let hex = |n: usize| -> Option<(Option<char>, usize)> {
        let digits = rest.get(2..2 + n)?;
        let code = u32::from_str_radix(digits, 16).ok()?;
        Some((Some(char::from_u32(code)?), 2 + n))
    };
    match next {
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        // A line-ending backslash: the newline and all whitespace after
        // it are dropped.
        c if multi && (c == ' ' || c == '\t' || c == '\n' || c == '\r') => {
            let after = &rest[1..];
            let blank = after.len() - after.trim_start_matches([' ', '\t']).len();
            let line_end = after[blank..].starts_with('\n') || after[blank..].starts_with("\r\n");
            if !line_end {
                return None;
            }
            let ws = after.len() - after.trim_start_matches([' ', '\t', '\n', '\r']).len();
            Some((None, 1 + ws))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value's `n`-th byte, found through the map in the source.
    fn at(raw: &str, value: &str, n: usize) -> char {
        let map = value_offsets(raw, value).expect("decodes to the value");
        raw[map[n]..].chars().next().unwrap()
    }

    #[test]
    fn strpos_plain_and_literal_strings_map_one_to_one() {
        assert_eq!(
            value_offsets("\"ab<x>\"", "ab<x>").unwrap(),
            vec![1, 2, 3, 4, 5, 6]
        );
        assert_eq!(value_offsets("'a\\b'", "a\\b").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(at("'''\nx<y>'''", "x<y>", 1), '<');
    }

    #[test]
    fn strpos_escapes_map_to_their_backslash() {
        let raw = r#""a\t\u00e9\"<bad>""#;
        let value = "a\té\"<bad>";
        let map = value_offsets(raw, value).unwrap();
        let lt = value.find('<').unwrap();
        assert_eq!(&raw[map[lt]..map[lt] + 5], "<bad>");
        assert_eq!(&raw[map[2]..map[2] + 2], "\\u", "é starts at its escape");
        assert_eq!(map[3], map[2], "both bytes of é map to the escape");
    }

    #[test]
    fn strpos_multi_line_basic_strings_with_line_ending_backslashes() {
        let raw = "\"\"\"\nline one\\\n    <wait5>\r\nx\"\"\"";
        let value = "line one<wait5>\nx";
        let map = value_offsets(raw, value).unwrap();
        let w = value.find('<').unwrap();
        assert_eq!(&raw[map[w]..map[w] + 7], "<wait5>");
        assert_eq!(raw[map[value.len() - 1]..].chars().next(), Some('x'));
    }

    #[test]
    fn strpos_values_the_source_does_not_spell_do_not_map() {
        assert_eq!(value_offsets("\"${var.x}<entr>\"", "abc<entr>"), None);
        assert_eq!(value_offsets("\"$${x}\"", "${x}"), None);
        assert_eq!(value_offsets("42", "42"), None);
    }
}
