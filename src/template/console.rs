//! `kiln console`: evaluates `${…}` expressions against a template, as
//! Packer's console does. The expression becomes one more local of a copy
//! of the template, so it sees exactly what the template's own strings
//! see (variables, locals, `image.*`, secrets as unknown, functions), and
//! its errors are the template engine's own.

use std::path::Path;

use super::plan::{FetchSecrets, PlanOptions};
use super::resolve::Template;
use super::schema::TemplateSchema;
use super::{Diagnostic, Diagnostics, Value};

/// The local the expression is evaluated as.
const LOCAL: &str = "kiln_console";

/// Evaluates `expr` (without `${ }`) against the template `text` read
/// from `path`.
pub fn evaluate(
    path: &Path,
    text: &str,
    expr: &str,
    schema: &TemplateSchema,
    opts: &PlanOptions,
    fetch: &FetchSecrets,
) -> Result<Value, Diagnostics> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        Diagnostics(vec![Diagnostic::new(format!(
            "`{}` is not valid TOML: {}",
            path.display(),
            e.message()
        ))])
    })?;
    let locals = doc
        .entry("locals")
        .or_insert(toml_edit::Item::Table(toml_edit::Table::new()));
    let Some(table) = locals.as_table_like_mut() else {
        return Err(Diagnostics(vec![Diagnostic::new(
            "`locals` must be a table",
        )]));
    };
    table.insert(LOCAL, toml_edit::value(format!("${{{expr}}}")));
    let template = Template::from_text(path, doc.to_string());
    let plan = template.plan(schema, opts, fetch)?;
    Ok(plan.locals.get(LOCAL).cloned().unwrap_or(Value::Unknown))
}
