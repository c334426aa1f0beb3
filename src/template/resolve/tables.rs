//! The fields of kiln's own tables — the top level, `[vault]`, `[image]`,
//! `[image.retention]`, `[build.rebuild]`, `[secrets.*]`, `[build]` and
//! its `sign`, `register`, `sbom` and `policy` — that sources and provisioners do not declare.

use crate::template::schema::{Field, Kind, STR_LIST};

pub(super) const TOP_KEYS: &[&str] = &[
    "image",
    "variables",
    "secrets",
    "vault",
    "locals",
    "source",
    "build",
];
pub(super) const VAULT_FIELDS: &[Field] = &[
    Field::opt("address", Kind::Str),
    Field::opt("namespace", Kind::Str),
    Field::opt("auth", Kind::Enum(&["token", "approle", "jwt"])),
    Field::opt("mount", Kind::Str),
    Field::opt("role", Kind::Str),
    Field::opt("ca_cert", Kind::Path),
];
pub(super) const IMAGE_FIELDS: &[Field] = &[
    Field::req("name", Kind::Str),
    Field::req("version", Kind::Str),
    Field::opt("description", Kind::Str),
    Field::opt("retention", Kind::Table(RETENTION_FIELDS)),
];
pub(super) const RETENTION_FIELDS: &[Field] = &[
    Field::opt("keep", Kind::Int),
    Field::opt("max_age", Kind::Duration),
    Field::opt("deprecate_after", Kind::Duration),
];
pub(super) const REBUILD_FIELDS: &[Field] = &[Field::opt("when", STR_LIST)];
pub(super) const SECRET_FIELDS: &[Field] = &[
    Field::opt("vault", Kind::Str),
    Field::opt("version", Kind::Int),
    Field::opt("env", Kind::Str),
    Field::opt("file", Kind::Path),
    Field::opt("description", Kind::Str),
];
pub(super) const SIGN_FIELDS: &[Field] = &[Field::req("key", Kind::Str)];
pub(super) const REGISTER_FIELDS: &[Field] = &[Field::opt("channels", STR_LIST)];
pub(super) const SBOM_FIELDS: &[Field] = &[Field::opt("enabled", Kind::Bool)];
pub(super) const POLICY_FIELDS: &[Field] = &[
    Field::req("files", Kind::List(&Kind::ExistingFile)),
    Field::opt("entrypoint", Kind::Str),
];
pub(super) const BUILD_KEYS: &[&str] = &[
    "name",
    "description",
    "sources",
    "provisioner",
    "test",
    "sign",
    "register",
    "rebuild",
    "sbom",
    "policy",
];
pub(super) const PROVISIONER_COMMON: &[&str] = &["type", "only", "except"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::schema::{templates_doc, undocumented};

    /// Every key of kiln's own tables is named in docs/templates.md.
    #[test]
    fn every_own_table_field_is_documented() {
        let docs = templates_doc();
        let mut missing = vec![];
        for (table, fields) in [
            ("vault", VAULT_FIELDS),
            ("image", IMAGE_FIELDS),
            ("build.rebuild", REBUILD_FIELDS),
            ("secrets.*", SECRET_FIELDS),
            ("build.sign", SIGN_FIELDS),
            ("build.register", REGISTER_FIELDS),
            ("build.sbom", SBOM_FIELDS),
            ("build.policy", POLICY_FIELDS),
        ] {
            missing.extend(undocumented(&format!("[{table}] "), fields, &docs));
        }
        for key in TOP_KEYS.iter().chain(BUILD_KEYS).chain(PROVISIONER_COMMON) {
            if !docs.contains(&format!("`{key}`"))
                && !docs.contains(&format!("[{key}"))
                && !docs.contains(&format!("[[{key}"))
                && !docs.contains(&format!("[build.{key}"))
                && !docs.contains(&format!("[[build.{key}"))
                && !docs
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{key} =")))
            {
                missing.push(key.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from docs/templates.md:\n{}",
            missing.join("\n")
        );
    }
}
