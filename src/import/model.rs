//! The Packer template as the importer sees it, whatever it was written in:
//! blocks with labels, attributes and expressions, each with its place in
//! the Packer file. The HCL2 and legacy JSON readers both produce this, so
//! the mapping to kiln is written once.

use std::sync::Arc;

use crate::template::{SourceFile, Span};

/// A place in a Packer file.
#[derive(Debug, Clone)]
pub struct Loc {
    pub file: Arc<SourceFile>,
    pub span: Span,
}

impl Loc {
    /// `file:line:col`.
    pub fn show(&self) -> String {
        let (line, col) = self.file.line_col(self.span.start);
        format!("{}:{line}:{col}", self.file.name)
    }
}

/// A Packer expression, reduced to what kiln can say plus what it cannot.
#[derive(Debug, Clone)]
pub enum Expr {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// A string with interpolations (`"a-${var.x}"`, `"{{user `x`}}"`).
    Template(Vec<Part>),
    /// `var.x`, `local.y`, `source.name`, `path.root`, `data.T.N.attr`.
    Ref(Vec<String>),
    /// `name(args…)`.
    Call(String, Vec<Node>),
    /// `a OP b`, kept for `validation` conditions (`==`, `>=`, `&&`, …).
    BinOp(String, Box<Node>, Box<Node>),
    /// `cond ? a : b`.
    Cond(Box<Node>, Box<Node>, Box<Node>),
    /// Something kiln's `${…}` cannot express, named for the report
    /// ("a for expression", "the build variable `{{ .Path }}`").
    Other(String),
}

/// One piece of a string template.
#[derive(Debug, Clone)]
pub enum Part {
    Lit(String),
    Interp(Node),
}

/// An expression and where it is.
#[derive(Debug, Clone)]
pub struct Node {
    pub expr: Expr,
    pub loc: Loc,
}

impl Node {
    /// The string when the node is a plain literal.
    pub fn as_str(&self) -> Option<&str> {
        match &self.expr {
            Expr::Str(s) => Some(s),
            Expr::Template(parts) if parts.is_empty() => Some(""),
            _ => None,
        }
    }

    /// The reference path when the node is (or is a template of exactly) a reference.
    pub fn as_ref_path(&self) -> Option<&[String]> {
        match &self.expr {
            Expr::Ref(p) => Some(p),
            Expr::Template(parts) => match parts.as_slice() {
                [Part::Interp(n)] => n.as_ref_path(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The call when the node is (or is a template of exactly) a function call.
    pub fn as_call(&self) -> Option<(&str, &[Node])> {
        match &self.expr {
            Expr::Call(name, args) => Some((name, args)),
            Expr::Template(parts) => match parts.as_slice() {
                [Part::Interp(n)] => n.as_call(),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match &self.expr {
            Expr::Bool(b) => Some(*b),
            Expr::Str(s) if s == "true" || s == "false" => Some(s == "true"),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Node]> {
        match &self.expr {
            Expr::List(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(String, Node)]> {
        match &self.expr {
            Expr::Map(entries) => Some(entries),
            _ => None,
        }
    }
}

/// `key = value` in a block.
#[derive(Debug, Clone)]
pub struct Attr {
    pub key: String,
    pub value: Node,
    /// The whole attribute (key and value).
    pub loc: Loc,
}

/// `kind "label" … { … }`.
#[derive(Debug, Clone)]
pub struct Block {
    pub kind: String,
    pub labels: Vec<String>,
    pub attrs: Vec<Attr>,
    pub blocks: Vec<Block>,
    pub loc: Loc,
}

impl Block {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.key == key)
    }

    pub fn value(&self, key: &str) -> Option<&Node> {
        self.attr(key).map(|a| &a.value)
    }

    pub fn blocks<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Block> + 'a {
        self.blocks.iter().filter(move |b| b.kind == kind)
    }

    /// A nested setting written as a block (HCL) or as a map (JSON, or HCL
    /// `x = { … }`), as a block either way.
    pub fn nested(&self, key: &str) -> Vec<Block> {
        let mut out: Vec<Block> = self.blocks(key).cloned().collect();
        if let Some(a) = self.attr(key) {
            let maps: Vec<&Node> = match &a.value.expr {
                Expr::Map(_) => vec![&a.value],
                Expr::List(items) => items.iter().collect(),
                _ => vec![],
            };
            for m in maps {
                if let Some(entries) = m.as_map() {
                    out.push(Block {
                        kind: key.to_string(),
                        labels: vec![],
                        attrs: entries
                            .iter()
                            .map(|(k, v)| Attr {
                                key: k.clone(),
                                value: v.clone(),
                                loc: v.loc.clone(),
                            })
                            .collect(),
                        blocks: vec![],
                        loc: m.loc.clone(),
                    });
                }
            }
        }
        out
    }
}

/// Everything read from the Packer input: top-level blocks of every file,
/// in order, and variable values from `.pkrvars.hcl` files.
#[derive(Debug, Default)]
pub struct Input {
    pub blocks: Vec<Block>,
    /// `name = value` from var-files, later files winning.
    pub var_values: Vec<Attr>,
    /// The folder Packer's `path.root` names.
    pub root: std::path::PathBuf,
    /// True when read from a legacy JSON template.
    pub legacy_json: bool,
}
