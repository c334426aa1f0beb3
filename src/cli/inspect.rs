//! `kiln inspect`: the resolved plan, for people or as JSON. Secrets are
//! never fetched, and every sensitive value shows as `<sensitive>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::{load_plan, print_diagnostics, Exit, VarArgs};
use crate::template::value::display_value;
use crate::template::{BuildPlan, SecretSource, Value};
use crate::ui::Redactor;

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub vars: VarArgs,
    /// Print the plan as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[arg(value_name = "TEMPLATE")]
    pub template: PathBuf,
}

pub fn exec(args: InspectArgs) -> Exit {
    let plan = match load_plan(
        &args.template,
        &args.vars,
        &[],
        &[],
        &crate::secrets::unresolved,
    ) {
        Ok(p) => p,
        Err(d) => {
            print_diagnostics(&d);
            return Exit::BadInput;
        }
    };
    let text = if args.json {
        serde_json::to_string_pretty(&to_json(&plan)).expect("serializable")
    } else {
        to_text(&plan)
    };
    // Values are masked structurally; the redactor is a second line of
    // defence for anything derived in a way the masking did not see.
    println!("{}", Redactor::new(plan.sensitive_strings()).redact(&text));
    Exit::Success
}

fn masked_map(m: &BTreeMap<String, Value>) -> serde_json::Value {
    serde_json::Value::Object(
        m.iter()
            .map(|(k, v)| (k.clone(), v.to_masked_json()))
            .collect(),
    )
}

fn secret_source(s: &SecretSource) -> String {
    match s {
        SecretSource::Vault { path, key, version } => {
            format!(
                "vault {path}#{key}{}",
                version
                    .map(|v| format!(" (version {v})"))
                    .unwrap_or_default()
            )
        }
        SecretSource::Env(n) => format!("env {n}"),
        SecretSource::File(p) => format!("file {}", p.display()),
    }
}

pub fn to_json(plan: &BuildPlan) -> serde_json::Value {
    json!({
        "template": plan.template,
        "template_digest": plan.template_digest,
        "image": plan.image,
        "variables": plan.variables.iter().map(|v| json!({
            "name": v.name, "type": v.ty.name(), "value": v.value.to_masked_json(), "sensitive": v.value.is_sensitive(), "description": v.description,
        })).collect::<Vec<_>>(),
        "secrets": plan.secrets.iter().map(|s| json!({ "name": s.name, "source": secret_source(&s.source), "value": crate::ui::redact::SENSITIVE })).collect::<Vec<_>>(),
        "locals": masked_map(&plan.locals),
        "jobs": plan.jobs.iter().map(|j| json!({
            "name": j.name(), "build": j.build, "source_type": j.source_type, "source_name": j.source_name,
            "source": masked_map(&j.source),
            "provisioners": j.provisioners.iter().map(|p| json!({ "index": p.index, "type": p.kind, "config": masked_map(&p.config) })).collect::<Vec<_>>(),
            "sign": j.sign.as_ref().map(masked_map),
            "register": j.register.as_ref().map(masked_map),
        })).collect::<Vec<_>>(),
    })
}

fn to_text(plan: &BuildPlan) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "template: {} ({})",
        plan.template.display(),
        plan.template_digest
    ));
    line(format!("image: {} {}", plan.image.name, plan.image.version));
    if let Some(d) = &plan.image.description {
        line(format!("  {d}"));
    }
    if !plan.variables.is_empty() {
        line("variables:".into());
        for v in &plan.variables {
            line(format!(
                "  {} ({}) = {}",
                v.name,
                v.ty.name(),
                display_value(&v.value)
            ));
        }
    }
    if !plan.secrets.is_empty() {
        line("secrets:".into());
        for s in &plan.secrets {
            line(format!(
                "  {} from {} = {}",
                s.name,
                secret_source(&s.source),
                crate::ui::redact::SENSITIVE
            ));
        }
    }
    if !plan.locals.is_empty() {
        line("locals:".into());
        for (k, v) in &plan.locals {
            line(format!("  {k} = {}", display_value(v)));
        }
    }
    line("jobs:".into());
    for j in &plan.jobs {
        line(format!("  {}", j.name()));
        for (k, v) in &j.source {
            line(format!("    {k} = {}", display_value(v)));
        }
        for p in &j.provisioners {
            let settings: Vec<String> = p
                .config
                .iter()
                .map(|(k, v)| format!("{k} = {}", display_value(v)))
                .collect();
            line(format!(
                "    provisioner {} ({}): {}",
                p.index,
                p.kind,
                settings.join(", ")
            ));
        }
        if let Some(s) = &j.sign {
            line(format!(
                "    sign: {}",
                display_value(&Value::Map(s.clone()))
            ));
        }
        if let Some(r) = &j.register {
            line(format!(
                "    register: {}",
                display_value(&Value::Map(r.clone()))
            ));
        }
    }
    out.trim_end().to_string()
}
