//! `[source.TYPE.NAME]` and `[[build]]`: each build × source becomes a
//! job, its source settings checked against the type's fields; `--only` and
//! `--except` select among them.

use std::collections::BTreeMap;

use super::tables::{
    BUILD_KEYS, POLICY_FIELDS, REBUILD_FIELDS, REGISTER_FIELDS, SBOM_FIELDS, SIGN_FIELDS,
};
use super::Template;
use crate::template::diagnostic::{did_you_mean, Diagnostic, Span};
use crate::template::eval::{JobRefs, Scope};
use crate::template::node::{Node, NodeKind};
use crate::template::plan::{JobPlan, PlanOptions, RebuildTrigger};
use crate::template::schema::{Field, TemplateSchema, STR};
use crate::template::value::Value;

impl Template {
    /// `[source.TYPE.NAME]` tables, checked for known types.
    pub(super) fn sources<'n>(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        node: Option<&'n Node>,
    ) -> Vec<SourceDecl<'n>> {
        let mut out = vec![];
        let Some(node) = node else { return out };
        let types = || schema.sources.iter().map(|(t, _)| *t);
        for t in node.entries().unwrap_or_default() {
            let Some((_, fields)) = schema.sources.iter().find(|(name, _)| *name == t.key) else {
                scope.error(
                    t.key_span.clone(),
                    format!("unknown source type `{}`", t.key),
                    did_you_mean(&t.key, types()).or(Some(format!(
                        "source types: {}",
                        types().collect::<Vec<_>>().join(", ")
                    ))),
                );
                continue;
            };
            let Some(named) = t.value.entries() else {
                scope.error(
                    t.value.span.clone(),
                    format!("write sources as `[source.{}.NAME]` tables", t.key),
                    None,
                );
                continue;
            };
            for n in named {
                if n.value.entries().is_none() {
                    scope.error(
                        n.value.span.clone(),
                        format!("`source.{}.{}` must be a table", t.key, n.key),
                        None,
                    );
                    continue;
                }
                out.push(SourceDecl {
                    ty: t.key.clone(),
                    name: n.key.clone(),
                    span: n.key_span.clone(),
                    node: &n.value,
                    fields,
                });
            }
        }
        out
    }

    pub(super) fn jobs(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        sources: &[SourceDecl],
        node: Option<&Node>,
        opts: &PlanOptions,
    ) -> Vec<JobPlan> {
        let mut jobs = vec![];
        let source_names: Vec<String> = sources
            .iter()
            .map(|s| format!("{}.{}", s.ty, s.name))
            .collect();
        let builds: Vec<&Node> = match node.map(|n| &n.kind) {
            None => {
                scope.error(
                    0..0,
                    "the template has no `[[build]]`",
                    Some("add `[[build]]` with `sources = [\"TYPE.NAME\"]`".into()),
                );
                vec![]
            }
            Some(NodeKind::List(items)) => items.iter().collect(),
            Some(_) => {
                scope.error(
                    node.map(|n| n.span.clone()).unwrap_or(0..0),
                    "`build` must be an array of tables",
                    Some("write `[[build]]`, with two brackets".into()),
                );
                vec![]
            }
        };
        let mut used = vec![false; sources.len()];
        let mut build_names: Vec<String> = vec![];
        for (i, b) in builds.iter().enumerate() {
            for e in b.entries().unwrap_or_default() {
                if !BUILD_KEYS.contains(&e.key.as_str()) {
                    scope.unknown_key(
                        e.key_span.clone(),
                        &e.key,
                        "build",
                        BUILD_KEYS.iter().copied(),
                    );
                }
            }
            let bname = match b.get("name") {
                Some(e) => scope
                    .eval_node(&e.value, &STR, false, "name")
                    .and_then(|v| v.as_interpolated())
                    .unwrap_or_default(),
                None => {
                    if builds.len() == 1 {
                        "build".into()
                    } else {
                        format!("build-{}", i + 1)
                    }
                }
            };
            if build_names.contains(&bname) {
                scope.error(
                    b.get("name")
                        .map(|e| e.value.span.clone())
                        .unwrap_or(b.span.clone()),
                    format!("two builds are named `{bname}`"),
                    Some("build names must be unique".into()),
                );
            }
            build_names.push(bname.clone());
            // The build's sources.
            let mut picked = vec![];
            match b.get("sources") {
                // A misspelled `sources` is reported once, as unknown.
                None if !crate::template::eval::missing(
                    b.entries().unwrap_or_default(),
                    "sources",
                ) => {}
                None => scope.error(
                    b.span.clone(),
                    format!("build `{bname}` is missing the required key `sources`"),
                    Some("add `sources = [\"TYPE.NAME\"]`".into()),
                ),
                Some(e) => match &e.value.kind {
                    NodeKind::List(items) => {
                        for item in items {
                            let Some(text) = item.as_literal_str() else {
                                scope.error(item.span.clone(), "`sources` entries must be plain strings such as \"oci.debian\"", None);
                                continue;
                            };
                            let text = text.strip_prefix("source.").unwrap_or(&text).to_string();
                            match source_names.iter().position(|n| *n == text) {
                                Some(idx) => {
                                    used[idx] = true;
                                    picked.push(idx);
                                }
                                None => scope.error(
                                    item.span.clone(),
                                    format!("build `{bname}` uses undeclared source `{text}`"),
                                    did_you_mean(&text, source_names.iter().map(String::as_str))
                                        .or(Some(format!("declare it as `[source.{text}]`"))),
                                ),
                            }
                        }
                    }
                    _ => scope.error(
                        e.value.span.clone(),
                        format!(
                            "`sources` must be an array of strings, found {}",
                            e.value.type_name()
                        ),
                        None,
                    ),
                },
            }
            let provisioners: Vec<&Node> = match b.get("provisioner").map(|e| &e.value) {
                None => vec![],
                Some(Node {
                    kind: NodeKind::List(items),
                    ..
                }) => items.iter().collect(),
                Some(n) => {
                    scope.error(
                        n.span.clone(),
                        "`provisioner` must be an array of tables",
                        Some("write `[[build.provisioner]]`".into()),
                    );
                    vec![]
                }
            };
            let tests: Vec<&Node> = match b.get("test").map(|e| &e.value) {
                None => vec![],
                Some(Node {
                    kind: NodeKind::List(items),
                    ..
                }) => items.iter().collect(),
                Some(n) => {
                    scope.error(
                        n.span.clone(),
                        "`test` must be an array of tables",
                        Some("write `[[build.test]]`".into()),
                    );
                    vec![]
                }
            };
            for idx in picked {
                let s = &sources[idx];
                let job_scope_refs = JobRefs {
                    build_name: bname.clone(),
                    source_type: s.ty.clone(),
                    source_name: s.name.clone(),
                };
                if let Some(job) = self.job(
                    scope,
                    schema,
                    s,
                    job_scope_refs,
                    b,
                    (&provisioners, &tests),
                    &source_names,
                ) {
                    jobs.push(job);
                }
            }
        }
        // Sources no build uses are still checked.
        for (s, used) in sources.iter().zip(used) {
            if !used {
                scope.with_job(
                    JobRefs {
                        build_name: String::new(),
                        source_type: s.ty.clone(),
                        source_name: s.name.clone(),
                    },
                    |sc| {
                        let v =
                            sc.eval_table(s.node, s.fields, &format!("source.{}.{}", s.ty, s.name));
                        self.check_source_settings(sc, schema, s, v.as_ref());
                    },
                );
            }
        }
        self.select(scope, jobs, opts)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn job(
        &self,
        scope: &Scope,
        schema: &TemplateSchema,
        s: &SourceDecl,
        refs: JobRefs,
        build: &Node,
        (provisioners, tests): (&[&Node], &[&Node]),
        source_names: &[String],
    ) -> Option<JobPlan> {
        let bname = refs.build_name.clone();
        let job_source = format!("{}.{}", s.ty, s.name);
        scope.with_job(refs, |sc| {
            let source = sc.eval_table(s.node, s.fields, &format!("source.{}.{}", s.ty, s.name));
            let mut ok = self.check_source_settings(sc, schema, s, source.as_ref());
            let mut plans = vec![];
            for (i, p) in provisioners.iter().enumerate() {
                match self.provisioner(sc, schema, p, i + 1, &job_source, source_names) {
                    Some(Some(plan)) => plans.push(plan),
                    Some(None) => {}
                    None => ok = false,
                }
            }
            let mut test_plans = vec![];
            for (i, t) in tests.iter().enumerate() {
                match self.test(sc, schema, t, i + 1, &job_source, source_names) {
                    Some(Some(plan)) => test_plans.push(plan),
                    Some(None) => {}
                    None => ok = false,
                }
            }
            let sub =
                |key: &str, fields: &'static [Field]| -> Option<Option<BTreeMap<String, Value>>> {
                    match build.get(key) {
                        None => Some(None),
                        Some(e) => match sc.eval_table(&e.value, fields, &format!("build.{key}")) {
                            Some(Value::Map(m)) => Some(Some(m)),
                            _ => None,
                        },
                    }
                };
            let sign = sub("sign", SIGN_FIELDS);
            let policy = sub("policy", POLICY_FIELDS).map(|m| {
                let m = m?;
                let files = match m.get("files") {
                    Some(Value::List(l)) => l
                        .iter()
                        .filter_map(Value::as_interpolated)
                        .map(std::path::PathBuf::from)
                        .collect(),
                    _ => vec![],
                };
                let entrypoint = match m.get("entrypoint") {
                    Some(v) => v.as_interpolated().unwrap_or_default(),
                    None => "data.kiln.promote".to_string(),
                };
                let span = build
                    .get("policy")
                    .map(|p| p.key_span.clone())
                    .unwrap_or(0..0);
                let (line, col) = self.file.line_col(span.start);
                Some(crate::template::plan::PolicyPlan {
                    files,
                    entrypoint,
                    at: format!("{}:{line}:{col}", self.file.name),
                })
            });
            let register = sub("register", REGISTER_FIELDS);
            let sbom = sub("sbom", SBOM_FIELDS).map(|m| {
                matches!(
                    m.as_ref().and_then(|m| m.get("enabled")),
                    Some(Value::Bool(true))
                )
            });
            if let Some(Some(r)) = &register {
                if let Some(Value::List(channels)) = r.get("channels") {
                    let span = build
                        .get("register")
                        .and_then(|r| r.value.get("channels"))
                        .map(|c| c.value.span.clone())
                        .unwrap_or(0..0);
                    for ch in channels.iter().filter_map(Value::as_interpolated) {
                        if !crate::template::schema::is_valid_name(&ch) {
                            sc.error(
                                span.clone(),
                                format!("`build.register.channels`: `{ch}` is not a valid channel name"),
                                Some("letters, digits, `-`, `_`, `.`, starting with a letter or digit: a channel becomes an image tag".into()),
                            );
                        }
                    }
                }
            }
            let rebuild = sub("rebuild", REBUILD_FIELDS).map(|r| {
                let when = r.and_then(|mut m| m.remove("when"));
                let Some(Value::List(items)) = when else {
                    return vec![];
                };
                let span = build
                    .get("rebuild")
                    .and_then(|r| r.value.get("when"))
                    .map(|w| w.value.span.clone())
                    .unwrap_or(0..0);
                items
                    .iter()
                    .filter_map(|v| {
                        let text = v.as_interpolated()?;
                        RebuildTrigger::parse(&text)
                            .map_err(|msg| {
                                sc.error(span.clone(), format!("`build.rebuild.when`: {msg}"), None)
                            })
                            .ok()
                    })
                    .collect()
            });
            let Some(Value::Map(source)) = source else {
                return None;
            };
            if !ok {
                return None;
            }
            Some(JobPlan {
                build: bname,
                source_type: s.ty.clone(),
                source_name: s.name.clone(),
                source,
                provisioners: plans,
                tests: test_plans,
                sign: sign?,
                register: register?,
                sbom: sbom?,
                rebuild: rebuild?,
                policy: policy?,
            })
        })
    }

    /// The source type's own checks of its resolved settings; false when
    /// any failed. Each error points at the characters it is about when
    /// the template spells the string as it is, else at the string.
    fn check_source_settings(
        &self,
        sc: &Scope,
        schema: &TemplateSchema,
        s: &SourceDecl,
        settings: Option<&Value>,
    ) -> bool {
        let Some(Value::Map(settings)) = settings else {
            return true;
        };
        let problems = (schema.source_checks)(&s.ty, settings);
        for p in &problems {
            let ctx = format!("source.{}.{}", s.ty, s.name);
            let entry = s.node.get(p.key);
            let mut node = entry.map(|e| &e.value);
            let mut value = settings.get(p.key);
            if let Some(i) = p.item {
                node = match node.map(|n| &n.kind) {
                    Some(NodeKind::List(items)) => items.get(i),
                    _ => None,
                };
                value = match value {
                    Some(Value::List(items)) => items.get(i),
                    _ => None,
                };
            }
            let mut message = format!("`{ctx}`: {}", p.message);
            let span = match (node, value, &p.bytes) {
                (Some(n), Some(Value::Str(v)), Some(bytes)) => {
                    let raw = self.file.text.get(n.span.clone()).unwrap_or_default();
                    match crate::template::strpos::value_offsets(raw, v) {
                        Some(map) if bytes.end < map.len() => {
                            n.span.start + map[bytes.start]..n.span.start + map[bytes.end]
                        }
                        _ => {
                            message.push_str(&format!(
                                " (at byte {} of the string's value, which the template does not spell as it is — `${{…}}` or `$${{`: the place shown is the string's start)",
                                bytes.start
                            ));
                            n.span.clone()
                        }
                    }
                }
                (Some(n), _, _) => n.span.clone(),
                (None, _, _) => entry.map_or(s.span.clone(), |e| e.key_span.clone()),
            };
            sc.error(span, message, p.help.clone());
        }
        problems.is_empty()
    }

    /// Applies `--only` / `--except`.
    pub(super) fn select(
        &self,
        scope: &Scope,
        jobs: Vec<JobPlan>,
        opts: &PlanOptions,
    ) -> Vec<JobPlan> {
        let matches = |pat: &str, j: &JobPlan| {
            pat == j.name()
                || pat == format!("{}.{}", j.source_type, j.source_name)
                || pat == j.build
        };
        let mut ok = true;
        for (flag, pats) in [("--only", &opts.only), ("--except", &opts.except)] {
            for p in pats.iter() {
                if !jobs.iter().any(|j| matches(p, j)) {
                    ok = false;
                    let names: Vec<String> = jobs
                        .iter()
                        .flat_map(|j| [j.name(), format!("{}.{}", j.source_type, j.source_name)])
                        .collect();
                    let mut d = Diagnostic::new(format!("{flag} `{p}` matches no build"));
                    d = d.with_help(
                        did_you_mean(p, names.iter().map(String::as_str))
                            .unwrap_or_else(|| format!("builds: {}", names.join(", "))),
                    );
                    scope.push(d);
                }
            }
        }
        if !ok {
            return jobs;
        }
        jobs.into_iter()
            .filter(|j| opts.only.is_empty() || opts.only.iter().any(|p| matches(p, j)))
            .filter(|j| !opts.except.iter().any(|p| matches(p, j)))
            .collect()
    }
}

/// A `[source.TYPE.NAME]` table and the fields its type takes.
pub(super) struct SourceDecl<'n> {
    ty: String,
    name: String,
    span: Span,
    node: &'n Node,
    fields: &'static [Field],
}

pub(super) fn table_map(node: Option<&Node>) -> BTreeMap<String, Node> {
    node.and_then(Node::entries)
        .unwrap_or_default()
        .iter()
        .map(|e| (e.key.clone(), e.value.clone()))
        .collect()
}

/// Reports unknown and missing keys of a table without evaluating it.
pub(super) fn check_keys(scope: &Scope, node: &Node, fields: &[Field], ctx: &str) {
    let Some(entries) = node.entries() else {
        scope.error(node.span.clone(), format!("`{ctx}` must be a table"), None);
        return;
    };
    for e in entries {
        if !fields.iter().any(|f| f.name == e.key) {
            scope.unknown_key(
                e.key_span.clone(),
                &e.key,
                ctx,
                fields.iter().map(|f| f.name),
            );
        }
    }
    for f in fields.iter().filter(|f| f.required) {
        if crate::template::eval::missing(entries, f.name) {
            scope.error(
                node.span.clone(),
                format!("`{ctx}` is missing the required key `{}`", f.name),
                None,
            );
        }
    }
}
