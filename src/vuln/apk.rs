//! Alpine (apk) version ordering, as apk-tools defines it:
//! `digits{.digits}[letter]{_suffix[digits]}[~hash][-rN]`. Suffixes
//! `_alpha`, `_beta`, `_pre`, `_rc` sort before the bare version,
//! `_cvs`, `_svn`, `_git`, `_hg`, `_p` after it; a number part with a
//! leading zero compares as text (Gentoo's rule); `-rN` is the package
//! revision. No crate implements these rules (`version-compare` does not),
//! so this is kiln's own reading of them; `tests/it/vercmp.rs` checks it
//! against apk-tools' own table of version pairs.

use std::cmp::Ordering;

/// The suffixes apk knows, in their order. Those before `None` mark a
/// pre-release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Suffix {
    Alpha,
    Beta,
    Pre,
    Rc,
    None,
    Cvs,
    Svn,
    Git,
    Hg,
    P,
}

impl Suffix {
    fn parse(word: &str) -> Option<Suffix> {
        Some(match word {
            "alpha" => Suffix::Alpha,
            "beta" => Suffix::Beta,
            "pre" => Suffix::Pre,
            "rc" => Suffix::Rc,
            "cvs" => Suffix::Cvs,
            "svn" => Suffix::Svn,
            "git" => Suffix::Git,
            "hg" => Suffix::Hg,
            "p" => Suffix::P,
            _ => return None,
        })
    }
}

/// One piece of a version. The variants are declared in the order apk
/// ranks piece kinds: when two versions agree up to a point and then
/// differ in kind, the later kind is the older version (a longer
/// version is newer unless the extra piece is a pre-release suffix).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    /// The leading number: always compared as a number.
    Initial(&'a str),
    /// `.N`: a number, or text when either side has a leading zero.
    Number(&'a str),
    Letter(u8),
    Suffix(Suffix),
    SuffixNumber(&'a str),
    /// `~hash`: compared as text.
    Hash(&'a str),
    Revision(&'a str),
    End,
    Invalid,
}

impl Piece<'_> {
    fn rank(&self) -> u8 {
        match self {
            Piece::Initial(_) => 0,
            Piece::Number(_) => 1,
            Piece::Letter(_) => 2,
            Piece::Suffix(_) => 3,
            Piece::SuffixNumber(_) => 4,
            Piece::Hash(_) => 5,
            Piece::Revision(_) => 6,
            Piece::End => 7,
            Piece::Invalid => 8,
        }
    }
}

/// Digits compared as numbers of any length.
fn numeric(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn digits(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

/// Splits a version into pieces; the last is `End`, or `Invalid` where
/// the text stops following the grammar.
fn pieces(v: &str) -> Vec<Piece<'_>> {
    let mut out = vec![];
    let n = digits(v);
    if n == 0 {
        out.push(Piece::Invalid);
        return out;
    }
    out.push(Piece::Initial(&v[..n]));
    let mut rest = &v[n..];
    loop {
        let prev = out.last().map_or(0, Piece::rank);
        let Some(c) = rest.bytes().next() else {
            out.push(Piece::End);
            return out;
        };
        let piece = match c {
            b'a'..=b'z' if prev <= 1 => {
                rest = &rest[1..];
                Piece::Letter(c)
            }
            b'.' | b'0'..=b'9' => {
                let dotted = c == b'.';
                let body = if dotted { &rest[1..] } else { rest };
                let n = digits(body);
                let piece = match prev {
                    _ if n == 0 => Piece::Invalid,
                    0 | 1 => Piece::Number(&body[..n]),
                    // A suffix's number follows it directly, never a dot.
                    3 if !dotted => Piece::SuffixNumber(&body[..n]),
                    _ => Piece::Invalid,
                };
                rest = &body[n..];
                piece
            }
            b'_' if prev <= 4 => {
                let body = &rest[1..];
                let n = body.bytes().take_while(u8::is_ascii_lowercase).count();
                rest = &body[n..];
                Suffix::parse(&body[..n]).map_or(Piece::Invalid, Piece::Suffix)
            }
            b'~' if prev < 5 => {
                let body = &rest[1..];
                let n = body
                    .bytes()
                    .take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
                    .count();
                rest = &body[n..];
                if n == 0 {
                    Piece::Invalid
                } else {
                    Piece::Hash(&body[..n])
                }
            }
            b'-' if prev < 6 && rest.starts_with("-r") => {
                let body = &rest[2..];
                let n = digits(body);
                rest = &body[n..];
                if n == 0 {
                    Piece::Invalid
                } else {
                    Piece::Revision(&body[..n])
                }
            }
            _ => Piece::Invalid,
        };
        let invalid = piece == Piece::Invalid;
        out.push(piece);
        if invalid {
            return out;
        }
    }
}

/// Whether `v` is a version apk accepts.
pub fn is_valid(v: &str) -> bool {
    pieces(v).last() == Some(&Piece::End)
}

/// Orders two versions the way apk does, valid or not (an invalid tail
/// ranks after everything, as in apk).
pub fn compare(a: &str, b: &str) -> Ordering {
    let (pa, pb) = (pieces(a), pieces(b));
    let mut i = 0;
    loop {
        let (x, y) = (&pa[i], &pb[i]);
        if x.rank() != y.rank() || x.rank() >= Piece::End.rank() {
            return tail(x, y);
        }
        let o = match (x, y) {
            (Piece::Number(p), Piece::Number(q)) if p.starts_with('0') || q.starts_with('0') => {
                p.cmp(q)
            }
            (Piece::Initial(p), Piece::Initial(q))
            | (Piece::Number(p), Piece::Number(q))
            | (Piece::SuffixNumber(p), Piece::SuffixNumber(q))
            | (Piece::Revision(p), Piece::Revision(q)) => numeric(p, q),
            (Piece::Letter(p), Piece::Letter(q)) => p.cmp(q),
            (Piece::Suffix(p), Piece::Suffix(q)) => p.cmp(q),
            (Piece::Hash(p), Piece::Hash(q)) => p.cmp(q),
            _ => unreachable!("same rank, same kind"),
        };
        if o != Ordering::Equal {
            return o;
        }
        i += 1;
    }
}

/// Where two versions that agreed so far part: the one that goes on is
/// newer, unless what follows is a pre-release suffix.
fn tail(x: &Piece<'_>, y: &Piece<'_>) -> Ordering {
    let pre = |p: &Piece<'_>| matches!(p, Piece::Suffix(s) if *s < Suffix::None);
    if x.rank() == y.rank() {
        Ordering::Equal
    } else if pre(x) {
        Ordering::Less
    } else if pre(y) {
        Ordering::Greater
    } else {
        y.rank().cmp(&x.rank())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn lt(a: &str, b: &str) {
        assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        assert_eq!(compare(b, a), Ordering::Greater, "{b} > {a}");
    }

    #[test]
    fn suffixes_letters_and_revisions_order_as_apk_does() {
        lt("1.0_alpha1", "1.0_alpha2");
        lt("1.0_alpha9", "1.0_alpha10");
        lt("1.0_alpha", "1.0_beta");
        lt("1.0_rc3", "1.0");
        lt("1.0", "1.0_p1");
        lt("1.0_p9-r0", "1.0_p10-r0");
        lt("1.0", "1.0a");
        lt("1.0a", "1.0b");
        lt("1.0-r1", "1.0-r10");
        lt("1.0", "1.0-r0");
        lt("1.0~abc-r1", "1.0~abd-r0");
        lt("1.2.4_git20230717-r4", "1.2.4_git20230717-r5");
        lt("1.2.4", "1.2.4_git20230717-r4");
        // A leading zero makes a number part text: 001 < 01 < 1.
        lt("8.2.0015", "8.2.002");
        assert_eq!(compare("1.0-r0", "1.0-r0"), Ordering::Equal);
        assert_eq!(compare("006", "6"), Ordering::Equal);
    }

    #[test]
    fn the_grammar_is_enforced() {
        for ok in ["1", "1.2.3a_rc1_p2~12ab-r3", "0.1_pre2~1234abcd", "3.1_p16"] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "a",
            ".1",
            "1.0bc",
            "1.0a1",
            "1_foo",
            "1_",
            "1-r",
            "1-r1_p1",
            "1_alpha.1",
            "1~",
            "1~xyz",
            "1-r1-r2",
            "1 0",
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
