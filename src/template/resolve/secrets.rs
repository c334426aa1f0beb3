//! `[vault]` and `[secrets.*]`: where the template's secrets come from,
//! checked and turned into declarations for the fetcher.

use std::path::PathBuf;

use super::tables::{SECRET_FIELDS, VAULT_FIELDS};
use super::Template;
use crate::template::eval::Scope;
use crate::template::node::Node;
use crate::template::plan::{SecretDecl, SecretSource, VaultSettings};
use crate::template::value::Value;

impl Template {
    pub(super) fn vault_settings(&self, scope: &Scope, node: Option<&Node>) -> VaultSettings {
        let Some(node) = node else {
            return VaultSettings::default();
        };
        let Some(Value::Map(m)) = scope.eval_table(node, VAULT_FIELDS, "vault") else {
            return VaultSettings::default();
        };
        let text = |k: &str| m.get(k).and_then(Value::as_interpolated);
        VaultSettings {
            address: text("address"),
            namespace: text("namespace"),
            auth: text("auth"),
            mount: text("mount"),
            role: text("role"),
            ca_cert: text("ca_cert").map(PathBuf::from),
        }
    }

    pub(super) fn secret_decls(&self, scope: &Scope, node: Option<&Node>) -> Vec<SecretDecl> {
        let mut out = vec![];
        let Some(node) = node else { return out };
        for e in node.entries().unwrap_or_default() {
            let ctx = format!("secrets.{}", e.key);
            let Some(Value::Map(m)) = scope.eval_table(&e.value, SECRET_FIELDS, &ctx) else {
                continue;
            };
            let text = |k: &str| m.get(k).and_then(Value::as_interpolated);
            let given: Vec<&str> = ["vault", "env", "file"]
                .into_iter()
                .filter(|k| m.contains_key(*k))
                .collect();
            if given.len() != 1 {
                scope.error(
                    e.key_span.clone(),
                    format!("secret `{}` needs exactly one source, found {}", e.key, if given.is_empty() { "none".to_string() } else { given.join(" and ") }),
                    Some("set one of `vault = \"mount/path#key\"`, `env = \"NAME\"` or `file = \"/run/secrets/x\"`".into()),
                );
                continue;
            }
            let source = match given[0] {
                "vault" => {
                    let spec = text("vault").unwrap_or_default();
                    match spec.split_once('#') {
                        Some((path, key))
                            if !path.is_empty() && !key.is_empty() && path.contains('/') =>
                        {
                            SecretSource::Vault {
                                path: path.to_string(),
                                key: key.to_string(),
                                version: m.get("version").and_then(|v| match v {
                                    Value::Num(n) => Some(*n as u64),
                                    _ => None,
                                }),
                            }
                        }
                        _ => {
                            let span = e
                                .value
                                .get("vault")
                                .map(|v| v.value.span.clone())
                                .unwrap_or(e.key_span.clone());
                            scope.error(
                                span,
                                format!("`vault` must be `mount/path#key`, found `{spec}`"),
                                Some("for example `secret/data/ci/db#password`".into()),
                            );
                            continue;
                        }
                    }
                }
                "env" => SecretSource::Env(text("env").unwrap_or_default()),
                _ => SecretSource::File(PathBuf::from(text("file").unwrap_or_default())),
            };
            if m.contains_key("version") && !matches!(source, SecretSource::Vault { .. }) {
                scope.error(
                    e.key_span.clone(),
                    format!(
                        "secret `{}`: `version` applies only to `vault` secrets",
                        e.key
                    ),
                    None,
                );
            }
            out.push(SecretDecl {
                name: e.key.clone(),
                source,
                file: self.file.clone(),
                span: e.key_span.clone(),
            });
        }
        out
    }
}
