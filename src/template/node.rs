//! The first stage of reading a template: the TOML document as a tree of
//! [`Node`]s that keep their byte spans, with every string already parsed
//! into literal text and `${…}` expressions.

use std::sync::Arc;

use super::diagnostic::{Diagnostic, Diagnostics, SourceFile, Span};
use super::expr::{self, Interpolated};

/// A TOML value with its place in the file.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Str(Interpolated),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    List(Vec<Node>),
    Table(Vec<Entry>),
}

/// A key of a table and its value.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Node,
}

impl Node {
    /// The TOML type name, for "expected …, found …" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::Str(_) => "a string",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Datetime(_) => "a date-time",
            NodeKind::List(_) => "an array",
            NodeKind::Table(_) => "a table",
        }
    }

    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.kind {
            NodeKind::Table(e) => Some(e),
            _ => None,
        }
    }

    /// The entry for `key` in a table node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().find(|e| e.key == key)
    }

    /// The literal text of a string node without `${…}`.
    pub fn as_literal_str(&self) -> Option<String> {
        match &self.kind {
            NodeKind::Str(s) => s.as_literal(),
            _ => None,
        }
    }
}

/// Parses TOML text into a node tree; syntax errors of the TOML itself and
/// of every `${…}` are all collected.
pub fn parse_document(file: &Arc<SourceFile>, diags: &mut Diagnostics) -> Option<Node> {
    let doc = match toml_edit::Document::parse(file.text.clone()) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            diags.push(
                Diagnostic::at(file, span, format!("invalid TOML: {msg}")).with_label("here"),
            );
            return None;
        }
    };
    let conv = Converter {
        file,
        src: &file.text,
    };
    Some(conv.table(doc.as_table(), 0..file.text.len(), diags))
}

struct Converter<'a> {
    file: &'a Arc<SourceFile>,
    src: &'a str,
}

impl Converter<'_> {
    fn table(&self, t: &toml_edit::Table, fallback: Span, diags: &mut Diagnostics) -> Node {
        let span = t.span().unwrap_or(fallback);
        let mut entries = vec![];
        for (key, item) in t.iter() {
            let key_span = t.key(key).and_then(|k| k.span()).unwrap_or(span.clone());
            if let Some(value) = self.item(item, key_span.clone(), diags) {
                entries.push(Entry {
                    key: key.to_string(),
                    key_span,
                    value,
                });
            }
        }
        Node {
            kind: NodeKind::Table(entries),
            span,
        }
    }

    fn item(
        &self,
        item: &toml_edit::Item,
        key_span: Span,
        diags: &mut Diagnostics,
    ) -> Option<Node> {
        match item {
            toml_edit::Item::None => None,
            toml_edit::Item::Value(v) => Some(self.value(v, key_span, diags)),
            toml_edit::Item::Table(t) => Some(self.table(t, key_span, diags)),
            toml_edit::Item::ArrayOfTables(a) => {
                let span = a.span().unwrap_or(key_span.clone());
                let items = a
                    .iter()
                    .map(|t| self.table(t, key_span.clone(), diags))
                    .collect();
                Some(Node {
                    kind: NodeKind::List(items),
                    span,
                })
            }
        }
    }

    fn value(&self, v: &toml_edit::Value, fallback: Span, diags: &mut Diagnostics) -> Node {
        use toml_edit::Value as V;
        let span = v.span().unwrap_or(fallback);
        let kind = match v {
            V::String(s) => NodeKind::Str(self.string(s.value(), span.clone(), diags)),
            V::Integer(i) => NodeKind::Int(*i.value()),
            V::Float(f) => NodeKind::Float(*f.value()),
            V::Boolean(b) => NodeKind::Bool(*b.value()),
            V::Datetime(d) => NodeKind::Datetime(d.value().to_string()),
            V::Array(a) => NodeKind::List(
                a.iter()
                    .map(|v| self.value(v, span.clone(), diags))
                    .collect(),
            ),
            V::InlineTable(t) => {
                let mut entries = vec![];
                for (key, value) in t.iter() {
                    let key_span = t.key(key).and_then(|k| k.span()).unwrap_or(span.clone());
                    entries.push(Entry {
                        key: key.to_string(),
                        key_span: key_span.clone(),
                        value: self.value(value, key_span, diags),
                    });
                }
                NodeKind::Table(entries)
            }
        };
        Node { kind, span }
    }

    /// Parses a string's `${…}`; maps positions through escapes and
    /// multi-line strings ([`strpos`](super::strpos)).
    fn string(&self, value: &str, span: Span, diags: &mut Diagnostics) -> Interpolated {
        let raw = self.src.get(span.clone()).unwrap_or("");
        let map = super::strpos::value_offsets(raw, value);
        let start = span.start;
        let offset_of = move |i: usize| {
            map.as_ref()
                .and_then(|m| m.get(i))
                .map_or(start, |o| start + o)
        };
        match expr::parse(value, span.clone(), &offset_of) {
            Ok(t) => t,
            Err(e) => {
                diags.push(
                    Diagnostic::at(self.file, e.span, format!("bad interpolation: {}", e.message))
                        .with_label("here")
                        .with_help("`${…}` holds a reference such as `var.name` or a call such as `upper(var.name)`; write `$${` for a literal `${`"),
                );
                Interpolated::invalid(span)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            path: "t.toml".into(),
            name: "t.toml".into(),
            text: text.into(),
        })
    }

    #[test]
    fn keeps_spans_of_keys_and_values() {
        let f = file("[image]\nname = \"web\"\n");
        let mut d = Diagnostics::default();
        let root = parse_document(&f, &mut d).unwrap();
        let image = &root.get("image").unwrap().value;
        let name = image.get("name").unwrap();
        assert_eq!(&f.text[name.key_span.clone()], "name");
        assert_eq!(&f.text[name.value.span.clone()], "\"web\"");
    }

    #[test]
    fn reports_every_bad_interpolation_and_toml_errors() {
        let f = file("a = \"${var.x\"\nb = \"${}\"\n");
        let mut d = Diagnostics::default();
        parse_document(&f, &mut d).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d.0[0].location().unwrap().1, 1);
        assert_eq!(d.0[1].location().unwrap().1, 2);

        // Through an escape, the error points at the `${`, not the string.
        let f = file("a = \"\\u00e9 ${}\"\n");
        let mut d = Diagnostics::default();
        parse_document(&f, &mut d).unwrap();
        assert_eq!(d.0[0].location().unwrap().2, 13, "{}", d.0[0]);

        let f = file("a = = 1\n");
        let mut d = Diagnostics::default();
        assert!(parse_document(&f, &mut d).is_none());
        assert_eq!(d.0[0].location().unwrap().1, 1);
    }
}
