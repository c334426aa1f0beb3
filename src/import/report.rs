//! The import report: every Packer construct converted approximately or not
//! at all, with its place in the Packer file, why, and what to do. Shown
//! rustc-style on stderr (through [`Diagnostic`]) or as JSON.

use std::sync::Arc;

use serde_json::json;

use super::model::Loc;
use crate::template::{Diagnostic, SourceFile};

/// How well a construct was converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Left out: a person has to do it.
    NotConverted,
    /// Written, but it does not mean exactly what it meant in Packer.
    Approximate,
    /// Converted to kiln's own equivalent; worth knowing, nothing to do.
    Note,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::NotConverted => "not-converted",
            Level::Approximate => "approximate",
            Level::Note => "note",
        }
    }
}

/// One entry of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub level: Level,
    /// The Packer construct, as a Packer user names it: `source "qemu" "x".boot_command`,
    /// `provisioner "ansible"`, `vault()`.
    pub construct: String,
    pub loc: Option<Loc>,
    /// Why it was not converted exactly.
    pub why: String,
    /// What to do.
    pub help: String,
}

/// Every finding of one import, in the order found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Sensitive values written in the Packer files (defaults of sensitive
    /// variables): masked in the source lines the report shows.
    pub masked: Vec<String>,
}

impl Report {
    pub fn push(
        &mut self,
        level: Level,
        construct: impl Into<String>,
        loc: Option<&Loc>,
        why: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.findings.push(Finding {
            level,
            construct: construct.into(),
            loc: loc.cloned(),
            why: why.into(),
            help: help.into(),
        });
    }

    /// True when a person has to look at something.
    pub fn needs_a_person(&self) -> bool {
        self.findings.iter().any(|f| f.level != Level::Note)
    }

    /// Findings sorted by file and position (the order a person fixes them in).
    pub fn sorted(&self) -> Vec<&Finding> {
        let mut out: Vec<&Finding> = self.findings.iter().collect();
        out.sort_by_key(|f| {
            f.loc
                .as_ref()
                .map(|l| (l.file.name.clone(), l.span.start))
                .unwrap_or_default()
        });
        out
    }

    /// The report as rustc-style text.
    pub fn render(&self, color: bool) -> String {
        let mut out = String::new();
        for f in self.sorted() {
            let (level, prefix) = match f.level {
                Level::NotConverted => ("warning", "not converted"),
                Level::Approximate => ("warning", "converted approximately"),
                Level::Note => ("note", "converted"),
            };
            let message = format!("{prefix}: {}: {}", f.construct, f.why);
            let d = match &f.loc {
                Some(l) => Diagnostic::at(&self.mask(&l.file), l.span.clone(), message),
                None => Diagnostic::new(message),
            }
            .with_help(f.help.clone());
            out.push_str(&d.render_as(level, color));
            out.push('\n');
        }
        let count = |l: Level| self.findings.iter().filter(|f| f.level == l).count();
        out.push_str(&format!(
            "import: {} not converted, {} converted approximately, {} note{}\n",
            count(Level::NotConverted),
            count(Level::Approximate),
            count(Level::Note),
            if count(Level::Note) == 1 { "" } else { "s" }
        ));
        out
    }

    /// `file` with every sensitive value replaced by as many `*` (so
    /// spans still point at the same bytes).
    fn mask(&self, file: &Arc<SourceFile>) -> Arc<SourceFile> {
        let hit = self
            .masked
            .iter()
            .any(|m| !m.is_empty() && file.text.contains(m.as_str()));
        if !hit {
            return file.clone();
        }
        let mut text = file.text.clone();
        for m in self.masked.iter().filter(|m| !m.is_empty()) {
            text = text.replace(m.as_str(), &"*".repeat(m.len()));
        }
        Arc::new(SourceFile {
            path: file.path.clone(),
            name: file.name.clone(),
            text,
        })
    }

    /// The findings as JSON objects.
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.sorted()
            .into_iter()
            .map(|f| {
                let mut v = json!({
                    "level": f.level.name(),
                    "construct": f.construct,
                    "why": f.why,
                    "help": f.help,
                });
                if let Some(l) = &f.loc {
                    let (line, column) = l.file.line_col(l.span.start);
                    v["file"] = l.file.name.clone().into();
                    v["line"] = line.into();
                    v["column"] = column.into();
                }
                v
            })
            .collect()
    }
}
