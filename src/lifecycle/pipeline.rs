//! What a CI pipeline must provide to build a template, read from its
//! plan: root (OCI and QEMU builds), the secrets it declares with `env =`
//! (wired from the CI's secret store), the signing key's password, Vault
//! and AWS logins by the CI's OIDC identity. What a pipeline cannot
//! provide is a warning naming the template's `file:line:col`. `kiln ci`
//! renders pipelines from this.

use crate::template::{BuildPlan, SecretSource};

/// One environment variable a pipeline fills from its secret store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WiredSecret {
    /// The environment variable (and the CI secret of the same name).
    pub env: String,
    /// Why: `secret `db` (web.toml:12:1)` or `the signing key's password`.
    pub why: String,
    /// False when the build works without it (e.g. `KILN_SIGNING_KEY`,
    /// which replaces a key file in the repository).
    pub required: bool,
}

/// What one template's pipeline job needs.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// The template's path, as given.
    pub template: String,
    /// A job id made of the template's file name: `[a-z0-9-]`.
    pub slug: String,
    /// An OCI or QEMU source: the build needs root.
    pub root: bool,
    /// A Vault secret or a `vault-transit:` signing key.
    pub vault: bool,
    /// An `ami` source.
    pub aws: bool,
    /// Secrets from the CI's secret store, by environment variable.
    pub secrets: Vec<WiredSecret>,
    /// What the pipeline cannot wire, each naming the template's line.
    pub warnings: Vec<String>,
}

/// A name GitHub and GitLab accept for a secret and an environment
/// variable: `[A-Za-z_][A-Za-z0-9_]*`, not `GITHUB_*`.
fn is_ci_secret_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.to_ascii_uppercase().starts_with("GITHUB_")
}

/// A job id from the template's file name, unique among `taken`.
fn slug(template: &str, taken: &[String]) -> String {
    let stem = std::path::Path::new(template)
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut s: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').to_string();
    if s.is_empty() {
        s = "template".into();
    }
    let base = format!("build-{s}");
    let mut out = base.clone();
    let mut n = 2;
    while taken.contains(&out) {
        out = format!("{base}-{n}");
        n += 1;
    }
    out
}

/// Reads what the pipeline job of `plan` (from `template`, as given) needs.
pub fn needs(template: &str, plan: &BuildPlan, taken: &[String]) -> Needs {
    let mut n = Needs {
        template: template.to_string(),
        slug: slug(template, taken),
        ..Needs::default()
    };
    for job in &plan.jobs {
        match job.source_type.as_str() {
            "oci" | "qemu" => n.root = true,
            "ami" => n.aws = true,
            _ => {}
        }
    }
    for d in &plan.secrets {
        let (line, col) = d.file.line_col(d.span.start);
        let at = format!("{}:{line}:{col}", d.file.name);
        match &d.source {
            SecretSource::Env(var) if is_ci_secret_name(var) => {
                if !n.secrets.iter().any(|s| &s.env == var) {
                    n.secrets.push(WiredSecret {
                        env: var.clone(),
                        why: format!("secret `{}` ({at})", d.name),
                        required: true,
                    });
                }
            }
            SecretSource::Env(var) => n.warnings.push(format!(
                "{at}: secret `{}` reads the environment variable `{var}`, which cannot be a CI secret's name (letters, digits and `_`, not starting with a digit or `GITHUB_`): set it in the pipeline yourself, or rename it",
                d.name
            )),
            SecretSource::File(path) => n.warnings.push(format!(
                "{at}: secret `{}` is read from the file `{}`, which the pipeline cannot provide without writing the secret to the runner's disk: use `env = \"NAME\"` with a CI secret, or `vault = …`",
                d.name,
                path.display()
            )),
            SecretSource::Vault { .. } => n.vault = true,
        }
    }
    let mut password = false;
    for job in &plan.jobs {
        let Some(key) = job
            .sign
            .as_ref()
            .and_then(|s| s.get("key"))
            .and_then(|k| k.as_interpolated())
        else {
            continue;
        };
        if key.starts_with("vault-transit:") {
            n.vault = true;
        } else {
            password = true;
        }
    }
    if password {
        n.secrets.push(WiredSecret {
            env: "KILN_PASSWORD".into(),
            why: "the password of the signing key (`[build.sign] key`)".into(),
            required: true,
        });
        n.secrets.push(WiredSecret {
            env: "KILN_SIGNING_KEY".into(),
            why: "optional: the private key itself, when it is not in the repository".into(),
            required: false,
        });
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_slugs() {
        assert!(is_ci_secret_name("APP_TOKEN"));
        assert!(is_ci_secret_name("_x1"));
        assert!(!is_ci_secret_name("1X"));
        assert!(!is_ci_secret_name("A-B"));
        assert!(!is_ci_secret_name("GITHUB_TOKEN"));
        assert_eq!(slug("templates/Web App.toml", &[]), "build-web-app");
        assert_eq!(
            slug("b/web.toml", &["build-web".to_string()]),
            "build-web-2"
        );
        assert_eq!(slug("___.toml", &[]), "build-template");
    }
}
