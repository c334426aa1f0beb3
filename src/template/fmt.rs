//! `kiln fmt`: the canonical layout of a template, built on toml_edit so
//! comments survive. Sections come in a fixed order (image, variables,
//! secrets, locals, source, build), keys are unindented with ` = `, single
//! line arrays and inline tables are spaced the same way everywhere, blank
//! lines collapse to one and each table is preceded by exactly one. The
//! result is a fixed point: formatting it again changes nothing.

use toml_edit::{DocumentMut, Item, Table, Value};

const SECTION_ORDER: &[&str] = &["image", "variables", "secrets", "locals", "source", "build"];

/// Formats template text; the error is TOML's own message and byte span.
pub fn format_template(text: &str) -> Result<String, (String, std::ops::Range<usize>)> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        (e.message().trim().to_string(), e.span().unwrap_or(0..0))
    })?;
    let root = doc.as_table_mut();
    normalize_table(root, None);
    let keys: Vec<String> = root.iter().map(|(k, _)| k.to_string()).collect();
    for key in keys {
        let rank = SECTION_ORDER
            .iter()
            .position(|s| *s == key)
            .unwrap_or(SECTION_ORDER.len()) as isize;
        if let Some(item) = root.get_mut(&key) {
            normalize_item(item, Some(rank));
        }
    }
    let trailing = comments_only(doc.trailing().as_str().unwrap_or(""));
    doc.set_trailing(trailing);
    let out = doc.to_string();
    let out = out.trim_start_matches('\n').trim_end().to_string();
    Ok(format!("{out}\n"))
}

fn normalize_item(item: &mut Item, rank: Option<isize>) {
    match item {
        Item::Table(t) => normalize_table(t, rank),
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                normalize_table(t, rank);
            }
        }
        Item::Value(v) => normalize_value(v),
        Item::None => {}
    }
}

fn normalize_table(t: &mut Table, rank: Option<isize>) {
    if let (Some(rank), Some(pos)) = (rank, t.position()) {
        t.set_position(rank * 1_000_000 + pos);
    }
    if !t.is_implicit() && rank.is_some() {
        // Exactly one blank line before a header; its comments kept.
        let raw = t.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
        let prefix = keep_comments_and_one_blank(raw)
            .trim_start_matches('\n')
            .to_string();
        let suffix = trailing_comment(t.decor().suffix().and_then(|p| p.as_str()).unwrap_or(""));
        t.decor_mut().set_prefix(format!("\n{prefix}"));
        t.decor_mut().set_suffix(suffix);
    }
    for (mut key, item) in t.iter_mut() {
        if item.is_value() {
            let prefix = key
                .leaf_decor()
                .prefix()
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_string();
            key.leaf_decor_mut()
                .set_prefix(keep_comments_and_one_blank(&prefix));
            key.leaf_decor_mut().set_suffix(" ");
        }
        normalize_item(item, rank);
    }
}

fn normalize_value(v: &mut Value) {
    let suffix = trailing_comment(v.decor().suffix().and_then(|p| p.as_str()).unwrap_or(""));
    match v {
        Value::Array(a) => {
            let multiline = a.to_string().contains('\n');
            if multiline {
                for item in a.iter_mut() {
                    normalize_nested(item);
                }
            } else {
                for item in a.iter_mut() {
                    normalize_nested(item);
                }
                a.fmt();
            }
        }
        Value::InlineTable(t) => {
            for (_, item) in t.iter_mut() {
                normalize_nested(item);
            }
            t.fmt();
        }
        _ => {}
    }
    v.decor_mut().set_prefix(" ");
    v.decor_mut().set_suffix(suffix);
}

/// Values inside arrays and inline tables: spacing only, comments kept.
fn normalize_nested(v: &mut Value) {
    match v {
        Value::Array(a) if !a.to_string().contains('\n') => {
            for item in a.iter_mut() {
                normalize_nested(item);
            }
            a.fmt();
        }
        Value::InlineTable(t) => {
            for (_, item) in t.iter_mut() {
                normalize_nested(item);
            }
            t.fmt();
        }
        _ => {}
    }
}

/// Comment lines of a decor prefix, unindented, each ending in `\n`.
fn comments_only(prefix: &str) -> String {
    prefix
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// A key's prefix: its comment lines, unindented, with runs of blank lines
/// collapsed to one (grouping kept, noise dropped).
fn keep_comments_and_one_blank(prefix: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    let lines: Vec<&str> = prefix.split('\n').collect();
    // The last piece is the indentation before the key itself.
    for line in &lines[..lines.len().saturating_sub(1)] {
        let line = line.trim();
        if line.is_empty() {
            blank = true;
        } else {
            if blank {
                out.push('\n');
                blank = false;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    if blank {
        out.push('\n');
    }
    out
}

/// A trailing `# comment` after a value or header, kept with its spacing.
fn trailing_comment(suffix: &str) -> String {
    let s = suffix.trim_end();
    if s.trim_start().starts_with('#') {
        s.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSY: &str = r#"# build first, on purpose
[[build]]
  name="web"   # the name
sources = [ "oci.a","oci.b" ]


[source.oci.a]
from = "scratch"
[source.oci.b]
from = "scratch"
labels = {a="b",   c = "d"}
# the image
[image]
    name  =  "web"
version = "1.0.0"
"#;

    #[test]
    fn canonical_order_spacing_and_comments() {
        let out = format_template(MESSY).unwrap();
        let image = out.find("[image]").unwrap();
        let source = out.find("[source.oci.a]").unwrap();
        let build = out.find("[[build]]").unwrap();
        assert!(image < source && source < build, "{out}");
        assert!(
            out.contains("# the image\n[image]\nname = \"web\""),
            "{out}"
        );
        assert!(out.contains("sources = [\"oci.a\", \"oci.b\"]"), "{out}");
        assert!(out.contains("labels = { a = \"b\", c = \"d\" }"), "{out}");
        assert!(out.contains("name = \"web\"   # the name"), "{out}");
        assert!(
            out.contains("# build first, on purpose\n[[build]]"),
            "{out}"
        );
        assert!(!out.contains("\n\n\n"), "{out}");
        let header = format_template("# file header\n\n[image]\nname = \"x\"\n").unwrap();
        assert_eq!(
            header, "# file header\n\n[image]\nname = \"x\"\n",
            "a blank line after a header comment is kept"
        );
    }

    #[test]
    fn formatting_is_idempotent() {
        let once = format_template(MESSY).unwrap();
        assert_eq!(format_template(&once).unwrap(), once);
    }

    #[test]
    fn array_of_tables_keep_their_children() {
        let text = "[[build]]\nname = \"a\"\n[[build.provisioner]]\ntype = \"shell\"\n[[build]]\nname = \"b\"\n[image]\nname = \"x\"\n";
        let out = format_template(text).unwrap();
        let reparsed: DocumentMut = out.parse().unwrap();
        let builds = reparsed["build"].as_array_of_tables().unwrap();
        assert_eq!(builds.len(), 2);
        assert!(builds.get(0).unwrap().contains_key("provisioner"));
        assert!(!builds.get(1).unwrap().contains_key("provisioner"));
    }

    #[test]
    fn bad_toml_is_an_error_with_a_span() {
        let (msg, span) = format_template("a = = 1").unwrap_err();
        assert!(!msg.is_empty());
        assert_eq!(span.start, 4);
    }
}
