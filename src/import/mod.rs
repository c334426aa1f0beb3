//! `kiln import packer`: reads Packer templates (HCL2 files, a folder of
//! them with their `.auto.pkrvars.hcl`, or a legacy JSON template) and
//! writes the kiln template they amount to, plus a [`report::Report`] of
//! every construct converted approximately or not at all. `hcl` and `json`
//! read the two syntaxes into one [`model`]; `translate` turns Packer
//! expressions into kiln `${…}`; `convert`, `sources` and `steps` map the
//! blocks.
//!
//! Architecture invariant: the importer only reads Packer files and returns
//! text; it never writes a value marked sensitive (or read from Vault) into
//! the template, and never contacts anything.

mod ami_communicator;
pub mod convert;
pub mod gotmpl;
pub mod hcl;
pub mod json;
pub mod model;
pub mod report;
pub mod sources;
pub mod steps;
pub mod translate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::template::fmt::format_template;
use crate::template::{Diagnostic, Diagnostics, SourceFile};
use model::Input;
use report::{Level, Report};

/// The result of an import.
pub struct Imported {
    /// The kiln template, formatted as `kiln fmt` does.
    pub template: String,
    pub report: Report,
}

/// Imports the Packer template(s) at `paths` as a kiln template that will
/// live in `out_dir` (relative paths in it are written from there).
pub fn import_packer(paths: &[PathBuf], out_dir: &Path) -> Result<Imported, Diagnostics> {
    let mut report = Report::default();
    let input = read_input(paths, &mut report)?;
    let out_dir =
        convert::normalize(&std::path::absolute(out_dir).unwrap_or(out_dir.to_path_buf()));
    let (doc, mut found) = convert::Converter::new(&input, out_dir).run();
    report.findings.append(&mut found.findings);
    report.masked.append(&mut found.masked);
    let header = format!(
        "# Imported from Packer ({}) by `kiln import packer`.\n# Review the import report: it lists what was converted approximately or not at all.\n\n",
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let text = format!("{header}{doc}");
    let template = format_template(&text).map_err(|(m, _)| {
        Diagnostics(vec![Diagnostic::new(format!(
            "internal error: the imported template is not valid TOML: {m}"
        ))])
    })?;
    Ok(Imported { template, report })
}

/// The Packer files at `paths`: folders give their `*.pkr.hcl` and
/// `*.auto.pkrvars.hcl`; files are read by their name.
fn read_input(paths: &[PathBuf], report: &mut Report) -> Result<Input, Diagnostics> {
    let mut hcl_files = vec![];
    let mut var_files = vec![];
    let mut json_files = vec![];
    let mut errors = Diagnostics::default();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = match std::fs::read_dir(p) {
                Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                Err(e) => {
                    errors.push(Diagnostic::new(format!(
                        "cannot read `{}`: {e}",
                        p.display()
                    )));
                    continue;
                }
            };
            entries.sort();
            for e in entries {
                let name = e
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                if name.ends_with(".auto.pkrvars.hcl") {
                    var_files.push(e);
                } else if name.ends_with(".pkr.hcl") {
                    hcl_files.push(e);
                } else if name.ends_with(".pkr.json") || name.ends_with(".pkrvars.json") {
                    errors.push(Diagnostic::new(format!(
                        "`{}`: HCL2 templates in JSON syntax are not supported yet; convert it to `.pkr.hcl`",
                        e.display()
                    )));
                }
            }
        } else {
            let name = p.display().to_string();
            if name.ends_with(".pkrvars.hcl") {
                var_files.push(p.clone());
            } else if name.ends_with(".pkr.json") || name.ends_with(".pkrvars.json") {
                errors.push(Diagnostic::new(format!(
                    "`{name}`: HCL2 templates in JSON syntax are not supported yet; convert it to `.pkr.hcl`"
                )));
            } else if name.ends_with(".json") {
                json_files.push(p.clone());
            } else {
                hcl_files.push(p.clone());
            }
        }
    }
    if !json_files.is_empty() && (json_files.len() > 1 || !hcl_files.is_empty()) {
        errors.push(Diagnostic::new(
            "a legacy JSON template is imported on its own (one file, no HCL files beside it)",
        ));
    }
    if hcl_files.is_empty() && json_files.is_empty() && errors.is_empty() {
        errors.push(Diagnostic::new(
            "no Packer template found: give `.pkr.hcl` files, a folder of them, or a legacy `.json` template",
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let first = json_files
        .first()
        .or(hcl_files.first())
        .cloned()
        .unwrap_or_default();
    let root = first.parent().map(Path::to_path_buf).unwrap_or_default();
    let root = std::path::absolute(if root.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &root
    })
    .unwrap_or(root);
    let mut input = Input {
        root: convert::normalize(&root),
        legacy_json: !json_files.is_empty(),
        ..Input::default()
    };
    let read = |p: &Path| -> Result<Arc<SourceFile>, Diagnostic> {
        let text = std::fs::read_to_string(p)
            .map_err(|e| Diagnostic::new(format!("cannot read `{}`: {e}", p.display())))?;
        Ok(Arc::new(SourceFile {
            path: p.to_path_buf(),
            name: p.display().to_string(),
            text,
        }))
    };
    for p in &json_files {
        let file = read(p).map_err(|d| Diagnostics(vec![d]))?;
        let t = json::read(&file).map_err(|d| Diagnostics(vec![d]))?;
        input.blocks.extend(t.blocks);
        for (key, loc) in t.unknown {
            report.push(
                Level::NotConverted,
                format!("\"{key}\""),
                Some(&loc),
                "kiln templates have no such section",
                "convert it by hand, or leave it out",
            );
        }
    }
    for p in &hcl_files {
        let file = read(p).map_err(|d| Diagnostics(vec![d]))?;
        let h = hcl::read(&file).map_err(|d| Diagnostics(vec![d]))?;
        input.blocks.extend(h.blocks);
        for a in h.attrs {
            report.push(
                Level::NotConverted,
                format!("`{}` at the top level", a.key),
                Some(&a.loc),
                "Packer templates hold blocks at the top level",
                "move it into a block",
            );
        }
    }
    for p in &var_files {
        let file = read(p).map_err(|d| Diagnostics(vec![d]))?;
        let h = hcl::read(&file).map_err(|d| Diagnostics(vec![d]))?;
        input.var_values.extend(h.attrs);
    }
    Ok(input)
}
