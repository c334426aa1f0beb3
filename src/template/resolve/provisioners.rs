//! `[[build.provisioner]]` and `[[build.test]]`: each entry's type,
//! `only`/`except`, settings checked against the type's fields and (for
//! provisioners) the provisioner's own checks.

use super::tables::PROVISIONER_COMMON;
use super::Template;
use crate::template::diagnostic::did_you_mean;
use crate::template::eval::Scope;
use crate::template::node::{Node, NodeKind};
use crate::template::plan::{ProvisionerPlan, TestPlan};
use crate::template::schema::{Field, ProvisionerCheck, TemplateSchema, STR_LIST};
use crate::template::value::Value;

impl Template {
    /// `Some(None)` when the provisioner does not apply to this source;
    /// `None` after an error.
    pub(super) fn provisioner(
        &self,
        sc: &Scope,
        schema: &TemplateSchema,
        p: &Node,
        index: usize,
        job_source: &str,
        source_names: &[String],
    ) -> Option<Option<ProvisionerPlan>> {
        let block = Block {
            what: "provisioner",
            types: &schema.provisioners,
            checks: schema.provisioner_checks,
        };
        self.typed_block(sc, &block, p, index, job_source, source_names)
    }

    /// A `[[build.test]]`, resolved like a provisioner against the test
    /// types' fields.
    pub(super) fn test(
        &self,
        sc: &Scope,
        schema: &TemplateSchema,
        p: &Node,
        index: usize,
        job_source: &str,
        source_names: &[String],
    ) -> Option<Option<TestPlan>> {
        let block = Block {
            what: "test",
            types: &schema.tests,
            checks: |_, _| vec![],
        };
        self.typed_block(sc, &block, p, index, job_source, source_names)
    }

    fn typed_block(
        &self,
        sc: &Scope,
        block: &Block,
        p: &Node,
        index: usize,
        job_source: &str,
        source_names: &[String],
    ) -> Option<Option<ProvisionerPlan>> {
        let what = block.what;
        let ctx = format!("build.{what}[{index}]");
        let Some(entries) = p.entries() else {
            sc.error(p.span.clone(), format!("`{ctx}` must be a table"), None);
            return None;
        };
        let kinds = || block.types.iter().map(|(k, _)| *k);
        let Some(ty) = p.get("type") else {
            sc.error(
                p.span.clone(),
                format!("`{ctx}` is missing the required key `type`"),
                Some(format!(
                    "{what} types: {}",
                    kinds().collect::<Vec<_>>().join(", ")
                )),
            );
            return None;
        };
        let Some(kind) = ty.value.as_literal_str() else {
            sc.error(ty.value.span.clone(), "`type` must be a plain string", None);
            return None;
        };
        let Some((_, fields)) = block.types.iter().find(|(k, _)| *k == kind) else {
            sc.error(
                ty.value.span.clone(),
                format!("unknown {what} type `{kind}`"),
                did_you_mean(&kind, kinds()).or(Some(format!(
                    "{what} types: {}",
                    kinds().collect::<Vec<_>>().join(", ")
                ))),
            );
            return None;
        };
        let ctx = format!("{ctx} ({kind})");
        // only / except select sources by `TYPE.NAME`.
        let mut applies = true;
        for key in ["only", "except"] {
            let Some(e) = p.get(key) else { continue };
            let Some(Value::List(items)) = sc.eval_node(&e.value, &STR_LIST, false, key) else {
                return None;
            };
            let names: Vec<String> = items
                .iter()
                .filter_map(Value::as_interpolated)
                .map(|s| s.strip_prefix("source.").unwrap_or(&s).to_string())
                .collect();
            for n in &names {
                if !source_names.contains(n) {
                    sc.error(
                        e.value.span.clone(),
                        format!("`{key}` names undeclared source `{n}`"),
                        did_you_mean(n, source_names.iter().map(String::as_str)),
                    );
                    return None;
                }
            }
            let hit = names.iter().any(|n| n == job_source);
            applies &= if key == "only" { hit } else { !hit };
        }
        // The remaining keys are the provisioner's own.
        let own: Vec<_> = entries
            .iter()
            .filter(|e| !PROVISIONER_COMMON.contains(&e.key.as_str()))
            .cloned()
            .collect();
        let own_node = Node {
            kind: NodeKind::Table(own),
            span: p.span.clone(),
        };
        let all_keys: Vec<&str> = fields
            .iter()
            .map(|f| f.name)
            .chain(PROVISIONER_COMMON.iter().copied())
            .collect();
        for e in own_node.entries().unwrap_or_default() {
            if !fields.iter().any(|f| f.name == e.key) {
                sc.unknown_key(e.key_span.clone(), &e.key, &ctx, all_keys.iter().copied());
            }
        }
        let known: Vec<_> = own_node
            .entries()
            .unwrap_or_default()
            .iter()
            .filter(|e| fields.iter().any(|f| f.name == e.key))
            .cloned()
            .collect();
        let known_node = Node {
            kind: NodeKind::Table(known),
            span: p.span.clone(),
        };
        let Some(Value::Map(config)) = sc.eval_table(&known_node, fields, &ctx) else {
            return None;
        };
        let problems = (block.checks)(&kind, &config);
        for (key, message) in &problems {
            let span = p.get(key).map_or(p.span.clone(), |e| e.key_span.clone());
            sc.error(span, format!("`{ctx}`: {message}"), None);
        }
        if !problems.is_empty() {
            return None;
        }
        let place = |span: &crate::template::diagnostic::Span| {
            let (line, col) = self.file.line_col(span.start);
            format!("{}:{line}:{col}", self.file.name)
        };
        let inline_at = match p.get("inline").map(|e| &e.value.kind) {
            Some(NodeKind::List(items)) => items.iter().map(|i| place(&i.span)).collect(),
            _ => vec![],
        };
        Some(applies.then_some(ProvisionerPlan {
            kind,
            index,
            config,
            at: place(&ty.key_span),
            inline_at,
        }))
    }
}

/// A kind of typed block: its name in messages, its types and their
/// fields, and the checks beyond the types.
struct Block<'a> {
    what: &'static str,
    types: &'a [(&'static str, &'static [Field])],
    checks: ProvisionerCheck,
}
