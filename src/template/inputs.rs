//! The local files a resolved template reads when it is built — source
//! fields of kind [`Kind::InputFile`] (a QEMU base disk, kernel, initrd,
//! SSH key), `file` provisioner sources and the `[build.sign]` key file —
//! checked to exist. `kiln validate` and `kiln build` report each missing
//! one at its `file:line:col`; commands that only read the template (`plan`,
//! `inspect`, `ci`) do not, since a pipeline may make those files later.
//! (Shell scripts are [`Kind::ExistingFile`], checked everywhere.)

use std::collections::HashSet;

use super::diagnostic::{Diagnostic, Diagnostics};
use super::node::{Node, NodeKind};
use super::plan::BuildPlan;
use super::resolve::Template;
use super::schema::Kind;
use super::schema::TemplateSchema;
use super::value::Value;

impl Template {
    /// Every local input file of `plan` (made from this template) that
    /// does not exist, as errors at the place that names it.
    pub fn missing_inputs(&self, plan: &BuildPlan, schema: &TemplateSchema) -> Diagnostics {
        let mut diags = Diagnostics::default();
        let Some(root) = &self.root else {
            return diags;
        };
        let dir = plan.template_dir();
        let mut reported = HashSet::new();
        let mut report = |node: Option<&Node>, message: String, help: &str| {
            let span = node.map(|n| n.span.clone()).unwrap_or(0..0);
            if reported.insert((span.start, message.clone())) {
                diags.push(
                    Diagnostic::at(&self.file, span, message)
                        .with_label("here")
                        .with_help(help),
                );
            }
        };
        let builds: Vec<&Node> = match root.get("build").map(|e| &e.value.kind) {
            Some(NodeKind::List(items)) => items.iter().collect(),
            Some(NodeKind::Table(_)) => root.get("build").map(|e| &e.value).into_iter().collect(),
            _ => vec![],
        };
        // A build's name as the plan computes it.
        let build_node = |name: &str| {
            builds.iter().enumerate().find_map(|(i, b)| {
                let n = match b.get("name").and_then(|e| e.value.as_literal_str()) {
                    Some(n) => n,
                    None if builds.len() == 1 => "build".to_string(),
                    None => format!("build-{}", i + 1),
                };
                (n == name).then_some(*b)
            })
        };
        for job in &plan.jobs {
            // Source fields that name input files.
            let fields = schema
                .sources
                .iter()
                .find(|(t, _)| *t == job.source_type)
                .map(|(_, f)| *f)
                .unwrap_or_default();
            let source_node = root
                .get("source")
                .and_then(|s| s.value.get(&job.source_type))
                .and_then(|t| t.value.get(&job.source_name))
                .map(|e| &e.value);
            for f in fields.iter().filter(|f| matches!(f.kind, Kind::InputFile)) {
                let Some(path) = job.source.get(f.name).and_then(Value::as_interpolated) else {
                    continue;
                };
                if !dir.join(&path).is_file() {
                    report(
                        source_node.and_then(|n| n.get(f.name)).map(|e| &e.value),
                        format!(
                            "`source.{}.{}.{}`: the file `{path}` does not exist",
                            job.source_type, job.source_name, f.name
                        ),
                        "the build reads it; relative paths resolve against the template's folder",
                    );
                }
            }
            let build = build_node(&job.build);
            // `file` provisioners that upload a local file.
            for p in &job.provisioners {
                let text = |k: &str| p.config.get(k).and_then(Value::as_interpolated);
                if p.kind != "file" || text("direction").as_deref() == Some("download") {
                    continue;
                }
                let Some(source) = text("source") else {
                    continue;
                };
                let path = dir.join(&source);
                if !path.exists() {
                    let node = build
                        .and_then(|b| b.get("provisioner"))
                        .and_then(|l| match &l.value.kind {
                            NodeKind::List(items) => items.get(p.index - 1),
                            _ => None,
                        })
                        .and_then(|n| n.get("source"))
                        .map(|e| &e.value);
                    report(
                        node,
                        format!(
                            "`build.provisioner[{}]` (file): the source `{source}` does not exist",
                            p.index
                        ),
                        "relative paths resolve against the template's folder",
                    );
                }
            }
            // `[[build.test]]` fields that name local files (`goss`).
            for t in &job.tests {
                let fields = schema
                    .tests
                    .iter()
                    .find(|(ty, _)| *ty == t.kind)
                    .map(|(_, f)| *f)
                    .unwrap_or_default();
                for f in fields.iter().filter(|f| matches!(f.kind, Kind::InputFile)) {
                    let Some(path) = t.config.get(f.name).and_then(Value::as_interpolated) else {
                        continue;
                    };
                    if dir.join(&path).is_file() {
                        continue;
                    }
                    let node = build
                        .and_then(|b| b.get("test"))
                        .and_then(|l| match &l.value.kind {
                            NodeKind::List(items) => items.get(t.index - 1),
                            _ => None,
                        })
                        .and_then(|n| n.get(f.name))
                        .map(|e| &e.value);
                    report(
                        node,
                        format!(
                            "`build.test[{}]` ({}): `{}`: the file `{path}` does not exist",
                            t.index, t.kind, f.name
                        ),
                        "relative paths resolve against the template's folder",
                    );
                }
            }
            // The signing key file (not a Vault transit key, not given in
            // KILN_SIGNING_KEY).
            let key = job
                .sign
                .as_ref()
                .and_then(|s| s.get("key"))
                .and_then(Value::as_interpolated);
            let from_env = std::env::var("KILN_SIGNING_KEY").is_ok_and(|k| !k.is_empty());
            if let Some(key) = key.filter(|k| !k.starts_with("vault-transit:") && !from_env) {
                if !dir.join(&key).is_file() {
                    let node = build
                        .and_then(|b| b.get("sign"))
                        .and_then(|s| s.value.get("key"))
                        .map(|e| &e.value);
                    report(
                        node,
                        format!("`build.sign.key`: the signing key `{key}` does not exist"),
                        "make one with `kiln keygen --out PREFIX` (or `kiln init`), or give it in KILN_SIGNING_KEY",
                    );
                }
            }
        }
        diags
    }
}
