//! Version ordering per ecosystem, checked against real implementations:
//! RPM against Debian's `rpm` (librpm's `rpm.vercmp`, through `rpm
//! --eval` and its Lua interpreter) on hand-picked and generated pairs;
//! Alpine against apk-tools' own table of comparisons
//! (tests/fixtures/apk-tools-version.data, its test/unit/version.data —
//! no `apk` binary is installable here), plus order properties on
//! generated versions. kiln's side is the same function `kiln rescan`
//! uses (`kiln::vuln::version::compare`).

use std::cmp::Ordering;
use std::process::Command;

use kiln::vuln::version::{compare, Scheme};

/// A small deterministic generator (no test randomness between runs).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() as usize) % from.len()]
    }
}

/// Hand-picked RPM pairs: epochs, `~` (before), `^` (after), alpha vs
/// numeric segments, leading zeros, separators, releases.
const RPM_PAIRS: &[(&str, &str)] = &[
    ("1.0", "1.0"),
    ("1.0", "2.0"),
    ("2.0.1", "2.0"),
    ("2.0.1a", "2.0.1"),
    ("5.5p1", "5.5p10"),
    ("10xyz", "10.1xyz"),
    ("xyz.4", "8"),
    ("6.0.rc1", "6.0"),
    ("10b2", "10a1"),
    ("1.0aa", "1.0a"),
    ("10.0001", "10.1"),
    ("10.0001", "10.0039"),
    ("4.999.9", "5.0"),
    ("2_0", "2_0"),
    ("2.0", "2_0"),
    ("a+", "a_"),
    ("+a", "_a"),
    ("1.0~rc1", "1.0"),
    ("1.0~rc1", "1.0~rc2"),
    ("1.0~rc1~git123", "1.0~rc1"),
    ("1.0^", "1.0"),
    ("1.0^git1", "1.0"),
    ("1.0^git1", "1.01"),
    ("1.0^20160101", "1.0.1"),
    ("1.0^git1~pre", "1.0^git1"),
    ("1.0~rc1^git1", "1.0~rc1"),
    ("1:1.0-1", "2.0-1"),
    ("0:1.0-1", "1.0-1"),
    ("2:0.1-1", "1:9.9-9"),
    ("3.0.7-24.el9", "3.0.7-27.el9"),
    ("3.0.7-27.el9_4", "3.0.7-27.el9"),
    ("1.2.3-4.fc40", "1.2.3-4.fc41"),
    ("1.2.3-4", "1.2.3-4.1"),
    ("2.34-100.el9_4.2", "2.34-100.el9_4.10"),
    ("1.0-1", "1.0"),
];

/// RPM EVRs built from segments that exercise every rule.
fn generated_rpm(n: usize) -> Vec<(String, String)> {
    let mut g = Lcg(0x6b696c6e);
    let segs = [
        "0", "1", "2", "10", "01", "001", "9", "20240101", "a", "b", "rc", "git", "pre", "alpha",
        "fc40", "el9",
    ];
    let seps = [".", ".", ".", "_", "+", "~", "^", ""];
    let one = |g: &mut Lcg| {
        let mut v = String::new();
        if g.next().is_multiple_of(5) {
            v.push_str(g.pick(&["0:", "1:", "2:"]));
        }
        v.push_str(g.pick(&["1", "2", "10"]));
        for _ in 0..(g.next() % 4) {
            v.push_str(g.pick(&seps));
            v.push_str(g.pick(&segs));
        }
        if g.next().is_multiple_of(2) {
            v.push('-');
            v.push_str(g.pick(&["1", "2", "1.el9", "1.el9_4", "10.fc40"]));
        }
        v
    };
    (0..n)
        .map(|_| {
            let a = one(&mut g);
            // Often a near neighbour of `a`, so the pair differs late,
            // or `a` with other separators (rpm ties those).
            let b = if g.next().is_multiple_of(8) {
                a.replace('.', "_").replace('+', ".")
            } else if g.next().is_multiple_of(2) {
                let mut b = a.clone();
                b.push_str(g.pick(&seps));
                b.push_str(g.pick(&segs));
                if b.matches('-').count() > 1 {
                    a.clone() + "0"
                } else {
                    b
                }
            } else {
                one(&mut g)
            };
            (a, b)
        })
        .collect()
}

/// librpm's verdicts on `pairs`, through `rpm --eval`'s Lua `rpm.vercmp`
/// (in batches: one process per 200 pairs).
fn rpm_verdicts(pairs: &[(String, String)]) -> Vec<i32> {
    let mut out = vec![];
    for chunk in pairs.chunks(200) {
        let mut lua = String::from("%{lua:");
        for (a, b) in chunk {
            lua.push_str(&format!(
                "print(rpm.vercmp(\"{a}\", \"{b}\"))\nprint(\"\\n\")\n"
            ));
        }
        lua.push('}');
        let o = Command::new("rpm")
            .arg("--eval")
            .arg(&lua)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "rpm --eval failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = String::from_utf8_lossy(&o.stdout);
        let got: Vec<i32> = text
            .split_whitespace()
            .map(|w| w.parse().unwrap_or_else(|_| panic!("rpm said {w:?}")))
            .collect();
        assert_eq!(got.len(), chunk.len(), "rpm printed {text}");
        out.extend(got);
    }
    out
}

fn sign(o: Ordering) -> i32 {
    match o {
        Ordering::Less => -1,
        Ordering::Equal => 0,
        Ordering::Greater => 1,
    }
}

#[test]
fn rpm_ordering_agrees_with_librpm() {
    if !crate::require("RPM version cross-check", &["rpm"], false) {
        return;
    }
    let mut pairs: Vec<(String, String)> = RPM_PAIRS
        .iter()
        .flat_map(|(a, b)| {
            [
                (a.to_string(), b.to_string()),
                (b.to_string(), a.to_string()),
            ]
        })
        .collect();
    pairs.extend(generated_rpm(1500));
    let theirs = rpm_verdicts(&pairs);
    let mut disagree = vec![];
    for ((a, b), t) in pairs.iter().zip(&theirs) {
        let ours = compare(Scheme::Rpm, a, b).unwrap_or_else(|e| panic!("{a} vs {b}: {e}"));
        if sign(ours) != *t {
            disagree.push(format!("{a} vs {b}: kiln {}, rpm {t}", sign(ours)));
        }
    }
    assert!(
        disagree.is_empty(),
        "{} of {} pairs disagree:\n{}",
        disagree.len(),
        pairs.len(),
        disagree.join("\n")
    );
    // Every verdict occurs often: the check has teeth.
    for v in [-1, 0, 1] {
        let n = theirs.iter().filter(|x| **x == v).count();
        assert!(n > 20, "rpm said {v} only {n} times");
    }
}

/// Every line of apk-tools' table: comparisons (`<`, `>`, `=`, negated
/// with `!`), valid and invalid versions. Fuzzy operators (`~`, `<~`,
/// `>~`: dependency prefix matching, not ordering) are counted and left
/// out.
#[test]
fn apk_ordering_agrees_with_apk_tools_own_table() {
    let table =
        std::fs::read_to_string(crate::repo().join("tests/fixtures/apk-tools-version.data"))
            .unwrap();
    let (mut compared, mut validated, mut fuzzy) = (0, 0, 0);
    let mut wrong = vec![];
    for (n, raw) in table.lines().enumerate() {
        let line = raw.split('#').next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [a, op, b] => {
                let (negated, op) = match op.strip_prefix('!') {
                    Some(o) => (true, o),
                    None => (false, *op),
                };
                if op.contains('~') {
                    fuzzy += 1;
                    continue;
                }
                let got = kiln::vuln::apk::compare(a, b);
                let holds = match op {
                    "<" => got == Ordering::Less,
                    ">" => got == Ordering::Greater,
                    "=" => got == Ordering::Equal,
                    "<=" => got != Ordering::Greater,
                    ">=" => got != Ordering::Less,
                    other => panic!("line {}: operator {other}", n + 1),
                };
                compared += 1;
                if holds == negated {
                    wrong.push(format!("line {}: {line} (kiln: {got:?})", n + 1));
                }
            }
            [v] => {
                let (invalid, v) = match v.strip_prefix('!') {
                    Some(v) => (true, v),
                    None => (false, *v),
                };
                validated += 1;
                if kiln::vuln::apk::is_valid(v) == invalid {
                    wrong.push(format!(
                        "line {}: {line} (kiln: valid = {})",
                        n + 1,
                        !invalid
                    ));
                }
            }
            _ => panic!("line {}: {line}", n + 1),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} lines disagree:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(compared > 700 && validated > 25, "{compared} {validated}");
    eprintln!("apk table: {compared} comparisons, {validated} validity lines, {fuzzy} fuzzy lines skipped");
}

/// Order properties on generated Alpine versions: every pair compares
/// antisymmetrically, the sorted list is consistent (transitive), and a
/// version and its pre-release/post-release neighbours sort around it.
#[test]
fn apk_ordering_is_a_total_order_on_generated_versions() {
    let mut g = Lcg(0x61706b);
    let mut versions = vec![];
    for _ in 0..400 {
        let mut v = g.pick(&["0", "1", "2", "10", "010"]).to_string();
        for _ in 0..(g.next() % 3) {
            v.push('.');
            v.push_str(g.pick(&["0", "1", "9", "10", "01"]));
        }
        if g.next().is_multiple_of(4) {
            v.push_str(g.pick(&["a", "b", "z"]));
        }
        for _ in 0..(g.next() % 3) {
            v.push('_');
            v.push_str(g.pick(&["alpha", "beta", "pre", "rc", "cvs", "svn", "git", "hg", "p"]));
            if g.next().is_multiple_of(2) {
                v.push_str(g.pick(&["1", "2", "10", "20230717"]));
            }
        }
        if g.next().is_multiple_of(4) {
            v.push('~');
            v.push_str(g.pick(&["abc", "12ef", "0"]));
        }
        if g.next().is_multiple_of(2) {
            v.push_str(g.pick(&["-r0", "-r1", "-r10"]));
        }
        assert!(kiln::vuln::apk::is_valid(&v), "{v}");
        versions.push(v);
    }
    let cmp = |a: &String, b: &String| kiln::vuln::apk::compare(a, b);
    for a in &versions {
        for b in &versions {
            assert_eq!(cmp(a, b), cmp(b, a).reverse(), "{a} vs {b}");
        }
    }
    let mut sorted = versions.clone();
    sorted.sort_by(cmp);
    for w in sorted.windows(2) {
        assert_ne!(cmp(&w[0], &w[1]), Ordering::Greater, "{} {}", w[0], w[1]);
    }
    for i in 0..sorted.len() {
        for j in i..sorted.len() {
            assert_ne!(cmp(&sorted[i], &sorted[j]), Ordering::Greater);
        }
    }
    for base in ["1.2.3", "1.2.3a"] {
        let b = base.to_string();
        for pre in ["_alpha", "_beta1", "_pre2", "_rc10"] {
            assert_eq!(
                cmp(&format!("{base}{pre}"), &b),
                Ordering::Less,
                "{base}{pre}"
            );
        }
        for post in ["_p1", "_git2", "-r0", "~ab"] {
            assert_eq!(
                cmp(&format!("{base}{post}"), &b),
                Ordering::Greater,
                "{base}{post}"
            );
        }
    }
    assert_eq!(cmp(&"1.2.3.0".into(), &"1.2.3".into()), Ordering::Greater);
}
