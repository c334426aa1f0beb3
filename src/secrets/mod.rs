//! Fetching declared secrets, once per build, before any instance starts:
//! `env` and `file` sources now; `vault` with the Vault issue (#4).
//!
//! Architecture invariant: secret values live only in memory (as sensitive
//! template values) and in provisioner process environments; every value
//! fetched here reaches the redactor before any output is written.

use std::collections::BTreeMap;

use crate::template::{Diagnostic, Diagnostics, SecretDecl, SecretSource, Value};

/// Values for `validate` and `inspect`, which never fetch secrets.
pub fn unresolved(decls: &[SecretDecl]) -> Result<BTreeMap<String, Value>, Diagnostics> {
    Ok(decls
        .iter()
        .map(|d| (d.name.clone(), Value::Unknown))
        .collect())
}

/// Fetches every secret. Errors name the secret and its source, never a value.
pub fn fetch(decls: &[SecretDecl]) -> Result<BTreeMap<String, Value>, Diagnostics> {
    let mut out = BTreeMap::new();
    let mut diags = Diagnostics::default();
    for d in decls {
        let err = |msg: String| {
            Diagnostic::at(
                &d.file,
                d.span.clone(),
                format!("secret `{}`: {msg}", d.name),
            )
            .with_label("declared here")
        };
        match &d.source {
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(v) => {
                    out.insert(d.name.clone(), Value::Str(v));
                }
                Err(_) => diags.push(err(format!("environment variable `{name}` is not set"))),
            },
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                // A trailing newline is an artifact of how such files are written.
                Ok(v) => {
                    out.insert(
                        d.name.clone(),
                        Value::Str(v.strip_suffix('\n').unwrap_or(&v).to_string()),
                    );
                }
                Err(e) => diags.push(err(format!("cannot read `{}`: {e}", path.display()))),
            },
            SecretSource::Vault { path, key, .. } => diags.push(
                err(format!(
                    "Vault secrets (`{path}#{key}`) are not supported yet (issue #4)"
                ))
                .with_help("for now, use `env = \"NAME\"` or `file = \"PATH\"`"),
            ),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}
