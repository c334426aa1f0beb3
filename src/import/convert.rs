//! The mapping from a Packer template to a kiln one: variables, locals,
//! secrets, `[image]` and builds here; sources in [`super::sources`],
//! provisioners and post-processors in [`super::steps`]. Every Packer
//! construct either becomes kiln's equivalent or a report entry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use super::model::{Block, Expr, Input, Loc, Node, Part};
use super::report::{Level, Report};
use super::translate::{Binding, Names};

/// One import in progress.
pub struct Converter<'a> {
    pub(super) input: &'a Input,
    pub(super) names: Names,
    pub(super) report: Report,
    /// The folder the kiln template will be written to (absolute).
    pub(super) out_dir: PathBuf,
    pub(super) variables: Table,
    pub(super) secrets: Table,
    pub(super) locals: Table,
    /// `[source.TYPE.NAME]` tables in order.
    pub(super) sources: Vec<(String, String, Table)>,
    /// Packer `TYPE.NAME` → kiln `TYPE.NAME`.
    pub(super) source_names: BTreeMap<String, String>,
    /// `data "amazon-ami" "N"` → an AMI `from` filter.
    pub(super) ami_filters: BTreeMap<String, Value>,
    pub(super) image: Table,
    pub(super) builds: ArrayOfTables,
}

impl<'a> Converter<'a> {
    pub fn new(input: &'a Input, out_dir: PathBuf) -> Self {
        let mut names = Names::default();
        names.map.insert(
            "path.root".into(),
            Binding::Literal(input.root.display().to_string()),
        );
        Converter {
            input,
            names,
            report: Report::default(),
            out_dir,
            variables: Table::new(),
            secrets: Table::new(),
            locals: Table::new(),
            sources: vec![],
            source_names: BTreeMap::new(),
            ami_filters: BTreeMap::new(),
            image: Table::new(),
            builds: ArrayOfTables::new(),
        }
    }

    /// Converts everything; the kiln template (unformatted) and the report.
    pub fn run(mut self) -> (DocumentMut, Report) {
        let blocks = &self.input.blocks;
        for b in blocks {
            match b.kind.as_str() {
                "variable" | "locals" | "local" | "source" | "build" | "data" => {}
                // Plugin requirements: kiln's builders are built in.
                "packer" => {}
                other => self.report.push(
                    Level::NotConverted,
                    format!("`{other}` block"),
                    Some(&b.loc),
                    "kiln templates have no such block",
                    "convert it by hand, or leave it out",
                ),
            }
        }
        self.variables_pass(blocks.iter().filter(|b| b.kind == "variable"));
        self.data_pass(blocks.iter().filter(|b| b.kind == "data"));
        self.locals_pass(blocks);
        for b in blocks.iter().filter(|b| b.kind == "source") {
            if let [ty, name] = b.labels.as_slice() {
                self.source(b, ty, name, name);
            }
        }
        for b in blocks.iter().filter(|b| b.kind == "build") {
            self.build(b);
        }
        self.image_table();
        let doc = self.document();
        (doc, self.report)
    }

    // ---- helpers shared by sources and steps ----

    /// Translates `n` into `t[key]`; a gap or a secret where none may go is
    /// reported against `construct`. Returns whether the key was written.
    pub(super) fn put(
        &mut self,
        t: &mut Table,
        key: &str,
        n: &Node,
        construct: &str,
        sensitive_ok: bool,
    ) -> bool {
        // Maps (tags, labels, env) lose only the entries kiln cannot say.
        if let Expr::Map(entries) = &n.expr {
            let mut m = toml_edit::InlineTable::new();
            for (k, v) in entries {
                let c = format!("{construct}.{k}");
                match self.names.value(v) {
                    Ok(out) if out.sensitive && !sensitive_ok => self.secret_refused(&c, &v.loc),
                    Ok(out) => {
                        m.insert(k, out.value);
                    }
                    Err(gap) => self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&gap.loc),
                        format!("it uses {}", gap.what),
                        format!("write `{key}.{k}` by hand"),
                    ),
                }
            }
            t.insert(key, toml_edit::value(m));
            return true;
        }
        match self.names.value(n) {
            Ok(out) if out.sensitive && !sensitive_ok => {
                self.secret_refused(construct, &n.loc);
                false
            }
            Ok(out) => {
                t.insert(key, Item::Value(out.value));
                true
            }
            Err(gap) => {
                self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&gap.loc),
                    format!("it uses {}", gap.what),
                    format!("write `{key}` by hand"),
                );
                false
            }
        }
    }

    /// A string in which Packer's build variables named in `placeholders`
    /// (`{{ .Path }}`) become kiln's placeholders (`{path}`); any other
    /// build variable is reported, as [`Self::text`] does.
    pub(super) fn text_with_placeholders(
        &mut self,
        n: &Node,
        construct: &str,
        placeholders: &[(&str, &str)],
    ) -> Option<String> {
        let parts = match &n.expr {
            Expr::Str(s) if s.contains("{{") => super::gotmpl::parts(s, &n.loc),
            Expr::Template(parts) => parts.clone(),
            _ => return self.text(n, construct, false),
        };
        let parts = parts
            .into_iter()
            .map(|p| match p {
                Part::Interp(Node {
                    expr: Expr::Other(ref w),
                    ..
                }) => match placeholders.iter().find(|(packer, _)| w.contains(packer)) {
                    Some((_, kiln)) => Part::Lit((*kiln).into()),
                    None => p,
                },
                p => p,
            })
            .collect();
        let node = Node {
            expr: Expr::Template(parts),
            loc: n.loc.clone(),
        };
        self.text(&node, construct, false)
    }

    /// A string (or `None`, reported as for [`Self::put`]).
    pub(super) fn text(&mut self, n: &Node, construct: &str, sensitive_ok: bool) -> Option<String> {
        match self.names.string(n) {
            Ok((_, true)) if !sensitive_ok => {
                self.secret_refused(construct, &n.loc);
                None
            }
            Ok((s, _)) => Some(s),
            Err(gap) => {
                self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&gap.loc),
                    format!("it uses {}", gap.what),
                    "write the value by hand",
                );
                None
            }
        }
    }

    pub(super) fn secret_refused(&mut self, construct: &str, loc: &Loc) {
        self.report.push(
            Level::NotConverted,
            construct,
            Some(loc),
            "it holds a secret, and kiln passes secrets only to a process environment or a credential setting",
            "hand the secret to the step through `env` (e.g. `env = { TOKEN = \"${secret.NAME}\" }`) and read it there",
        );
    }

    /// A path from the Packer template, as seen from the kiln template's
    /// folder. Packer resolves relative paths against the folder it runs
    /// in; the importer takes that to be the template's folder.
    pub(super) fn path(&mut self, s: &str, construct: &str, loc: &Loc, must_exist: bool) -> String {
        if s.contains("://") {
            return s.to_string();
        }
        if s.contains("${") {
            self.report.push(
                Level::Approximate,
                construct,
                Some(loc),
                "the path is computed, so the importer could not rewrite it; kiln resolves a relative path against the kiln template's folder (Packer: the folder it runs in)",
                "check the path from the kiln template's folder",
            );
            return s.to_string();
        }
        let p = Path::new(s);
        let abs = normalize(&if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.input.root.join(p)
        });
        if must_exist && !abs.exists() {
            self.report.push(
                Level::NotConverted,
                construct,
                Some(loc),
                format!("`{s}` does not exist next to the Packer template"),
                "put the file there (or fix the path) before `kiln build`",
            );
        }
        relative(&self.out_dir, &abs).display().to_string()
    }

    // ---- variables ----

    fn variables_pass<'b>(&mut self, blocks: impl Iterator<Item = &'b Block>) {
        let blocks: Vec<&Block> = blocks.collect();
        // Names first: defaults and validations may refer to nothing, but
        // everything else refers to them.
        for b in &blocks {
            let Some(name) = b.labels.first() else {
                continue;
            };
            self.names.map.insert(
                format!("var.{name}"),
                Binding::Var {
                    name: name.clone(),
                    sensitive: b.value("sensitive").and_then(Node::as_bool) == Some(true),
                },
            );
        }
        for b in blocks {
            if let Some(name) = b.labels.first() {
                self.variable(b, name);
            }
        }
    }

    fn variable(&mut self, b: &Block, name: &str) {
        let construct = format!("variable \"{name}\"");
        let sensitive = b.value("sensitive").and_then(Node::as_bool) == Some(true);
        let given = self
            .input
            .var_values
            .iter()
            .rev()
            .find(|a| a.key == name)
            .map(|a| &a.value);
        let default = given.or(b.value("default"));
        let mut t = Table::new();
        if let Some(ty) = b.value("type") {
            match var_type(ty) {
                Some((k, exact)) => {
                    t.insert("type", toml_edit::value(k));
                    if !exact {
                        self.report.push(
                            Level::Approximate,
                            format!("{construct}.type"),
                            Some(&ty.loc),
                            format!(
                                "kiln's `{k}` does not check the element types Packer's type does"
                            ),
                            "check the values given to it",
                        );
                    }
                }
                None => self.report.push(
                    Level::Approximate,
                    format!("{construct}.type"),
                    Some(&ty.loc),
                    "kiln has no such type; the type is taken from the default (else `string`)",
                    "set `type` to string, number, bool, list or map",
                ),
            }
        }
        if let Some(d) = b.value("description").and_then(Node::as_str) {
            t.insert("description", toml_edit::value(d));
        }
        // A secret from Vault in a default (Packer allows vault() there).
        if let Some(d) = default {
            if self.secret_call("var", name, d, &construct) {
                return;
            }
        }
        match default {
            Some(d) if matches!(d.expr, Expr::Null) => {}
            Some(d) if is_literal(d) => {
                let empty = d.as_str() == Some("");
                if sensitive {
                    collect_strings(d, &mut self.report.masked);
                }
                if sensitive && !empty {
                    // The value must not be written: read it at build time.
                    let env = format!("PKR_VAR_{name}");
                    let mut s = Table::new();
                    s.insert("env", toml_edit::value(env.clone()));
                    s.insert(
                        "description",
                        toml_edit::value(format!("Packer's sensitive variable `{name}`")),
                    );
                    self.secrets.insert(name, Item::Table(s));
                    self.names
                        .map
                        .insert(format!("var.{name}"), Binding::Secret(name.into()));
                    self.report.push(
                        Level::Approximate,
                        construct,
                        Some(&b.loc),
                        format!("it is sensitive and has a default; kiln never writes a secret's value, so it became `[secrets.{name}]` read from `{env}` at build time"),
                        format!("export `{env}` (Packer reads it too) or point `[secrets.{name}]` at Vault"),
                    );
                    return;
                }
                match self.names.value(d) {
                    Ok(out) => {
                        t.insert("default", Item::Value(out.value));
                    }
                    Err(g) => self.report.push(
                        Level::NotConverted,
                        format!("{construct}.default"),
                        Some(&g.loc),
                        format!("it is {}", g.what),
                        "give the variable a value with `--var`",
                    ),
                }
            }
            Some(d) => {
                // kiln defaults are literals; a computed default becomes a local.
                match self.names.value(d) {
                    Ok(out) if !out.sensitive => {
                        self.locals.insert(name, Item::Value(out.value));
                        self.names.map.insert(
                            format!("var.{name}"),
                            Binding::Local {
                                name: name.into(),
                                sensitive: false,
                            },
                        );
                        self.report.push(
                            Level::Approximate,
                            construct,
                            Some(&d.loc),
                            "its default is computed, and kiln defaults are literals; it became a local, so `--var` can no longer set it",
                            format!("set what the default reads (e.g. the environment variable) instead, or make `{name}` a variable again with a literal default"),
                        );
                        return;
                    }
                    Ok(_) => self.secret_refused(&format!("{construct}.default"), &d.loc),
                    Err(g) => self.report.push(
                        Level::NotConverted,
                        format!("{construct}.default"),
                        Some(&g.loc),
                        format!("it uses {}", g.what),
                        "give the variable a value with `--var`",
                    ),
                }
            }
            None => {}
        }
        if sensitive {
            t.insert("sensitive", toml_edit::value(true));
        }
        for v in b.blocks("validation") {
            self.validation(v, &construct, &mut t);
        }
        self.variables.insert(name, Item::Table(t));
    }

    /// `vault(PATH, KEY)` / `aws_secretsmanager(NAME, KEY)` as the whole
    /// value of `name`: a `[secrets]` entry. True when it was one.
    fn secret_call(&mut self, root: &str, name: &str, n: &Node, construct: &str) -> bool {
        let Some((func, args)) = n.as_call() else {
            return false;
        };
        let lit = |i: usize| args.get(i).and_then(Node::as_str).map(str::to_string);
        let mut s = Table::new();
        match (func, lit(0), lit(1)) {
            ("vault", Some(path), Some(key)) => {
                s.insert(
                    "vault",
                    toml_edit::value(format!("{}#{key}", path.trim_start_matches('/'))),
                );
                self.report.push(
                    Level::Note,
                    format!("{construct}: vault()"),
                    Some(&n.loc),
                    format!("read from Vault as `[secrets.{name}]`, sensitive"),
                    "kiln reads VAULT_ADDR and VAULT_TOKEN (or AppRole/JWT) as Packer does",
                );
            }
            ("aws_secretsmanager", Some(secret), key) => {
                let env = env_name(name);
                s.insert("env", toml_edit::value(env.clone()));
                self.report.push(
                    Level::NotConverted,
                    format!("{construct}: aws_secretsmanager()"),
                    Some(&n.loc),
                    format!("kiln cannot read AWS Secrets Manager yet; `[secrets.{name}]` reads `{env}` instead"),
                    format!(
                        "export it before the build: `{env}=$(aws secretsmanager get-secret-value --secret-id {secret} --query SecretString --output text{})`, or move the secret to Vault",
                        key.map(|k| format!(" | jq -r .{k}")).unwrap_or_default()
                    ),
                );
            }
            ("vault" | "aws_secretsmanager", _, _) => {
                self.report.push(
                    Level::NotConverted,
                    format!("{construct}: {func}()"),
                    Some(&n.loc),
                    "its arguments are computed; kiln's secret paths are literals",
                    "write the `[secrets]` entry by hand",
                );
                self.names.map.insert(
                    format!("{root}.{name}"),
                    Binding::Gone("a secret that was not converted".into()),
                );
                return true;
            }
            _ => return false,
        }
        self.secrets.insert(name, Item::Table(s));
        self.names
            .map
            .insert(format!("{root}.{name}"), Binding::Secret(name.into()));
        true
    }

    /// `validation { condition, error_message }` where kiln's `allowed`,
    /// `pattern`, `min` or `max` can say it.
    fn validation(&mut self, v: &Block, construct: &str, t: &mut Table) {
        let Some(cond) = v.value("condition") else {
            return;
        };
        let mut parts = vec![];
        flatten_and(cond, &mut parts);
        for c in parts {
            match constraint(c) {
                Some((key, value)) => {
                    t.insert(key, Item::Value(value));
                }
                None => self.report.push(
                    Level::NotConverted,
                    format!("{construct}.validation"),
                    Some(&c.loc),
                    "kiln checks variables only with `allowed`, `pattern`, `min` and `max`, which cannot say this condition",
                    format!(
                        "check it before the build{}",
                        v.value("error_message")
                            .and_then(Node::as_str)
                            .map(|m| format!(" (Packer's message: \"{m}\")"))
                            .unwrap_or_default()
                    ),
                ),
            }
        }
    }

    // ---- data sources ----

    fn data_pass<'b>(&mut self, blocks: impl Iterator<Item = &'b Block>) {
        for b in blocks {
            let [ty, name] = b.labels.as_slice() else {
                continue;
            };
            let construct = format!("data \"{ty}\" \"{name}\"");
            match ty.as_str() {
                "amazon-ami" => {
                    if let Some(filter) = self.ami_filter(b, &construct) {
                        self.ami_filters
                            .insert(format!("data.amazon-ami.{name}"), filter);
                    }
                    self.names.map.insert(
                        format!("data.amazon-ami.{name}"),
                        Binding::Gone(
                            "an AMI lookup kiln does as an amazon-ebs `source_ami` only".into(),
                        ),
                    );
                }
                "amazon-secretsmanager" => {
                    let secret = b
                        .value("name")
                        .and_then(Node::as_str)
                        .unwrap_or(name)
                        .to_string();
                    let env = env_name(name);
                    let mut s = Table::new();
                    s.insert("env", toml_edit::value(env.clone()));
                    self.secrets.insert(name, Item::Table(s));
                    self.names.map.insert(
                        format!("data.amazon-secretsmanager.{name}.value"),
                        Binding::Secret(name.clone()),
                    );
                    self.names.map.insert(
                        format!("data.amazon-secretsmanager.{name}"),
                        Binding::Gone(
                            "an attribute of a Secrets Manager secret other than `value`".into(),
                        ),
                    );
                    self.report.push(
                        Level::NotConverted,
                        construct,
                        Some(&b.loc),
                        format!("kiln cannot read AWS Secrets Manager yet; `[secrets.{name}]` reads `{env}` instead"),
                        format!("export it before the build (`aws secretsmanager get-secret-value --secret-id {secret}`), or move the secret to Vault"),
                    );
                }
                _ => {
                    self.names.map.insert(
                        format!("data.{ty}.{name}"),
                        Binding::Gone(format!("a `{ty}` data source, which was not converted")),
                    );
                    self.report.push(
                        Level::NotConverted,
                        construct,
                        Some(&b.loc),
                        "kiln has no data sources of this type",
                        "look the value up before the build and pass it with `--var`",
                    );
                }
            }
        }
    }

    /// An amazon-ami lookup (`data` block or `source_ami_filter`) as a
    /// kiln AMI `from` table.
    pub(super) fn ami_filter(&mut self, b: &Block, construct: &str) -> Option<Value> {
        let mut t = toml_edit::InlineTable::new();
        let filters = b.nested("filters");
        let mut ok = true;
        for f in &filters {
            for a in &f.attrs {
                match a.key.as_str() {
                    "name" | "architecture" => {
                        let key = a.key.clone();
                        match self.text(&a.value, &format!("{construct}.filters.{key}"), false) {
                            Some(s) => {
                                t.insert(&key, Value::from(s));
                            }
                            None => ok = false,
                        }
                    }
                    other => self.report.push(
                        Level::Approximate,
                        format!("{construct}.filters.{other}"),
                        Some(&a.loc),
                        "kiln's AMI filter has only `owners`, `name`, `most_recent` and `architecture` (and picks only `available` images)",
                        "check that the AMI kiln picks is the one you meant",
                    ),
                }
            }
        }
        if let Some(o) = b.value("owners") {
            match self.names.value(o) {
                Ok(out) => {
                    t.insert("owners", out.value);
                }
                Err(_) => ok = false,
            }
        }
        if let Some(m) = b.value("most_recent").and_then(Node::as_bool) {
            t.insert("most_recent", Value::from(m));
        }
        for a in &b.attrs {
            if !["filters", "owners", "most_recent", "region"].contains(&a.key.as_str()) {
                self.report.push(
                    Level::NotConverted,
                    format!("{construct}.{}", a.key),
                    Some(&a.loc),
                    "kiln's AMI filter has no such setting",
                    "check that the AMI kiln picks is the one you meant",
                );
            }
        }
        (ok && !t.is_empty()).then_some(Value::InlineTable(t))
    }

    // ---- locals ----

    fn locals_pass(&mut self, blocks: &[Block]) {
        // (name, value, sensitive, place)
        let mut all: Vec<(String, Node, bool, Loc)> = vec![];
        for b in blocks {
            match b.kind.as_str() {
                "locals" => {
                    for a in &b.attrs {
                        all.push((a.key.clone(), a.value.clone(), false, a.loc.clone()));
                    }
                }
                "local" => {
                    if let (Some(name), Some(e)) = (b.labels.first(), b.value("expression")) {
                        let s = b.value("sensitive").and_then(Node::as_bool) == Some(true);
                        all.push((name.clone(), e.clone(), s, b.loc.clone()));
                    }
                }
                _ => {}
            }
        }
        let mut plain = vec![];
        for (name, value, sensitive, loc) in all {
            let construct = format!("local \"{name}\"");
            if self.secret_call("local", &name, &value, &construct) {
                continue;
            }
            if sensitive {
                collect_strings(&value, &mut self.report.masked);
                // A sensitive local with a value kiln may not write.
                let mut t = Table::new();
                t.insert("sensitive", toml_edit::value(true));
                t.insert("type", toml_edit::value("string"));
                self.variables.insert(&name, Item::Table(t));
                self.names.map.insert(
                    format!("local.{name}"),
                    Binding::Var {
                        name: name.clone(),
                        sensitive: true,
                    },
                );
                self.report.push(
                    Level::Approximate,
                    construct,
                    Some(&loc),
                    format!("it is sensitive; kiln never writes a sensitive value, so it became the sensitive variable `{name}` without a value"),
                    format!("give it with `KILN_VAR_{name}` or a `--var-file`, or make it a `[secrets]` entry"),
                );
                continue;
            }
            self.names.map.insert(
                format!("local.{name}"),
                Binding::Local {
                    name: name.clone(),
                    sensitive: false,
                },
            );
            plain.push((name, value, loc));
        }
        // Locals may refer to each other in any order: settle which ones
        // convert (and which are sensitive) before writing any.
        loop {
            let mut changed = false;
            for (name, value, _) in &plain {
                let key = format!("local.{name}");
                if matches!(self.names.map.get(&key), Some(Binding::Gone(_))) {
                    continue;
                }
                let new = match self.names.value(value) {
                    Ok(out) => Binding::Local {
                        name: name.clone(),
                        sensitive: out.sensitive,
                    },
                    Err(g) => Binding::Gone(format!("which was not converted ({})", g.what)),
                };
                let same = match (self.names.map.get(&key), &new) {
                    (
                        Some(Binding::Local { sensitive: a, .. }),
                        Binding::Local { sensitive: b, .. },
                    ) => a == b,
                    _ => false,
                };
                if !same {
                    self.names.map.insert(key, new);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for (name, value, loc) in plain {
            match self.names.value(&value) {
                Ok(out) => {
                    self.locals.insert(&name, Item::Value(out.value));
                }
                Err(g) => self.report.push(
                    Level::NotConverted,
                    format!("local \"{name}\""),
                    Some(if g.loc.file.name.is_empty() { &loc } else { &g.loc }),
                    format!("it uses {}", g.what),
                    "compute the value before the build and pass it as a variable, or write the local by hand",
                ),
            }
        }
    }

    // ---- builds ----

    fn build(&mut self, b: &Block) {
        let mut t = Table::new();
        let name = b
            .value("name")
            .and_then(|n| self.names.string(n).ok())
            .map(|(s, _)| s);
        if let Some(n) = &name {
            t.insert("name", toml_edit::value(n.clone()));
        }
        if let Some(d) = b.value("description").and_then(Node::as_str) {
            t.insert("description", toml_edit::value(d));
        }
        let build_name = name.clone().unwrap_or_else(|| "build".into());
        let mut sources = Array::new();
        if let Some(list) = b.value("sources").and_then(Node::as_list) {
            for s in list {
                let Some(text) = s.as_str() else { continue };
                let key = text.strip_prefix("source.").unwrap_or(text);
                match self.source_names.get(key) {
                    Some(k) => sources.push(k.clone()),
                    None => self.report.push(
                        Level::NotConverted,
                        format!("build \"{build_name}\" source \"{key}\""),
                        Some(&s.loc),
                        "the source was not converted (see its own entry) or is not declared",
                        "add a kiln source for it by hand",
                    ),
                }
            }
        }
        // `source "source.T.N" { name = …, overrides… }` inside the build.
        for s in b.blocks("source") {
            let Some(label) = s.labels.first() else {
                continue;
            };
            let key = label.strip_prefix("source.").unwrap_or(label);
            let base = self.input.blocks.iter().find(|x| {
                x.kind == "source"
                    && x.labels.len() == 2
                    && format!("{}.{}", x.labels[0], x.labels[1]) == key
            });
            let Some(base) = base else {
                self.report.push(
                    Level::NotConverted,
                    format!("build source \"{label}\""),
                    Some(&s.loc),
                    "it names a source that is not declared",
                    "declare the source",
                );
                continue;
            };
            let new_name = s
                .value("name")
                .and_then(Node::as_str)
                .unwrap_or(&base.labels[1])
                .to_string();
            let mut merged = base.clone();
            for a in s.attrs.iter().filter(|a| a.key != "name") {
                merged.attrs.retain(|x| x.key != a.key);
                merged.attrs.push(a.clone());
            }
            merged.blocks.extend(s.blocks.iter().cloned());
            let ty = base.labels[0].clone();
            let packer_key = format!("{ty}.{new_name}");
            if !self.source_names.contains_key(&packer_key) {
                self.source(&merged, &ty, &base.labels[1], &new_name);
            }
            if let Some(k) = self.source_names.get(&packer_key) {
                sources.push(k.clone());
            }
        }
        let kiln_sources: Vec<String> = sources
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        t.insert("sources", toml_edit::value(sources));
        let mut provisioners = ArrayOfTables::new();
        for p in b.blocks.iter() {
            match p.kind.as_str() {
                "provisioner" => {
                    for step in self.provisioner(p, &kiln_sources) {
                        provisioners.push(step);
                    }
                }
                "post-processor" => self.post_processors(std::slice::from_ref(p), &kiln_sources),
                "post-processors" => {
                    let chain: Vec<Block> = p.blocks("post-processor").cloned().collect();
                    self.post_processors(&chain, &kiln_sources);
                }
                "hcp_packer_registry" => self.hcp_registry(p, &mut t),
                "source" => {}
                other => self.report.push(
                    Level::NotConverted,
                    format!("build `{other}` block"),
                    Some(&p.loc),
                    "kiln builds have no such block",
                    "convert it by hand, or leave it out",
                ),
            }
        }
        if !provisioners.is_empty() {
            t.insert("provisioner", Item::ArrayOfTables(provisioners));
        }
        self.builds.push(t);
    }

    /// `hcp_packer_registry` → `[image]` and `[build.register]`.
    fn hcp_registry(&mut self, b: &Block, build: &mut Table) {
        if let Some(n) = b.value("bucket_name").and_then(Node::as_str) {
            self.image.insert("name", toml_edit::value(image_name(n)));
        }
        if let Some(d) = b
            .value("description")
            .and_then(|n| self.names.string(n).ok())
        {
            self.image
                .insert("description", toml_edit::value(d.0.trim()));
        }
        let mut reg = Table::new();
        reg.insert("channels", toml_edit::value(Array::new()));
        build.insert("register", Item::Table(reg));
        self.report.push(
            Level::Note,
            "hcp_packer_registry",
            Some(&b.loc),
            "the bucket became `[image] name` and kiln's catalog registers every version (`[build.register]`)",
            "list the channels to promote each build to in `[build.register] channels`",
        );
        for a in &b.attrs {
            if a.key.ends_with("labels") {
                self.report.push(
                    Level::NotConverted,
                    format!("hcp_packer_registry.{}", a.key),
                    Some(&a.loc),
                    "kiln's catalog has no labels",
                    "put what they say into `[image] description`",
                );
            }
        }
    }

    fn image_table(&mut self) {
        if !self.image.contains_key("name") {
            let from_build = self
                .builds
                .iter()
                .find_map(|b| b.get("name").and_then(Item::as_str).map(str::to_string));
            let fallback = self
                .sources
                .first()
                .map(|(_, n, _)| n.clone())
                .unwrap_or_else(|| "imported".into());
            let name = from_build.unwrap_or(fallback);
            self.image
                .insert("name", toml_edit::value(image_name(&name)));
        }
        self.image.insert("version", toml_edit::value("0.1.0"));
        self.report.push(
            Level::Note,
            "[image]",
            None,
            "kiln names and versions every image in its catalog; the importer chose `name` and version `0.1.0`",
            "set `[image] name` and `version` (semver) to what your image is",
        );
    }

    fn document(&mut self) -> DocumentMut {
        let mut doc = DocumentMut::new();
        let root = doc.as_table_mut();
        root.insert("image", Item::Table(std::mem::take(&mut self.image)));
        let implicit = |t: Table| {
            let mut t = t;
            t.set_implicit(true);
            t
        };
        if !self.variables.is_empty() {
            root.insert(
                "variables",
                Item::Table(implicit(std::mem::take(&mut self.variables))),
            );
        }
        if !self.secrets.is_empty() {
            root.insert(
                "secrets",
                Item::Table(implicit(std::mem::take(&mut self.secrets))),
            );
        }
        if !self.locals.is_empty() {
            root.insert("locals", Item::Table(std::mem::take(&mut self.locals)));
        }
        if !self.sources.is_empty() {
            let mut by_type = Table::new();
            by_type.set_implicit(true);
            for (ty, name, t) in std::mem::take(&mut self.sources) {
                let entry = by_type
                    .entry(&ty)
                    .or_insert_with(|| Item::Table(implicit(Table::new())));
                if let Some(tt) = entry.as_table_mut() {
                    tt.insert(&name, Item::Table(t));
                }
            }
            root.insert("source", Item::Table(by_type));
        }
        if self.builds.is_empty() {
            let mut t = Table::new();
            t.insert("sources", toml_edit::value(Array::new()));
            self.builds.push(t);
        }
        root.insert(
            "build",
            Item::ArrayOfTables(std::mem::take(&mut self.builds)),
        );
        doc
    }
}

/// kiln's variable type for a Packer type expression, and whether it says
/// as much as Packer's.
fn var_type(n: &Node) -> Option<(&'static str, bool)> {
    let head = match &n.expr {
        Expr::Ref(p) if p.len() == 1 => p[0].as_str(),
        Expr::Call(name, _) => name.as_str(),
        Expr::Str(s) => s.as_str(),
        _ => return None,
    };
    let element_any = match &n.expr {
        Expr::Call(_, args) => args
            .iter()
            .all(|a| a.as_ref_path() == Some(&["any".to_string()][..])),
        _ => true,
    };
    Some(match head {
        "string" => ("string", true),
        "number" => ("number", true),
        "bool" => ("bool", true),
        "list" | "set" | "tuple" => ("list", element_any && head == "list"),
        "map" | "object" => ("map", element_any && head == "map"),
        _ => return None,
    })
}

/// Every literal string in `n` (to mask sensitive values in the report).
fn collect_strings(n: &Node, out: &mut Vec<String>) {
    match &n.expr {
        Expr::Str(s) => out.push(s.clone()),
        Expr::List(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Expr::Map(entries) => entries.iter().for_each(|(_, v)| collect_strings(v, out)),
        Expr::Template(parts) => parts.iter().for_each(|p| match p {
            super::model::Part::Lit(l) => out.push(l.clone()),
            super::model::Part::Interp(i) => collect_strings(i, out),
        }),
        Expr::Call(_, args) => args.iter().for_each(|a| collect_strings(a, out)),
        _ => {}
    }
}

fn is_literal(n: &Node) -> bool {
    match &n.expr {
        Expr::Null | Expr::Bool(_) | Expr::Num(_) | Expr::Str(_) => true,
        Expr::List(items) => items.iter().all(is_literal),
        Expr::Map(entries) => entries.iter().all(|(_, v)| is_literal(v)),
        _ => false,
    }
}

fn flatten_and<'n>(n: &'n Node, out: &mut Vec<&'n Node>) {
    match &n.expr {
        Expr::BinOp(op, a, b) if op == "&&" => {
            flatten_and(a, out);
            flatten_and(b, out);
        }
        _ => out.push(n),
    }
}

/// One validation condition as `allowed`, `pattern`, `min` or `max`.
fn constraint(c: &Node) -> Option<(&'static str, Value)> {
    let is_var = |n: &Node| {
        n.as_ref_path()
            .is_some_and(|p| p.len() == 2 && p[0] == "var")
    };
    let num = |n: &Node| match n.expr {
        Expr::Num(x) => Some(x),
        _ => None,
    };
    match &c.expr {
        // contains(["a", "b"], var.x)
        Expr::Call(f, args) if f == "contains" && args.len() == 2 && is_var(&args[1]) => {
            let items = args[0].as_list()?;
            let mut a = Array::new();
            for i in items {
                match &i.expr {
                    Expr::Str(s) => a.push(s.clone()),
                    Expr::Num(x) => a.push(*x),
                    Expr::Bool(b) => a.push(*b),
                    _ => return None,
                }
            }
            Some(("allowed", Value::Array(a)))
        }
        // can(regex("re", var.x))
        Expr::Call(f, args) if f == "can" && args.len() == 1 => match args[0].as_call() {
            Some(("regex", [re, v])) if is_var(v) => {
                Some(("pattern", Value::from(re.as_str()?.to_string())))
            }
            _ => None,
        },
        Expr::BinOp(op, a, b) => {
            // substr(var.x, 0, N) == "lit"
            if op == "==" {
                if let (Some(("substr", [v, start, _])), Some(lit)) = (a.as_call(), b.as_str()) {
                    if is_var(v) && num(start) == Some(0.0) {
                        return Some(("pattern", Value::from(format!("^{}", regex::escape(lit)))));
                    }
                }
                return None;
            }
            if !is_var(a) {
                return None;
            }
            let n = num(b)?;
            match op.as_str() {
                ">=" => Some(("min", number(n))),
                "<=" => Some(("max", number(n))),
                _ => None,
            }
        }
        _ => None,
    }
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

/// An environment variable name for a secret named `name`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A valid kiln image name made from `s`.
pub(super) fn image_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    out = out
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    out.truncate(64);
    if out.is_empty() {
        "imported".into()
    } else {
        out
    }
}

/// Removes `.` and `..` without touching the file system.
pub(super) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `to` as seen from `from` (both absolute and normalized).
pub(super) fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(Path::new("/a/b"), Path::new("/a/b/c.sh")),
            PathBuf::from("c.sh")
        );
        assert_eq!(
            relative(Path::new("/a/out"), Path::new("/a/p/c.sh")),
            PathBuf::from("../p/c.sh")
        );
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    #[test]
    fn image_names_are_valid() {
        assert_eq!(image_name("learn-packer golden!"), "learn-packer-golden-");
        assert_eq!(image_name("__x"), "x");
        assert_eq!(image_name(""), "imported");
    }
}
