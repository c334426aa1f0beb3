//! The promotion gate: Rego policies (`[build.policy]`, `kiln verify
//! --policy FILE.rego`) evaluated in-process by regorus over one input
//! document per artifact ([`input`]), with conftest's conventions: rules
//! named `deny`/`deny_*`/`violation`/`violation_*` in the entrypoint
//! package deny, `warn`/`warn_*` only warn. The verdict ([`Verdict`]) is
//! what the catalog's log records as a signed decision (docs/policy.md).
//!
//! Architecture invariant: evaluation only reads its files and its input;
//! a policy that cannot be read or parsed, or whose package defines no
//! deny rule, is an error (never an allow).

pub mod gate;
pub mod input;
pub mod vulnerabilities;

use std::path::PathBuf;

use serde::Serialize;

/// The package evaluated when `[build.policy]` names none.
pub const DEFAULT_ENTRYPOINT: &str = "data.kiln.promote";

/// What went wrong with a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A file that cannot be read.
    #[error("cannot read the policy `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Rego that does not parse or compile: regorus's message, which
    /// names `file:line:col` and shows the line.
    #[error("{0}")]
    Syntax(String),
    /// The entrypoint is not a package of the files, or defines no rule
    /// that can deny.
    #[error("{0}")]
    Entrypoint(String),
    /// Evaluation failed (a builtin error, a conflict of complete rules).
    #[error("policy evaluation failed: {0}")]
    Eval(String),
    /// An input the gate needs could not be read (a manifest, an SBOM).
    #[error("{0}")]
    Input(String),
}

/// One policy file, as evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PolicyFile {
    pub path: String,
    /// `sha256:` of its content.
    pub digest: String,
}

/// Policies loaded and parsed, ready to evaluate.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
    /// `data.kiln.promote`.
    pub entrypoint: String,
    pub files: Vec<PolicyFile>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("entrypoint", &self.entrypoint)
            .field("files", &self.files)
            .finish()
    }
}

/// One rule's result: its name and message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct Finding {
    /// The rule's name (`deny_failed_hardening`).
    pub rule: String,
    /// The set element: a string, or an object's `msg` (conftest's
    /// structured form), else its JSON.
    pub message: String,
}

/// The result of evaluating a policy on one input.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    pub denials: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.denials.is_empty()
    }
}

/// `deny`, `deny_*`, `violation`, `violation_*`: conftest's names for
/// rules that fail.
pub fn is_deny_rule(name: &str) -> bool {
    ["deny", "violation"]
        .iter()
        .any(|p| name == *p || name.starts_with(&format!("{p}_")))
}

/// `warn`, `warn_*`.
pub fn is_warn_rule(name: &str) -> bool {
    name == "warn" || name.starts_with("warn_")
}

/// `kiln.promote` or `data.kiln.promote` → `data.kiln.promote`; anything
/// but dotted Rego identifiers is refused.
pub fn normalize_entrypoint(e: &str) -> Result<String, PolicyError> {
    let bare = e.strip_prefix("data.").unwrap_or(e);
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if bare.split('.').all(ident) {
        Ok(format!("data.{bare}"))
    } else {
        Err(PolicyError::Entrypoint(format!(
            "`{e}` is not a package path: expected e.g. `data.kiln.promote`"
        )))
    }
}

impl Policy {
    /// Reads and parses `files` (Rego v1) and checks that `entrypoint` is
    /// one of their packages with at least one deny rule.
    pub fn load(files: &[PathBuf], entrypoint: &str) -> Result<Policy, PolicyError> {
        let entrypoint = normalize_entrypoint(entrypoint)?;
        if files.is_empty() {
            return Err(PolicyError::Entrypoint(
                "no policy file given (`[build.policy] files`)".into(),
            ));
        }
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        let mut recorded = vec![];
        let mut texts = vec![];
        for path in files {
            let text = fs_err::read_to_string(path).map_err(|e| PolicyError::Read {
                path: path.display().to_string(),
                source: e,
            })?;
            engine
                .add_policy(path.display().to_string(), text.clone())
                .map_err(|e| PolicyError::Syntax(syntax_message(&e.to_string())))?;
            texts.push(text.clone());
            recorded.push(PolicyFile {
                path: path.display().to_string(),
                digest: crate::manifest::sha256_hex(text.as_bytes()),
            });
        }
        let packages = engine
            .get_packages()
            .map_err(|e| PolicyError::Syntax(e.to_string()))?;
        if !packages.contains(&entrypoint) {
            return Err(PolicyError::Entrypoint(format!(
                "the entrypoint `{entrypoint}` is not a package of {} (packages: {})",
                names(files),
                packages.join(", ")
            )));
        }
        let policy = Policy {
            engine,
            entrypoint,
            files: recorded,
        };
        // A package without a deny rule would allow everything: refuse it
        // rather than gate nothing.
        if !Policy::declares_deny_rule(&texts, &policy.entrypoint) {
            return Err(PolicyError::Entrypoint(format!(
                "package `{}` of {} declares no `deny`, `deny_*`, `violation` or `violation_*` rule: it could never refuse anything",
                policy.entrypoint,
                names(files)
            )));
        }
        Ok(policy)
    }

    /// Whether a file of the entrypoint's package declares a deny rule:
    /// a rule head (`deny`, `deny_x`, `violation…`) at the start of a line
    /// of a file whose `package` is the entrypoint (the files parsed, so
    /// such a line is a rule head).
    fn declares_deny_rule(texts: &[String], entrypoint: &str) -> bool {
        let package = regex::Regex::new(r"(?m)^\s*package\s+([A-Za-z0-9_.]+)").expect("valid");
        let head = regex::Regex::new(r"(?m)^(deny|violation)(_[A-Za-z0-9_]*)?\b").expect("valid");
        texts.iter().any(|t| {
            package
                .captures(t)
                .is_some_and(|c| format!("data.{}", &c[1]) == entrypoint)
                && head.is_match(t)
        })
    }

    /// Evaluates the entrypoint package on `input`: its deny and warn
    /// rules' elements, sorted.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Verdict, PolicyError> {
        let doc = self.package_document(input)?;
        Ok(verdict_of(&doc))
    }

    /// The package's whole document (every rule's value) on `input`: what
    /// `opa eval data.kiln.promote` prints.
    pub fn package_document(
        &self,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, PolicyError> {
        let mut engine = self.engine.clone();
        let input = regorus::Value::from_json_str(&input.to_string())
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        engine.set_input(input);
        let results = engine
            .eval_query(self.entrypoint.clone(), false)
            .map_err(|e| PolicyError::Eval(e.to_string()))?;
        let value = results
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .map(|e| e.value.clone());
        match value {
            Some(v) => serde_json::from_str(
                &v.to_json_str()
                    .map_err(|e| PolicyError::Eval(e.to_string()))?,
            )
            .map_err(|e| PolicyError::Eval(e.to_string())),
            None => Ok(serde_json::json!({})),
        }
    }
}

/// regorus's parse error (`--> FILE:LINE:COL`, the line with a caret,
/// `error: MESSAGE`) as `FILE:LINE:COL: MESSAGE` first, then the line and
/// caret: the greppable location leads, as in every kiln input error.
fn syntax_message(raw: &str) -> String {
    let location = raw
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .map(str::trim);
    let message = raw
        .lines()
        .rev()
        .find_map(|l| l.trim_start().strip_prefix("error: "))
        .map(str::trim);
    match (location, message) {
        (Some(at), Some(msg)) => {
            let snippet: Vec<&str> = raw
                .lines()
                .filter(|l| {
                    l.trim_start()
                        .starts_with(|c: char| c.is_ascii_digit() || c == '|')
                })
                .collect();
            format!("{at}: {msg}\n{}", snippet.join("\n"))
        }
        _ => raw.trim().to_string(),
    }
}

fn names(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| format!("`{}`", f.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The deny and warn findings of a package document (as regorus or OPA
/// evaluate it).
pub fn verdict_of(doc: &serde_json::Value) -> Verdict {
    let mut v = Verdict::default();
    for (rule, value) in doc.as_object().into_iter().flatten() {
        let list = if is_deny_rule(rule) {
            &mut v.denials
        } else if is_warn_rule(rule) {
            &mut v.warnings
        } else {
            continue;
        };
        let items: Vec<&serde_json::Value> = match value {
            serde_json::Value::Array(a) => a.iter().collect(),
            serde_json::Value::Bool(false) | serde_json::Value::Null => vec![],
            other => vec![other],
        };
        for item in items {
            let message = match item {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(true) => rule.clone(),
                serde_json::Value::Object(o) => match o.get("msg") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    _ => item.to_string(),
                },
                other => other.to_string(),
            };
            list.push(Finding {
                rule: rule.clone(),
                message,
            });
        }
    }
    v.denials.sort();
    v.warnings.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn deny_and_warn_rules_follow_conftest_names_and_shapes() {
        let doc = json!({
            "deny": ["plain"],
            "deny_structured": [{ "msg": "structured", "extra": 1 }],
            "violation_x": ["v"],
            "denylist": ["not a deny rule: no underscore"],
            "deny_bool": true,
            "warn_y": ["careful"],
            "helper": ["ignored"],
        });
        let v = verdict_of(&doc);
        let got: Vec<(&str, &str)> = v
            .denials
            .iter()
            .map(|f| (f.rule.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("deny", "plain"),
                ("deny_bool", "deny_bool"),
                ("deny_structured", "structured"),
                ("violation_x", "v")
            ]
        );
        assert_eq!(v.warnings.len(), 1);
        assert!(!v.allowed());
        assert!(verdict_of(&json!({ "deny": [], "warn": ["w"] })).allowed());
    }

    #[test]
    fn a_policy_is_evaluated_on_its_input() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "p.rego",
            "package kiln.promote\n\ndeny_channel contains msg if {\n\tinput.channel == \"prod\"\n\tmsg := sprintf(\"no %s\", [input.channel])\n}\n",
        );
        let p = Policy::load(std::slice::from_ref(&f), "kiln.promote").unwrap();
        assert_eq!(p.entrypoint, "data.kiln.promote");
        assert!(p.files[0].digest.starts_with("sha256:"));
        let denied = p.evaluate(&json!({ "channel": "prod" })).unwrap();
        assert_eq!(denied.denials[0].rule, "deny_channel");
        assert_eq!(denied.denials[0].message, "no prod");
        assert!(p.evaluate(&json!({ "channel": "dev" })).unwrap().allowed());
    }

    #[test]
    fn bad_policies_are_errors_never_allows() {
        let dir = tempfile::tempdir().unwrap();
        let bad = write(
            dir.path(),
            "bad.rego",
            "package kiln.promote\n\ndeny contains x if {\n",
        );
        let e = Policy::load(std::slice::from_ref(&bad), DEFAULT_ENTRYPOINT).unwrap_err();
        assert!(matches!(e, PolicyError::Syntax(_)), "{e}");
        assert!(e.to_string().contains("bad.rego:"), "{e}");
        let none = write(
            dir.path(),
            "none.rego",
            "package kiln.promote\n\nallow if { true }\n",
        );
        let e = Policy::load(&[none], DEFAULT_ENTRYPOINT).unwrap_err();
        assert!(e.to_string().contains("declares no `deny`"), "{e}");
        let other = write(
            dir.path(),
            "other.rego",
            "package a.b\n\ndeny contains 1 if { true }\n",
        );
        let e = Policy::load(&[other], DEFAULT_ENTRYPOINT).unwrap_err();
        assert!(e.to_string().contains("data.a.b"), "{e}");
        assert!(normalize_entrypoint("data.kiln.promote; x").is_err());
        assert!(Policy::load(&[], DEFAULT_ENTRYPOINT).is_err());
    }
}
