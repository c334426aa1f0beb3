//! Input variables: their declarations (`[variables.NAME]`) and their
//! values, taken lowest to highest precedence from the default, each
//! `--var-file`, `KILN_VAR_<name>` and `--var NAME=VALUE`, then checked
//! against type, `allowed`, `pattern`, `min` and `max`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceFile, Span};
use super::node::{Node, NodeKind};
use super::value::{format_number, Value};

/// Where variable values come from, besides defaults.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `--var-file` paths, in order.
    pub var_files: Vec<PathBuf>,
    /// `KILN_VAR_<name>` environment variables as `(name, value)`.
    pub env: Vec<(String, String)>,
    /// `--var NAME=VALUE` arguments, in order.
    pub cli: Vec<String>,
}

impl VarInputs {
    /// Reads `KILN_VAR_*` from the process environment.
    pub fn with_process_env(mut self) -> Self {
        self.env = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix("KILN_VAR_").map(|n| (n.to_string(), v)))
            .collect();
        self
    }
}

/// A declared variable's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VarType {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl VarType {
    const NAMES: [&'static str; 5] = ["string", "number", "bool", "list", "map"];

    fn parse(s: &str) -> Option<VarType> {
        Some(match s {
            "string" => VarType::String,
            "number" => VarType::Number,
            "bool" => VarType::Bool,
            "list" => VarType::List,
            "map" => VarType::Map,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn of(v: &Value) -> Option<VarType> {
        VarType::parse(v.type_name())
    }
}

/// `[variables.NAME]`.
#[derive(Debug, Clone)]
pub struct VariableDecl {
    pub name: String,
    pub span: Span,
    pub ty: VarType,
    pub default: Option<Value>,
    pub description: Option<String>,
    pub sensitive: bool,
    allowed: Option<(Vec<Value>, Span)>,
    pattern: Option<(regex::Regex, Span)>,
    min: Option<(f64, Span)>,
    max: Option<(f64, Span)>,
}

const KEYS: &[&str] = &[
    "type",
    "default",
    "description",
    "allowed",
    "pattern",
    "min",
    "max",
    "sensitive",
];

/// Reads the declarations from the `variables` table.
pub fn declarations(
    file: &Arc<SourceFile>,
    table: Option<&Node>,
    diags: &mut Diagnostics,
) -> Vec<VariableDecl> {
    let Some(table) = table else { return vec![] };
    let Some(entries) = table.entries() else {
        diags.push(Diagnostic::at(
            file,
            table.span.clone(),
            "`variables` must be a table of `[variables.NAME]` tables",
        ));
        return vec![];
    };
    let mut out = vec![];
    for e in entries {
        let Some(fields) = e.value.entries() else {
            diags.push(
                Diagnostic::at(
                    file,
                    e.value.span.clone(),
                    format!("variable `{}` must be a table", e.key),
                )
                .with_help(format!(
                    "write `[variables.{}]` with `type` and `default`",
                    e.key
                )),
            );
            continue;
        };
        let ctx = format!("variables.{}", e.key);
        let mut decl = VariableDecl {
            name: e.key.clone(),
            span: e.key_span.clone(),
            ty: VarType::String,
            default: None,
            description: None,
            sensitive: false,
            allowed: None,
            pattern: None,
            min: None,
            max: None,
        };
        let mut declared_type = None;
        for f in fields {
            let literal = literal_value(file, &f.value, diags);
            let bad = |want: &str| {
                Diagnostic::at(
                    file,
                    f.value.span.clone(),
                    format!(
                        "`{ctx}.{}` must be {want}, found {}",
                        f.key,
                        f.value.type_name()
                    ),
                )
            };
            match f.key.as_str() {
                "type" => match f.value.as_literal_str().as_deref().and_then(VarType::parse) {
                    Some(t) => declared_type = Some((t, f.value.span.clone())),
                    None => diags.push(
                        bad("one of \"string\", \"number\", \"bool\", \"list\", \"map\"")
                            .with_help(
                                f.value
                                    .as_literal_str()
                                    .and_then(|s| did_you_mean(&s, VarType::NAMES))
                                    .unwrap_or_default(),
                            ),
                    ),
                },
                "default" => decl.default = literal,
                "description" => decl.description = f.value.as_literal_str(),
                "sensitive" => match literal {
                    Some(Value::Bool(b)) => decl.sensitive = b,
                    _ => diags.push(bad("a boolean")),
                },
                "allowed" => match literal {
                    Some(Value::List(l)) => decl.allowed = Some((l, f.value.span.clone())),
                    _ => diags.push(bad("an array")),
                },
                "pattern" => match f.value.as_literal_str() {
                    Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
                        Ok(re) => decl.pattern = Some((re, f.value.span.clone())),
                        Err(err) => diags.push(Diagnostic::at(
                            file,
                            f.value.span.clone(),
                            format!("`{ctx}.pattern` is not a valid regular expression: {err}"),
                        )),
                    },
                    None => diags.push(bad("a string")),
                },
                "min" | "max" => match literal {
                    Some(Value::Num(n)) => {
                        let slot = if f.key == "min" {
                            &mut decl.min
                        } else {
                            &mut decl.max
                        };
                        *slot = Some((n, f.value.span.clone()));
                    }
                    _ => diags.push(bad("a number")),
                },
                other => diags.push(
                    Diagnostic::at(
                        file,
                        f.key_span.clone(),
                        format!("unknown key `{other}` in `{ctx}`"),
                    )
                    .with_label("here")
                    .with_help(
                        did_you_mean(other, KEYS.iter().copied())
                            .unwrap_or_else(|| format!("`{ctx}` takes: {}", KEYS.join(", "))),
                    ),
                ),
            }
        }
        decl.ty = match (&declared_type, &decl.default) {
            (Some((t, _)), _) => *t,
            (None, Some(d)) => VarType::of(d).unwrap_or(VarType::String),
            (None, None) => VarType::String,
        };
        if let (Some(d), Some(e)) = (&decl.default, fields.iter().find(|f| f.key == "default")) {
            if VarType::of(d) != Some(decl.ty) {
                diags.push(Diagnostic::at(
                    file,
                    e.value.span.clone(),
                    format!(
                        "default of `{}` is a {}, but its type is {}",
                        decl.name,
                        d.type_name(),
                        decl.ty.name()
                    ),
                ));
            } else if let Some(msg) = decl.check(d) {
                diags.push(Diagnostic::at(
                    file,
                    e.value.span.clone(),
                    format!("default of `{}`: {msg}", decl.name),
                ));
            }
        }
        out.push(decl);
    }
    out
}

/// A variable declaration's value must be a literal.
fn literal_value(file: &Arc<SourceFile>, node: &Node, diags: &mut Diagnostics) -> Option<Value> {
    Some(match &node.kind {
        NodeKind::Str(s) => match s.as_literal() {
            Some(l) => Value::Str(l),
            None => {
                diags.push(
                    Diagnostic::at(
                        file,
                        node.span.clone(),
                        "variable declarations cannot use `${…}`",
                    )
                    .with_help("use a `[locals]` entry to compute a value from variables"),
                );
                return None;
            }
        },
        NodeKind::Int(i) => Value::Num(*i as f64),
        NodeKind::Float(f) => Value::Num(*f),
        NodeKind::Bool(b) => Value::Bool(*b),
        NodeKind::Datetime(d) => Value::Str(d.clone()),
        NodeKind::List(l) => Value::List(
            l.iter()
                .map(|n| literal_value(file, n, diags))
                .collect::<Option<_>>()?,
        ),
        NodeKind::Table(t) => Value::Map(
            t.iter()
                .map(|e| Some((e.key.clone(), literal_value(file, &e.value, diags)?)))
                .collect::<Option<_>>()?,
        ),
    })
}

impl VariableDecl {
    /// Why `v` is not acceptable, if it is not. Never quotes a sensitive value.
    fn check(&self, v: &Value) -> Option<String> {
        let shown = |v: &Value| {
            if self.sensitive {
                "the value".to_string()
            } else {
                format!("`{}`", show(v))
            }
        };
        if let Some((allowed, _)) = &self.allowed {
            if !allowed.contains(v) {
                let list = allowed.iter().map(show).collect::<Vec<_>>().join(", ");
                return Some(format!(
                    "{} is not one of the allowed values: {list}",
                    shown(v)
                ));
            }
        }
        if let (Some((re, _)), Value::Str(s)) = (&self.pattern, v) {
            if !re.is_match(s) {
                return Some(format!(
                    "{} does not match the pattern `{}`",
                    shown(v),
                    re.as_str()
                        .trim_start_matches("^(?:")
                        .trim_end_matches(")$")
                ));
            }
        }
        if let Value::Num(n) = v {
            if let Some((min, _)) = self.min.clone().filter(|(m, _)| n < m) {
                return Some(format!(
                    "{} is below the minimum {}",
                    shown(v),
                    format_number(min)
                ));
            }
            if let Some((max, _)) = self.max.clone().filter(|(m, _)| n > m) {
                return Some(format!(
                    "{} is above the maximum {}",
                    shown(v),
                    format_number(max)
                ));
            }
        }
        None
    }

    /// The span to point at when a value from outside the template fails
    /// a check: the constraint it failed, else the declaration.
    fn constraint_span(&self) -> Span {
        self.allowed
            .as_ref()
            .map(|a| a.1.clone())
            .or(self.pattern.as_ref().map(|p| p.1.clone()))
            .or(self.min.as_ref().map(|m| m.1.clone()))
            .or(self.max.as_ref().map(|m| m.1.clone()))
            .unwrap_or(self.span.clone())
    }

    /// Parses a value given as text (`--var`, environment) by the declared type.
    fn parse_text(&self, text: &str) -> Result<Value, String> {
        match self.ty {
            VarType::String => Ok(Value::Str(text.to_string())),
            VarType::Number => text
                .trim()
                .parse::<f64>()
                .map(Value::Num)
                .map_err(|_| "expected a number".to_string()),
            VarType::Bool => match text.trim() {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err("expected `true` or `false`".into()),
            },
            VarType::List | VarType::Map => {
                let parsed = toml_edit::Value::from_str(text).map_err(|_| {
                    format!(
                        "expected a TOML {}, such as {}",
                        self.ty.name(),
                        if self.ty == VarType::List {
                            "[\"a\", \"b\"]"
                        } else {
                            "{ a = \"b\" }"
                        }
                    )
                })?;
                let v = Value::from_toml(&parsed);
                if VarType::of(&v) == Some(self.ty) {
                    Ok(v)
                } else {
                    Err(format!(
                        "expected a {}, found a {}",
                        self.ty.name(),
                        v.type_name()
                    ))
                }
            }
        }
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Str(s) => format!("{s:?}"),
        other => super::value::display_value(other),
    }
}

/// Where a value was written, when it was written in a file.
type Place = Option<(Arc<SourceFile>, Span)>;

/// Resolves every variable's value by precedence and checks it. Sensitive
/// variables come back wrapped in [`Value::Sensitive`].
pub fn resolve(
    template: &Arc<SourceFile>,
    decls: &[VariableDecl],
    inputs: &VarInputs,
    diags: &mut Diagnostics,
) -> BTreeMap<String, Value> {
    // (value, where it came from: file + span, or a description)
    let mut chosen: BTreeMap<&str, (Value, Place, String)> = BTreeMap::new();
    let find = |name: &str| decls.iter().find(|d| d.name == name);
    let names = || decls.iter().map(|d| d.name.as_str());
    for d in decls {
        if let Some(v) = &d.default {
            chosen.insert(&d.name, (v.clone(), None, "default".into()));
        }
    }
    for path in &inputs.var_files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                diags.push(Diagnostic::new(format!(
                    "cannot read --var-file `{}`: {e}",
                    path.display()
                )));
                continue;
            }
        };
        let file = Arc::new(SourceFile {
            path: path.clone(),
            name: path.display().to_string(),
            text,
        });
        let doc = match toml_edit::Document::parse(file.text.clone()) {
            Ok(d) => d,
            Err(e) => {
                diags.push(Diagnostic::at(
                    &file,
                    e.span().unwrap_or(0..0),
                    format!("invalid TOML: {}", e.message().trim()),
                ));
                continue;
            }
        };
        for (key, item) in doc.as_table().iter() {
            let key_span = doc
                .as_table()
                .key(key)
                .and_then(|k| k.span())
                .unwrap_or(0..0);
            let Some(decl) = find(key) else {
                diags.push(
                    Diagnostic::at(
                        &file,
                        key_span,
                        format!("unknown variable `{key}` in var-file"),
                    )
                    .with_label("here")
                    .with_help(did_you_mean(key, names()).unwrap_or_else(|| {
                        "declare it in the template as `[variables.NAME]`".into()
                    })),
                );
                continue;
            };
            let Some(value) = item.as_value() else {
                diags.push(Diagnostic::at(
                    &file,
                    key_span,
                    format!("`{key}` must be a value, not a table"),
                ));
                continue;
            };
            let span = value.span().unwrap_or(key_span);
            let v = Value::from_toml(value);
            if VarType::of(&v) != Some(decl.ty) {
                diags.push(
                    Diagnostic::at(
                        &file,
                        span,
                        format!(
                            "`{key}` is declared as {}, found a {}",
                            decl.ty.name(),
                            v.type_name()
                        ),
                    )
                    .with_label("here"),
                );
                continue;
            }
            chosen.insert(
                &decl.name,
                (
                    v,
                    Some((file.clone(), span)),
                    format!("--var-file {}", path.display()),
                ),
            );
        }
    }
    let mut text_value = |name: &str,
                          text: &str,
                          origin: String,
                          unknown_is_error: bool,
                          diags: &mut Diagnostics| {
        let Some(decl) = find(name) else {
            if unknown_is_error {
                let mut d = Diagnostic::new(format!("{origin}: unknown variable `{name}`"));
                if let Some(h) = did_you_mean(name, names()) {
                    d = d.with_help(h);
                }
                diags.push(d);
            }
            return;
        };
        match decl.parse_text(text) {
            Ok(v) => {
                chosen.insert(&decl.name, (v, None, origin));
            }
            Err(msg) => diags.push(
                Diagnostic::at(
                    template,
                    decl.span.clone(),
                    format!("{origin}: bad value for `{name}`: {msg}"),
                )
                .with_label(format!("`{name}` is declared as {}", decl.ty.name())),
            ),
        }
    };
    for (name, value) in &inputs.env {
        // Unrelated KILN_VAR_ variables may be meant for other templates.
        text_value(name, value, format!("KILN_VAR_{name}"), false, diags);
    }
    for arg in &inputs.cli {
        match arg.split_once('=') {
            Some((name, value)) => text_value(name.trim(), value, "--var".into(), true, diags),
            None => diags.push(Diagnostic::new(format!(
                "--var `{arg}`: expected NAME=VALUE"
            ))),
        }
    }
    let mut out = BTreeMap::new();
    for d in decls {
        match chosen.remove(d.name.as_str()) {
            // Unknown from here on, so references to it add no errors of their own.
            None => {
                out.insert(d.name.clone(), Value::Unknown);
                diags.push(
                    Diagnostic::at(
                        template,
                        d.span.clone(),
                        format!("variable `{}` has no value", d.name),
                    )
                    .with_label("declared here without a default")
                    .with_help(format!(
                        "set it with `--var {}=…`, a `--var-file`, or `KILN_VAR_{}`",
                        d.name, d.name
                    )),
                )
            }
            Some((v, place, origin)) => {
                if let Some(msg) = d.check(&v) {
                    let msg = format!("{origin}: variable `{}`: {msg}", d.name);
                    diags.push(match place {
                        Some((file, span)) => Diagnostic::at(&file, span, msg).with_label("here"),
                        None => Diagnostic::at(template, d.constraint_span(), msg)
                            .with_label("required here"),
                    });
                    out.insert(d.name.clone(), Value::Unknown);
                    continue;
                }
                out.insert(d.name.clone(), if d.sensitive { v.sensitive() } else { v });
            }
        }
    }
    out
}
