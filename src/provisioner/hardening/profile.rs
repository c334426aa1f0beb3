//! Hardening profiles: TOML files of rules (id, title, rationale,
//! severity, distributions, an `apply` and a separate `check` script),
//! shipped inside the binary from `provisioners/profiles/` or read from a
//! path. A profile may `include` others; [`load`] resolves the includes
//! into one ordered list of rules.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The profiles shipped with kiln, by name.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "cis-level1",
        include_str!("../../../provisioners/profiles/cis-level1.toml"),
    ),
    (
        "ssh",
        include_str!("../../../provisioners/profiles/ssh.toml"),
    ),
    (
        "sysctl",
        include_str!("../../../provisioners/profiles/sysctl.toml"),
    ),
    (
        "auditd",
        include_str!("../../../provisioners/profiles/auditd.toml"),
    ),
    (
        "cleanup",
        include_str!("../../../provisioners/profiles/cleanup.toml"),
    ),
];

/// Shell functions every apply and check script can call (`kiln_pkg_install`,
/// `kiln_set_option`, …), put in front of each script.
pub const PRELUDE: &str = include_str!("../../../provisioners/profiles/lib.sh");

/// How much a failed rule matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        })
    }
}

/// One rule of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub rationale: String,
    pub severity: Severity,
    /// Matched against `ID` and `ID_LIKE` of `/etc/os-release`.
    pub distros: Vec<String>,
    /// A script that exits 0 when the rule is relevant on this system
    /// (e.g. sshd is installed); otherwise the rule is not applicable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_if: Option<String>,
    /// Changes the system so the check passes.
    pub apply: String,
    /// Exits 0 (pass) or 1 (fail) and prints its evidence; never changes anything.
    pub check: String,
    /// Lynis test ids this rule answers (documentation and the yardstick).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lynis: Vec<String>,
}

/// A profile file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: String,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default, rename = "rule")]
    rules: Vec<Rule>,
}

/// A profile with its includes resolved.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// Included profiles' rules first, in `include` order, then its own.
    pub rules: Vec<Rule>,
    /// `sha256:` over every file that went into it (and the prelude).
    pub digest: String,
}

/// Why a profile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("unknown hardening profile `{name}`; shipped profiles: {known}; or give a path to a `.toml` file")]
    Unknown { name: String, known: String },
    #[error("cannot read profile `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profile `{name}`: {message}")]
    Invalid { name: String, message: String },
    #[error("profile `{0}` includes itself (through {1})")]
    Cycle(String, String),
}

/// Is `spec` a path to a profile file rather than a shipped name?
pub fn is_path(spec: &str) -> bool {
    spec.ends_with(".toml") || spec.contains('/')
}

/// Loads a shipped profile by name, or a profile file (relative paths
/// resolve against `base_dir`), with its includes.
pub fn load(spec: &str, base_dir: &Path) -> Result<Profile, ProfileError> {
    let mut hasher = Sha256::new();
    hasher.update(PRELUDE.as_bytes());
    let mut rules = vec![];
    let mut stack = vec![];
    let description = load_into(spec, base_dir, &mut stack, &mut rules, &mut hasher)?;
    let name = if is_path(spec) {
        Path::new(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| spec.to_string())
    } else {
        spec.to_string()
    };
    Ok(Profile {
        name,
        description,
        rules,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
    })
}

fn load_into(
    spec: &str,
    base_dir: &Path,
    stack: &mut Vec<String>,
    rules: &mut Vec<Rule>,
    hasher: &mut Sha256,
) -> Result<String, ProfileError> {
    let (key, text, dir) = if is_path(spec) {
        let path = base_dir.join(spec);
        let text = fs_err::read_to_string(&path).map_err(|source| ProfileError::Read {
            path: path.clone(),
            source,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        (path.display().to_string(), text, dir)
    } else {
        let Some((_, text)) = SHIPPED.iter().find(|(n, _)| *n == spec) else {
            return Err(ProfileError::Unknown {
                name: spec.to_string(),
                known: shipped_names().join(", "),
            });
        };
        (spec.to_string(), text.to_string(), base_dir.to_path_buf())
    };
    if stack.contains(&key) {
        return Err(ProfileError::Cycle(key, stack.join(" → ")));
    }
    hasher.update(text.as_bytes());
    let file: ProfileFile = toml::from_str(&text).map_err(|e| ProfileError::Invalid {
        name: key.clone(),
        message: e.to_string(),
    })?;
    stack.push(key.clone());
    for inc in &file.include {
        load_into(inc, &dir, stack, rules, hasher)?;
    }
    stack.pop();
    for rule in file.rules {
        validate_rule(&key, &rule)?;
        match rules.iter().find(|r| r.id == rule.id) {
            // The same rule reached through two includes counts once.
            Some(existing) if *existing == rule => {}
            Some(_) => {
                return Err(ProfileError::Invalid {
                    name: key,
                    message: format!("rule id `{}` is used by two different rules", rule.id),
                })
            }
            None => rules.push(rule),
        }
    }
    Ok(file.description)
}

fn validate_rule(profile: &str, rule: &Rule) -> Result<(), ProfileError> {
    let bad = |message: String| ProfileError::Invalid {
        name: profile.to_string(),
        message,
    };
    let id_ok = !rule.id.is_empty()
        && rule
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !id_ok {
        return Err(bad(format!(
            "rule id `{}` must be lowercase letters, digits and `-`",
            rule.id
        )));
    }
    for (what, script) in [("apply", &rule.apply), ("check", &rule.check)] {
        if script.trim().is_empty() {
            return Err(bad(format!(
                "rule `{}` has an empty `{what}` script",
                rule.id
            )));
        }
    }
    if rule.title.trim().is_empty() || rule.rationale.trim().is_empty() {
        return Err(bad(format!(
            "rule `{}` needs a title and a rationale",
            rule.id
        )));
    }
    if rule.distros.is_empty() {
        return Err(bad(format!(
            "rule `{}` names no distribution in `distros`",
            rule.id
        )));
    }
    Ok(())
}

/// The names of the shipped profiles.
pub fn shipped_names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// Rule ids of `profile` that `ids` names but the profile lacks.
pub fn unknown_ids<'a>(profile: &Profile, ids: &'a [String]) -> Vec<&'a str> {
    let known: BTreeSet<&str> = profile.rules.iter().map(|r| r.id.as_str()).collect();
    ids.iter()
        .map(String::as_str)
        .filter(|id| !known.contains(id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_profile_loads_with_unique_ids_and_both_scripts() {
        for name in shipped_names() {
            let p = load(name, Path::new("/nonexistent")).unwrap_or_else(|e| panic!("{e}"));
            assert!(!p.rules.is_empty(), "{name} has no rules");
            let ids: BTreeSet<&str> = p.rules.iter().map(|r| r.id.as_str()).collect();
            assert_eq!(ids.len(), p.rules.len(), "{name}: duplicate rule ids");
            for r in &p.rules {
                assert!(!r.apply.trim().is_empty() && !r.check.trim().is_empty());
            }
        }
    }

    #[test]
    fn rule_ids_are_unique_across_all_shipped_files() {
        let mut seen = std::collections::BTreeMap::new();
        for (name, text) in SHIPPED {
            let f: ProfileFile = toml::from_str(text).unwrap();
            for r in f.rules {
                if let Some(other) = seen.insert(r.id.clone(), *name) {
                    panic!("rule `{}` is in both `{other}` and `{name}`", r.id);
                }
            }
        }
    }

    #[test]
    fn cis_level1_includes_the_focused_profiles_and_covers_both_families() {
        let cis = load("cis-level1", Path::new(".")).unwrap();
        for inc in ["ssh", "sysctl", "auditd"] {
            let part = load(inc, Path::new(".")).unwrap();
            for r in &part.rules {
                assert!(cis.rules.iter().any(|c| c.id == r.id), "{} missing", r.id);
            }
        }
        for family in ["debian", "ubuntu", "rhel", "amzn"] {
            assert!(
                cis.rules
                    .iter()
                    .any(|r| r.distros.iter().any(|d| d == family)),
                "no rule for {family}"
            );
        }
    }

    #[test]
    fn bad_profiles_are_refused_naming_the_file_and_rule() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "sev.toml",
            "description = \"x\"\n[[rule]]\nid = \"a\"\ntitle = \"t\"\nrationale = \"r\"\nseverity = \"urgent\"\ndistros = [\"debian\"]\napply = \"true\"\ncheck = \"true\"\n",
        );
        let e = load("sev.toml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("sev.toml") && e.contains("urgent"), "{e}");
        write(
            "nocheck.toml",
            "description = \"x\"\n[[rule]]\nid = \"a\"\ntitle = \"t\"\nrationale = \"r\"\nseverity = \"low\"\ndistros = [\"debian\"]\napply = \"true\"\ncheck = \" \"\n",
        );
        let e = load("nocheck.toml", dir.path()).unwrap_err().to_string();
        assert!(e.contains("rule `a`") && e.contains("check"), "{e}");
        write(
            "loop.toml",
            "description = \"x\"\ninclude = [\"loop.toml\"]\n",
        );
        assert!(matches!(
            load("loop.toml", dir.path()),
            Err(ProfileError::Cycle(..))
        ));
        let e = load("nope", dir.path()).unwrap_err().to_string();
        assert!(e.contains("cis-level1"), "{e}");
    }

    #[test]
    fn every_script_is_valid_posix_sh() {
        // `sh -n` parses without running; /bin/sh is dash on Debian.
        for name in shipped_names() {
            for r in load(name, Path::new(".")).unwrap().rules {
                let scripts = [Some(&r.apply), Some(&r.check), r.applies_if.as_ref()];
                for script in scripts.into_iter().flatten() {
                    let o = std::process::Command::new("sh")
                        .args(["-n", "-c", &format!("{PRELUDE}\n{script}")])
                        .output()
                        .unwrap();
                    assert!(
                        o.status.success(),
                        "{name}/{}: {}",
                        r.id,
                        String::from_utf8_lossy(&o.stderr)
                    );
                }
            }
        }
    }

    #[test]
    fn a_file_profile_can_include_a_shipped_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("mine.toml"),
            "description = \"mine\"\ninclude = [\"ssh\"]\n",
        )
        .unwrap();
        let p = load("mine.toml", dir.path()).unwrap();
        assert_eq!(p.name, "mine");
        assert_eq!(p.rules.len(), load("ssh", dir.path()).unwrap().rules.len());
    }
}
