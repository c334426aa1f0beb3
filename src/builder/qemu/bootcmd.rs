//! `boot_command`: Packer's key syntax (literal characters, `<enter>`,
//! `<wait5>`, `<leftCtrlOn>`…) parsed into key presses and waits, with
//! kiln's `{http_ip}`/`{http_port}` placeholders, and typed into the guest
//! as QMP `send-key` chords (US layout; shifted characters with shift held).

use std::time::Duration;

/// One parsed piece of a boot command string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// A character typed as is.
    Char(char),
    /// A named key (`<enter>`): its QMP qcode.
    Key(&'static str),
    /// `<leftCtrlOn>` (true) / `<leftCtrlOff>` (false): hold or release.
    Hold(&'static str, bool),
    Wait(Duration),
    /// `{http_ip}`, `{http_port}`: replaced when typed.
    Placeholder(&'static str),
}

/// What the guest gets: a chord of qcodes pressed together, or a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Press(Vec<&'static str>),
    Wait(Duration),
}

/// The placeholders a boot command may use.
pub const PLACEHOLDERS: &[&str] = &["http_ip", "http_port"];

/// Named keys (lower case, as matched) and their qcodes.
const KEYS: &[(&str, &str)] = &[
    ("enter", "ret"),
    ("return", "ret"),
    ("esc", "esc"),
    ("tab", "tab"),
    ("bs", "backspace"),
    ("del", "delete"),
    ("spacebar", "spc"),
    ("insert", "insert"),
    ("home", "home"),
    ("end", "end"),
    ("pageup", "pgup"),
    ("pagedown", "pgdn"),
    ("up", "up"),
    ("down", "down"),
    ("left", "left"),
    ("right", "right"),
    ("menu", "menu"),
    ("f1", "f1"),
    ("f2", "f2"),
    ("f3", "f3"),
    ("f4", "f4"),
    ("f5", "f5"),
    ("f6", "f6"),
    ("f7", "f7"),
    ("f8", "f8"),
    ("f9", "f9"),
    ("f10", "f10"),
    ("f11", "f11"),
    ("f12", "f12"),
];

/// Modifiers: pressed alone (`<leftAlt>`) or held (`<leftAltOn>`).
const MODIFIERS: &[(&str, &str)] = &[
    ("leftalt", "alt"),
    ("rightalt", "alt_r"),
    ("leftctrl", "ctrl"),
    ("rightctrl", "ctrl_r"),
    ("leftshift", "shift"),
    ("rightshift", "shift_r"),
    ("leftsuper", "meta_l"),
    ("rightsuper", "meta_r"),
];

/// A boot command string that does not parse: where (1-based column and
/// length, in characters), why, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub column: usize,
    pub len: usize,
    pub message: String,
    pub help: String,
}

const KNOWN: &str = "known: <enter>, <esc>, <tab>, <bs>, <del>, <spacebar>, <up>/<down>/<left>/<right>, <home>, <end>, <pageUp>, <pageDown>, <insert>, <f1>…<f12>, <wait>, <wait5>, <wait10>, <wait2s>/<wait500ms>/<wait1m>, <leftCtrlOn>/<leftCtrlOff> (and Alt, Shift, Super, left and right)";

/// Every name `<…>` takes (for "did you mean").
fn all_names() -> Vec<String> {
    let mut names: Vec<String> = KEYS.iter().map(|(k, _)| k.to_string()).collect();
    for (m, _) in MODIFIERS {
        names.extend([m.to_string(), format!("{m}on"), format!("{m}off")]);
    }
    names.extend(["wait", "wait5", "wait10"].map(String::from));
    names
}

/// The error for `<name>` that names nothing, at character `at` (the
/// `<`): a `<waitX>` whose X is no duration points at X.
fn unknown_name(name: &str, at: usize) -> ParseError {
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("wait") {
        return ParseError {
            column: at + 1 + 5,
            len: rest.chars().count(),
            message: format!("`<{name}>`: `{}` is not a duration", &name[4..]),
            help: "`<wait>` waits 1s, `<wait5>` 5 seconds; units: `<wait500ms>`, `<wait2s>`, `<wait1m>`".into(),
        };
    }
    let hint = all_names()
        .into_iter()
        .map(|n| (strsim::jaro_winkler(&lower, &n), n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!("did you mean `<{n}>`? "))
        .unwrap_or_default();
    ParseError {
        column: at + 1,
        len: name.chars().count() + 2,
        message: format!("unknown key `<{name}>`"),
        help: format!("{hint}{KNOWN}"),
    }
}

/// Parses one `boot_command` string.
pub fn parse(s: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = vec![];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // `<name>`: a key, a wait or a modifier; `<` not followed by a
        // name and `>` is typed as is (`a < b`), unless the name is one
        // of the keys' (`<enter` without its `>`: a typo, not text).
        if c == '<' {
            let name: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            let end = i + 1 + name.chars().count();
            if !name.is_empty() && chars.get(end) == Some(&'>') {
                out.push(named(&name).ok_or_else(|| unknown_name(&name, i))?);
                i = end + 1;
                continue;
            }
            if !name.is_empty() && named(&name).is_some() {
                return Err(ParseError {
                    column: i + 1,
                    len: name.chars().count() + 1,
                    message: format!("`<{name}` is not closed"),
                    help: format!("write `<{name}>`; a `<` that is to be typed needs no `>` but must not be followed by a key name"),
                });
            }
        }
        // `{name}`: a placeholder; `{` not followed by a name and `}` is
        // typed as is.
        if c == '{' {
            let name: String = chars[i + 1..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                .collect();
            let end = i + 1 + name.chars().count();
            if !name.is_empty() && chars.get(end) == Some(&'}') {
                let known = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                    ParseError {
                        column: i + 1,
                        len: name.chars().count() + 2,
                        message: format!("unknown placeholder `{{{name}}}`"),
                        help: "a boot command knows {http_ip} and {http_port} (the guest-side address of `http_directory`)".into(),
                    }
                })?;
                out.push(Token::Placeholder(known));
                i = end + 1;
                continue;
            }
        }
        if qcode_of(c).is_none() {
            return Err(ParseError {
                column: i + 1,
                len: 1,
                message: format!("`{}` cannot be typed", c.escape_default()),
                help: "a US keyboard types printable ASCII; use <enter>, <tab>… for the rest"
                    .into(),
            });
        }
        out.push(Token::Char(c));
        i += 1;
    }
    Ok(out)
}

fn named(name: &str) -> Option<Token> {
    let lower = name.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("wait") {
        if rest.is_empty() {
            return Some(Token::Wait(Duration::from_secs(1)));
        }
        if rest.bytes().all(|b| b.is_ascii_digit()) {
            return rest
                .parse()
                .ok()
                .map(|n| Token::Wait(Duration::from_secs(n)));
        }
        return humantime::parse_duration(rest).ok().map(Token::Wait);
    }
    if let Some((_, q)) = KEYS.iter().find(|(k, _)| *k == lower) {
        return Some(Token::Key(q));
    }
    for (suffix, on) in [("on", true), ("off", false)] {
        if let Some(m) = lower.strip_suffix(suffix) {
            if let Some((_, q)) = MODIFIERS.iter().find(|(k, _)| *k == m) {
                return Some(Token::Hold(q, on));
            }
        }
    }
    MODIFIERS
        .iter()
        .find(|(k, _)| *k == lower)
        .map(|(_, q)| Token::Key(q))
}

/// The qcode of a printable ASCII character on a US keyboard, and whether
/// it needs shift.
fn qcode_of(c: char) -> Option<(&'static str, bool)> {
    const LOWER: &[&str] = &[
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p", "q", "r",
        "s", "t", "u", "v", "w", "x", "y", "z",
    ];
    const DIGITS: &[&str] = &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    Some(match c {
        'a'..='z' => (LOWER[c as usize - 'a' as usize], false),
        'A'..='Z' => (LOWER[c as usize - 'A' as usize], true),
        '0'..='9' => (DIGITS[c as usize - '0' as usize], false),
        ' ' => ("spc", false),
        '\n' => ("ret", false),
        '\t' => ("tab", false),
        '-' => ("minus", false),
        '_' => ("minus", true),
        '=' => ("equal", false),
        '+' => ("equal", true),
        '[' => ("bracket_left", false),
        '{' => ("bracket_left", true),
        ']' => ("bracket_right", false),
        '}' => ("bracket_right", true),
        '\\' => ("backslash", false),
        '|' => ("backslash", true),
        ';' => ("semicolon", false),
        ':' => ("semicolon", true),
        '\'' => ("apostrophe", false),
        '"' => ("apostrophe", true),
        '`' => ("grave_accent", false),
        '~' => ("grave_accent", true),
        ',' => ("comma", false),
        '<' => ("comma", true),
        '.' => ("dot", false),
        '>' => ("dot", true),
        '/' => ("slash", false),
        '?' => ("slash", true),
        '!' => ("1", true),
        '@' => ("2", true),
        '#' => ("3", true),
        '$' => ("4", true),
        '%' => ("5", true),
        '^' => ("6", true),
        '&' => ("7", true),
        '*' => ("8", true),
        '(' => ("9", true),
        ')' => ("0", true),
        _ => return None,
    })
}

/// The key presses and waits for `tokens`, placeholders replaced by
/// `vars` (name → value); held modifiers join every chord until released.
pub fn actions(tokens: &[Token], vars: &[(&str, String)]) -> Result<Vec<Action>, String> {
    let mut held: Vec<&'static str> = vec![];
    let mut out = vec![];
    let press = |out: &mut Vec<Action>, held: &[&'static str], key: &'static str, shift: bool| {
        let mut chord = held.to_vec();
        if shift && !chord.contains(&"shift") {
            chord.push("shift");
        }
        chord.push(key);
        out.push(Action::Press(chord));
    };
    for t in tokens {
        match t {
            Token::Char(c) => {
                let (q, shift) = qcode_of(*c).ok_or_else(|| format!("`{c}` cannot be typed"))?;
                press(&mut out, &held, q, shift);
            }
            Token::Key(q) => press(&mut out, &held, q, false),
            Token::Hold(q, true) => {
                if !held.contains(q) {
                    held.push(q);
                }
            }
            Token::Hold(q, false) => held.retain(|h| h != q),
            Token::Wait(d) => out.push(Action::Wait(*d)),
            Token::Placeholder(name) => {
                let value = vars
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
                    .ok_or_else(|| {
                        format!("`{{{name}}}` has no value: set `http_directory` or `http_content` so kiln serves files to the guest")
                    })?;
                for c in value.chars() {
                    let (q, shift) = qcode_of(c)
                        .ok_or_else(|| format!("`{c}` in `{{{name}}}` cannot be typed"))?;
                    press(&mut out, &held, q, shift);
                }
            }
        }
    }
    Ok(out)
}

/// The string as kiln logs it: placeholders replaced, so the log shows
/// what the guest got (secrets are masked by the log's redaction).
pub fn display(s: &str, vars: &[(&str, String)]) -> String {
    let mut out = s.to_string();
    for (n, v) in vars {
        out = out.replace(&format!("{{{n}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootcmd_literal_keys_waits_and_placeholders() {
        let t = parse("aB<enter><wait5><wait><wait250ms>{http_port}").unwrap();
        assert_eq!(
            t,
            vec![
                Token::Char('a'),
                Token::Char('B'),
                Token::Key("ret"),
                Token::Wait(Duration::from_secs(5)),
                Token::Wait(Duration::from_secs(1)),
                Token::Wait(Duration::from_millis(250)),
                Token::Placeholder("http_port"),
            ]
        );
        let a = actions(&t, &[("http_port", "81".into())]).unwrap();
        assert_eq!(a[0], Action::Press(vec!["a"]));
        assert_eq!(a[1], Action::Press(vec!["shift", "b"]));
        assert_eq!(a[2], Action::Press(vec!["ret"]));
        assert_eq!(a[5], Action::Wait(Duration::from_millis(250)));
        assert_eq!(a[6..], [Action::Press(vec!["8"]), Action::Press(vec!["1"])]);
    }

    #[test]
    fn bootcmd_names_are_case_insensitive_and_cover_packers_set() {
        for (s, q) in [
            ("<ESC>", "esc"),
            ("<Tab>", "tab"),
            ("<bs>", "backspace"),
            ("<del>", "delete"),
            ("<spacebar>", "spc"),
            ("<pageUp>", "pgup"),
            ("<f12>", "f12"),
            ("<up>", "up"),
            ("<leftAlt>", "alt"),
        ] {
            assert_eq!(parse(s).unwrap(), vec![Token::Key(q)], "{s}");
        }
        assert_eq!(
            parse("<wait10><wait1m>").unwrap(),
            vec![
                Token::Wait(Duration::from_secs(10)),
                Token::Wait(Duration::from_secs(60))
            ]
        );
    }

    #[test]
    fn bootcmd_held_modifiers_join_every_chord_until_released() {
        let t = parse("<leftCtrlOn>x<leftAltOn><del><leftAltOff><leftCtrlOff>y").unwrap();
        let a = actions(&t, &[]).unwrap();
        assert_eq!(
            a,
            vec![
                Action::Press(vec!["ctrl", "x"]),
                Action::Press(vec!["ctrl", "alt", "delete"]),
                Action::Press(vec!["y"]),
            ]
        );
    }

    #[test]
    fn bootcmd_symbols_type_with_shift_and_loose_brackets_stay_literal() {
        let a = actions(&parse("a<b {x y}:").unwrap(), &[]).unwrap();
        assert_eq!(a[1], Action::Press(vec!["shift", "comma"]));
        assert_eq!(a[3], Action::Press(vec!["spc"]));
        assert_eq!(a[4], Action::Press(vec!["shift", "bracket_left"]));
        assert_eq!(a.last(), Some(&Action::Press(vec!["shift", "semicolon"])));
    }

    #[test]
    fn bootcmd_unknown_key_or_placeholder_names_the_column() {
        let e = parse("linux <enter><foo>").unwrap_err();
        assert_eq!(e.column, 14);
        assert_eq!(e.len, 5);
        assert!(e.message.contains("`<foo>`"), "{}", e.message);
        let e = parse("url={http_host}").unwrap_err();
        assert_eq!(e.column, 5);
        assert!(e.message.contains("{http_host}"), "{}", e.message);
        let e = parse("é").unwrap_err();
        assert_eq!(e.column, 1);
    }

    #[test]
    fn bootcmd_typos_unclosed_keys_and_bad_waits_point_at_the_characters() {
        let e = parse("ab<entr>").unwrap_err();
        assert_eq!((e.column, e.len), (3, 6));
        assert!(e.help.starts_with("did you mean `<enter>`?"), "{}", e.help);
        let e = parse("x <enter").unwrap_err();
        assert_eq!((e.column, e.len), (3, 6));
        assert!(
            e.message.contains("`<enter` is not closed"),
            "{}",
            e.message
        );
        let e = parse("<wait5x>").unwrap_err();
        assert_eq!((e.column, e.len), (6, 2), "the duration itself");
        assert!(
            e.message.contains("`5x` is not a duration"),
            "{}",
            e.message
        );
        // A `<` before text that names no key is typed.
        assert!(
            parse("a <b> c<d").is_err(),
            "`<b>` is a tag-like unknown key"
        );
        assert!(parse("if a<b then").is_ok());
    }

    #[test]
    fn bootcmd_placeholder_without_a_server_is_an_error() {
        let e = actions(&parse("{http_ip}").unwrap(), &[]).unwrap_err();
        assert!(e.contains("http_directory"), "{e}");
    }
}
