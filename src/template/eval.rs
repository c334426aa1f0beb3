//! Evaluation of `${…}` against a [`Scope`]: references (`var.*`,
//! `local.*`, `secret.*`, `image.*`, `build.*`, `source.*`), the function
//! library, lazy locals with cycle detection, and checking a node against
//! its schema [`Kind`] while evaluating it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use sha2::Digest as _;

use super::diagnostic::{did_you_mean, Diagnostic, Diagnostics, SourceFile, Span};
use super::expr::{Expr, ExprKind, Interpolated, Part};
use super::node::{Node, NodeKind};
use super::schema::{parse_duration, parse_size, Field, Kind};
use super::value::{format_number, Value};

/// What `build.*` and `source.*` refer to while a job's strings are evaluated.
#[derive(Debug, Clone)]
pub struct JobRefs {
    pub build_name: String,
    pub source_type: String,
    pub source_name: String,
}

/// Everything a reference can name, plus the errors found so far.
pub struct Scope<'a> {
    pub file: &'a Arc<SourceFile>,
    pub dir: &'a Path,
    pub vars: &'a BTreeMap<String, Value>,
    pub secrets: &'a BTreeMap<String, Value>,
    pub locals: &'a BTreeMap<String, Node>,
    pub image: &'a BTreeMap<String, Node>,
    pub build_id: &'a str,
    job: RefCell<Option<JobRefs>>,
    memo: RefCell<HashMap<String, Option<Value>>>,
    stack: RefCell<Vec<String>>,
    diags: RefCell<Diagnostics>,
    seen: RefCell<HashSet<(usize, usize, String)>>,
}

const FUNCTIONS: &[&str] = &[
    "env",
    "file",
    "sha256",
    "timestamp",
    "uuid",
    "lower",
    "upper",
    "replace",
    "join",
    "split",
    "format",
    "trimspace",
    "base64encode",
];

impl<'a> Scope<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        file: &'a Arc<SourceFile>,
        dir: &'a Path,
        vars: &'a BTreeMap<String, Value>,
        secrets: &'a BTreeMap<String, Value>,
        locals: &'a BTreeMap<String, Node>,
        image: &'a BTreeMap<String, Node>,
        build_id: &'a str,
    ) -> Self {
        Scope {
            file,
            dir,
            vars,
            secrets,
            locals,
            image,
            build_id,
            job: RefCell::new(None),
            memo: Default::default(),
            stack: Default::default(),
            diags: Default::default(),
            seen: Default::default(),
        }
    }

    /// Runs `f` with `build.name` and `source.*` set for one job.
    pub fn with_job<T>(&self, refs: JobRefs, f: impl FnOnce(&Self) -> T) -> T {
        let before = self.job.replace(Some(refs));
        let out = f(self);
        self.job.replace(before);
        out
    }

    /// Evaluates the reference `root.name` (e.g. `image.version`).
    pub fn lookup(&self, root: &str, name: &str, span: &Span) -> Option<Value> {
        self.eval_ref(&[root.to_string(), name.to_string()], span)
    }

    /// Adds an error that has no place in the template.
    pub fn push(&self, d: Diagnostic) {
        self.diags.borrow_mut().push(d);
    }

    /// Errors found so far (deduplicated).
    pub fn take_diagnostics(&self) -> Diagnostics {
        std::mem::take(&mut self.diags.borrow_mut())
    }

    pub fn error(&self, span: Span, message: impl Into<String>, help: Option<String>) {
        let message = message.into();
        if !self
            .seen
            .borrow_mut()
            .insert((span.start, span.end, message.clone()))
        {
            return;
        }
        let mut d = Diagnostic::at(self.file, span, message).with_label("here");
        if let Some(h) = help {
            d = d.with_help(h);
        }
        self.diags.borrow_mut().push(d);
    }

    /// Evaluates a string; `None` after reporting an error.
    pub fn eval_str(&self, t: &Interpolated) -> Option<Value> {
        if let Some(e) = t.single_expr() {
            return self.eval_expr(e);
        }
        let mut out = String::new();
        let (mut sensitive, mut unknown, mut ok) = (false, false, true);
        for part in &t.parts {
            match part {
                Part::Lit(l) => out.push_str(l),
                Part::Expr(e) => {
                    let Some(v) = self.eval_expr(e) else {
                        ok = false;
                        continue;
                    };
                    sensitive |= v.is_sensitive();
                    unknown |= v.is_unknown();
                    match v.as_interpolated() {
                        Some(s) => out.push_str(&s),
                        None => {
                            ok = false;
                            self.error(
                                e.span.clone(),
                                format!("cannot interpolate a {} into a string", v.type_name()),
                                Some("use `join(\",\", …)` to turn a list into a string, or make the whole string `\"${…}\"`".into()),
                            )
                        }
                    }
                }
            }
        }
        if !ok {
            return None;
        }
        let v = if unknown {
            Value::Unknown
        } else {
            Value::Str(out)
        };
        Some(if sensitive { v.sensitive() } else { v })
    }

    fn eval_expr(&self, e: &Expr) -> Option<Value> {
        match &e.kind {
            ExprKind::Str(s) => Some(Value::Str(s.clone())),
            ExprKind::Num(n) => Some(Value::Num(*n)),
            ExprKind::Bool(b) => Some(Value::Bool(*b)),
            ExprKind::Invalid => Some(Value::Unknown),
            ExprKind::Ref(path) => self.eval_ref(path, &e.span),
            ExprKind::Call(name, args) => {
                let mut vals = Vec::with_capacity(args.len());
                for a in args {
                    vals.push(self.eval_expr(a)?);
                }
                self.call(name, vals, &e.span)
            }
        }
    }

    fn eval_ref(&self, path: &[String], span: &Span) -> Option<Value> {
        let root = path[0].as_str();
        let attr = |names: &[&str]| -> Option<String> {
            match path {
                [_, a] if names.contains(&a.as_str()) => Some(a.clone()),
                [_, a] => {
                    self.error(
                        span.clone(),
                        format!("`{root}` has no attribute `{a}`"),
                        did_you_mean(a, names.iter().copied())
                            .or(Some(format!("`{root}` has: {}", names.join(", ")))),
                    );
                    None
                }
                _ => {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some(format!("write `{root}.NAME`")),
                    );
                    None
                }
            }
        };
        match root {
            "var" | "secret" => {
                let (map, what) = if root == "var" {
                    (self.vars, "variable")
                } else {
                    (self.secrets, "secret")
                };
                let [_, name] = path else {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some(format!("write `{root}.NAME`")),
                    );
                    return None;
                };
                match map.get(name) {
                    Some(v) => Some(v.clone()),
                    None => {
                        let section = if root == "var" {
                            "variables"
                        } else {
                            "secrets"
                        };
                        self.error(
                            span.clone(),
                            format!("unknown {what} `{name}`"),
                            did_you_mean(name, map.keys().map(String::as_str))
                                .or(Some(format!("declare it as `[{section}.{name}]`"))),
                        );
                        None
                    }
                }
            }
            "local" => {
                let [_, name] = path else {
                    self.error(
                        span.clone(),
                        format!("`{}` is not a valid reference", path.join(".")),
                        Some("write `local.NAME`".into()),
                    );
                    return None;
                };
                let Some(node) = self.locals.get(name) else {
                    self.error(
                        span.clone(),
                        format!("unknown local `{name}`"),
                        did_you_mean(name, self.locals.keys().map(String::as_str))
                            .or(Some(format!("add `{name} = …` under `[locals]`"))),
                    );
                    return None;
                };
                self.memoized(&format!("local.{name}"), span, || {
                    self.eval_node(node, &Kind::Any, true, name)
                })
            }
            "image" => {
                let a = attr(&["name", "version", "description"])?;
                match self.image.get(&a) {
                    Some(node) => self.memoized(&format!("image.{a}"), span, || {
                        self.eval_node(node, &Kind::Str, false, &a)
                    }),
                    None => Some(Value::Str(String::new())),
                }
            }
            "build" => {
                let a = attr(&["name", "id"])?;
                if a == "id" {
                    return Some(Value::Str(self.build_id.to_string()));
                }
                match &*self.job.borrow() {
                    Some(j) => Some(Value::Str(j.build_name.clone())),
                    None => {
                        self.error(span.clone(), "`build.name` is only known inside a build", Some("use it in `[source.*]` or `[[build]]` settings, not in `[locals]` or `[image]`".into()));
                        None
                    }
                }
            }
            "source" => {
                let a = attr(&["type", "name"])?;
                match &*self.job.borrow() {
                    Some(j) => Some(Value::Str(if a == "type" {
                        j.source_type.clone()
                    } else {
                        j.source_name.clone()
                    })),
                    None => {
                        self.error(
                            span.clone(),
                            format!("`source.{a}` is only known inside a build"),
                            Some("use it in `[source.*]` or `[[build]]` settings".into()),
                        );
                        None
                    }
                }
            }
            _ => {
                self.error(
                    span.clone(),
                    format!("unknown reference `{}`", path.join(".")),
                    did_you_mean(root, ["var", "local", "secret", "image", "build", "source"])
                        .or(Some(
                        "references start with var., local., secret., image., build. or source."
                            .into(),
                    )),
                );
                None
            }
        }
    }

    /// Evaluates a named node once, detecting cycles through the stack.
    fn memoized(&self, key: &str, span: &Span, f: impl FnOnce() -> Option<Value>) -> Option<Value> {
        if let Some(v) = self.memo.borrow().get(key) {
            return v.clone();
        }
        if let Some(pos) = self.stack.borrow().iter().position(|k| k == key) {
            let mut cycle: Vec<String> = self.stack.borrow()[pos..].to_vec();
            cycle.push(key.to_string());
            self.error(
                span.clone(),
                format!("cycle: {}", cycle.join(" → ")),
                Some("break the cycle: one of these must not refer back".into()),
            );
            return None;
        }
        self.stack.borrow_mut().push(key.to_string());
        let v = f();
        self.stack.borrow_mut().pop();
        self.memo.borrow_mut().insert(key.to_string(), v.clone());
        v
    }

    fn call(&self, name: &str, args: Vec<Value>, span: &Span) -> Option<Value> {
        let arity: Option<(usize, usize)> = match name {
            "timestamp" | "uuid" => Some((0, 0)),
            "env" | "file" | "sha256" | "lower" | "upper" | "trimspace" | "base64encode" => {
                Some((1, 1))
            }
            "join" | "split" => Some((2, 2)),
            "replace" => Some((3, 3)),
            "format" => Some((1, usize::MAX)),
            _ => None,
        };
        let Some((min, max)) = arity else {
            self.error(
                span.clone(),
                format!("unknown function `{name}`"),
                did_you_mean(name, FUNCTIONS.iter().copied())
                    .or(Some(format!("functions: {}", FUNCTIONS.join(", ")))),
            );
            return None;
        };
        if args.len() < min || args.len() > max {
            let want = if min == max {
                min.to_string()
            } else {
                format!("at least {min}")
            };
            self.error(
                span.clone(),
                format!("`{name}` takes {want} argument(s), got {}", args.len()),
                None,
            );
            return None;
        }
        let sensitive = args.iter().any(Value::is_sensitive);
        if args.iter().any(Value::is_unknown) {
            return Some(if sensitive {
                Value::Unknown.sensitive()
            } else {
                Value::Unknown
            });
        }
        let plain: Vec<&Value> = args.iter().map(|a| a.unwrap_sensitive().0).collect();
        let s = |i: usize| -> Option<String> {
            match plain[i].as_interpolated() {
                Some(s) if !matches!(plain[i], Value::List(_) | Value::Map(_)) => Some(s),
                _ => {
                    self.error(
                        span.clone(),
                        format!(
                            "argument {} of `{name}` must be a string, found a {}",
                            i + 1,
                            plain[i].type_name()
                        ),
                        None,
                    );
                    None
                }
            }
        };
        let out = match name {
            "env" => Value::Str(std::env::var(s(0)?).unwrap_or_default()),
            "file" => {
                let p = self.dir.join(s(0)?);
                match std::fs::read_to_string(&p) {
                    Ok(text) => Value::Str(text),
                    Err(e) => {
                        self.error(
                            span.clone(),
                            format!("file(): cannot read `{}`: {e}", p.display()),
                            None,
                        );
                        return None;
                    }
                }
            }
            "sha256" => Value::Str(hex::encode(sha2::Sha256::digest(s(0)?.as_bytes()))),
            "timestamp" => Value::Str(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            "uuid" => Value::Str(uuid::Uuid::new_v4().to_string()),
            "lower" => Value::Str(s(0)?.to_lowercase()),
            "upper" => Value::Str(s(0)?.to_uppercase()),
            "trimspace" => Value::Str(s(0)?.trim().to_string()),
            "base64encode" => Value::Str(base64::engine::general_purpose::STANDARD.encode(s(0)?)),
            "replace" => Value::Str(s(0)?.replace(&s(1)?, &s(2)?)),
            "split" => Value::List(
                s(1)?
                    .split(&s(0)?)
                    .map(|p| Value::Str(p.to_string()))
                    .collect(),
            ),
            "join" => {
                let sep = s(0)?;
                let Value::List(items) = plain[1] else {
                    self.error(
                        span.clone(),
                        format!(
                            "argument 2 of `join` must be a list, found a {}",
                            plain[1].type_name()
                        ),
                        None,
                    );
                    return None;
                };
                let mut parts = vec![];
                for i in items {
                    match i.as_interpolated() {
                        Some(p) if !matches!(i, Value::List(_) | Value::Map(_)) => parts.push(p),
                        _ => {
                            self.error(
                                span.clone(),
                                "join(): list items must be strings, numbers or booleans",
                                None,
                            );
                            return None;
                        }
                    }
                }
                Value::Str(parts.join(&sep))
            }
            "format" => Value::Str(self.format(&s(0)?, &plain[1..], span)?),
            _ => unreachable!("arity table covers every function"),
        };
        Some(if sensitive { out.sensitive() } else { out })
    }

    /// `format("%s-%d", a, b)`: `%s` `%d` `%v` take the next argument, `%%` is `%`.
    fn format(&self, fmt: &str, args: &[&Value], span: &Span) -> Option<String> {
        let mut out = String::new();
        let mut next = args.iter();
        let mut chars = fmt.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some(v @ ('s' | 'd' | 'v')) => {
                    let Some(arg) = next.next() else {
                        self.error(
                            span.clone(),
                            format!("format(): not enough arguments for `%{v}`"),
                            None,
                        );
                        return None;
                    };
                    if v == 'd' && !matches!(arg, Value::Num(_)) {
                        self.error(
                            span.clone(),
                            format!("format(): `%d` needs a number, found a {}", arg.type_name()),
                            None,
                        );
                        return None;
                    }
                    match arg.as_interpolated() {
                        Some(s) => out.push_str(&s),
                        None => {
                            self.error(
                                span.clone(),
                                format!("format(): cannot format a {}", arg.type_name()),
                                None,
                            );
                            return None;
                        }
                    }
                }
                other => {
                    self.error(
                        span.clone(),
                        format!(
                            "format(): unknown verb `%{}`",
                            other.map(String::from).unwrap_or_default()
                        ),
                        Some("verbs: %s %d %v %%".into()),
                    );
                    return None;
                }
            }
        }
        if next.next().is_some() {
            self.error(span.clone(), "format(): too many arguments", None);
            return None;
        }
        Some(out)
    }

    /// Checks `node` against `kind` while evaluating it; `key` names the
    /// value in messages. Returns `None` after reporting an error.
    pub fn eval_node(
        &self,
        node: &Node,
        kind: &Kind,
        sensitive_ok: bool,
        key: &str,
    ) -> Option<Value> {
        let mismatch = || {
            self.error(
                node.span.clone(),
                format!(
                    "`{key}` must be {}, found {}",
                    kind.describe(),
                    node.type_name()
                ),
                None,
            );
            None
        };
        let v = match (kind, &node.kind) {
            (Kind::Any, NodeKind::Int(i)) => Value::Num(*i as f64),
            (Kind::Any, NodeKind::Float(f)) => Value::Num(*f),
            (Kind::Any, NodeKind::Bool(b)) => Value::Bool(*b),
            (Kind::Any, NodeKind::Datetime(d)) => Value::Str(d.clone()),
            (Kind::Any, NodeKind::List(items)) => Value::List(
                self.all(
                    items
                        .iter()
                        .map(|n| self.eval_node(n, &Kind::Any, sensitive_ok, key)),
                )?,
            ),
            (Kind::Any | Kind::Map(_), NodeKind::Table(entries)) => {
                let elem = if let Kind::Map(k) = kind {
                    *k
                } else {
                    &Kind::Any
                };
                let vals = self.all(
                    entries
                        .iter()
                        .map(|e| self.eval_node(&e.value, elem, sensitive_ok, &e.key)),
                )?;
                Value::Map(entries.iter().map(|e| e.key.clone()).zip(vals).collect())
            }
            (Kind::Table(fields) | Kind::StrOrTable(fields), NodeKind::Table(_)) => {
                return self.eval_table(node, fields, key);
            }
            (Kind::List(elem), NodeKind::List(items)) => Value::List(
                self.all(
                    items
                        .iter()
                        .map(|n| self.eval_node(n, elem, sensitive_ok, key)),
                )?,
            ),
            (Kind::Int | Kind::Number, NodeKind::Int(i)) => Value::Num(*i as f64),
            (Kind::Number, NodeKind::Float(f)) => Value::Num(*f),
            (Kind::Bool, NodeKind::Bool(b)) => Value::Bool(*b),
            (_, NodeKind::Str(t)) => {
                let v = self.eval_str(t)?;
                return self.check_scalar(v, node, kind, sensitive_ok, key);
            }
            _ => return mismatch(),
        };
        Some(v)
    }

    fn all(&self, it: impl Iterator<Item = Option<Value>>) -> Option<Vec<Value>> {
        // Evaluate every element so that all errors are reported.
        let vals: Vec<Option<Value>> = it.collect();
        vals.into_iter().collect()
    }

    /// Checks a value computed from a string against the expected kind.
    fn check_scalar(
        &self,
        v: Value,
        node: &Node,
        kind: &Kind,
        sensitive_ok: bool,
        key: &str,
    ) -> Option<Value> {
        if v.is_sensitive() && !sensitive_ok {
            self.error(
                node.span.clone(),
                format!("a sensitive value cannot be used in `{key}`"),
                Some("it would end up in a command line, a file or an artifact; pass secrets to provisioners through `env`".into()),
            );
            return None;
        }
        if v.is_unknown() {
            return Some(v);
        }
        let (plain, sensitive) = v.unwrap_sensitive();
        let wrap = |v: Value| if sensitive { v.sensitive() } else { v };
        let bad = |what: String| {
            self.error(
                node.span.clone(),
                format!("`{key}` must be {}, {what}", kind.describe()),
                None,
            );
            None
        };
        let text = plain
            .as_interpolated()
            .filter(|_| matches!(plain, Value::Str(_) | Value::Num(_) | Value::Bool(_)));
        match kind {
            Kind::Any => Some(v),
            Kind::Str => match plain {
                Value::Str(_) => Some(v),
                Value::Num(_) | Value::Bool(_) => Some(wrap(Value::Str(text.unwrap_or_default()))),
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Int | Kind::Number => match plain {
                Value::Num(n) if matches!(kind, Kind::Number) || n.fract() == 0.0 => Some(v),
                Value::Str(s) => match s.trim().parse::<f64>() {
                    Ok(n) if matches!(kind, Kind::Number) || n.fract() == 0.0 => {
                        Some(wrap(Value::Num(n)))
                    }
                    _ => bad(format!("found `{s}`")),
                },
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Bool => match plain {
                Value::Bool(_) => Some(v),
                Value::Str(s) if s == "true" || s == "false" => {
                    Some(wrap(Value::Bool(s == "true")))
                }
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::List(_) | Kind::Map(_) | Kind::Table(_) => {
                let want = if matches!(kind, Kind::List(_)) {
                    "list"
                } else {
                    "map"
                };
                if plain.type_name() == want {
                    Some(v)
                } else {
                    bad(format!("found a {}", plain.type_name()))
                }
            }
            Kind::StrOrTable(_) => match plain {
                Value::Str(_) => Some(v),
                other => bad(format!("found a {}", other.type_name())),
            },
            Kind::Path | Kind::ExistingFile | Kind::InputFile => {
                let Some(s) = text.filter(|_| matches!(plain, Value::Str(_))) else {
                    return bad(format!("found a {}", plain.type_name()));
                };
                let p = self.resolve_path(&s);
                if matches!(kind, Kind::ExistingFile) && !p.is_file() {
                    self.error(
                        node.span.clone(),
                        format!("`{key}`: file `{}` does not exist", p.display()),
                        Some("relative paths resolve against the template's folder".into()),
                    );
                    return None;
                }
                Some(wrap(Value::Str(p.display().to_string())))
            }
            Kind::Duration | Kind::Size | Kind::Mode | Kind::Enum(_) => {
                let Some(s) = text else {
                    return bad(format!("found a {}", plain.type_name()));
                };
                let ok = match kind {
                    Kind::Duration => parse_duration(&s).is_some(),
                    Kind::Size => parse_size(&s).is_some(),
                    Kind::Mode => {
                        s.len() <= 5 && u32::from_str_radix(&s, 8).is_ok_and(|m| m <= 0o7777)
                    }
                    Kind::Enum(options) => options.contains(&s.as_str()),
                    _ => unreachable!(),
                };
                if ok {
                    return Some(wrap(Value::Str(s)));
                }
                let help = match kind {
                    Kind::Enum(options) => did_you_mean(&s, options.iter().copied()),
                    _ => None,
                };
                self.error(
                    node.span.clone(),
                    format!("`{key}` must be {}, found `{s}`", kind.describe()),
                    help,
                );
                None
            }
        }
    }

    fn resolve_path(&self, s: &str) -> PathBuf {
        let p = Path::new(s);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// Checks a table's keys against `fields` and evaluates each value.
    pub fn eval_table(&self, node: &Node, fields: &[Field], context: &str) -> Option<Value> {
        let Some(entries) = node.entries() else {
            self.error(
                node.span.clone(),
                format!("`{context}` must be a table, found {}", node.type_name()),
                None,
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for e in entries {
            match fields.iter().find(|f| f.name == e.key) {
                Some(f) => match self.eval_node(&e.value, &f.kind, f.sensitive_ok, &e.key) {
                    Some(v) => {
                        out.insert(e.key.clone(), v);
                    }
                    None => ok = false,
                },
                None => {
                    ok = false;
                    self.unknown_key(
                        e.key_span.clone(),
                        &e.key,
                        context,
                        fields.iter().map(|f| f.name),
                    );
                }
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if missing(entries, f.name) {
                ok = false;
                self.error(
                    node.span.clone(),
                    format!("`{context}` is missing the required key `{}`", f.name),
                    Some(format!("add `{} = …`", f.name)),
                );
            }
        }
        ok.then_some(Value::Map(out))
    }

    /// Reports an unknown key with a "did you mean" hint.
    pub fn unknown_key<'k>(
        &self,
        span: Span,
        key: &str,
        context: &str,
        known: impl Iterator<Item = &'k str> + Clone,
    ) {
        let help = did_you_mean(key, known.clone()).unwrap_or_else(|| {
            format!(
                "`{context}` takes: {}",
                known.collect::<Vec<_>>().join(", ")
            )
        });
        self.error(
            span,
            format!("unknown key `{key}` in `{context}`"),
            Some(help),
        );
    }
}

/// True when a required key is absent and no unknown key looks like a
/// misspelling of it (that one is reported already, with a hint).
pub fn missing(entries: &[super::node::Entry], name: &str) -> bool {
    !entries
        .iter()
        .any(|e| e.key == name || super::diagnostic::is_close(&e.key, name))
}

/// Formats a value for human output (`inspect`), masking sensitive parts.
pub fn display_value(v: &Value) -> String {
    match v {
        Value::Sensitive(_) => crate::ui::redact::SENSITIVE.to_string(),
        Value::Str(s) => format!("{s:?}"),
        Value::Num(n) => format_number(*n),
        Value::Bool(b) => b.to_string(),
        Value::Unknown => "<known at build time>".into(),
        Value::List(l) => format!(
            "[{}]",
            l.iter().map(display_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(m) => format!(
            "{{ {} }}",
            m.iter()
                .map(|(k, v)| format!("{k} = {}", display_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
