//! What a security reviewer reads in a build manifest beyond digests: each
//! provisioner as it ran (settings with secrets masked, scripts and file
//! sources by digest, times, status) and where the template comes from
//! (git repository without credentials, commit, dirty). `docs/manifest.md`
//! shows an annotated example; `kiln show-manifest` renders one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

use super::digest::provisioner_digest;
use crate::template::plan::{BuildPlan, ProvisionerPlan};
use crate::template::Value;

/// What a reviewer reads about one provisioner in the build manifest: its
/// [`provisioner_digest`] (kept, so the record stays verifiable), its
/// settings with secrets masked (the inline commands, script paths,
/// destinations, environment names), each script and file source with
/// its digest, and how it ran (`run`: start, end, duration, status).
pub fn provisioner_record(
    p: &ProvisionerPlan,
    template_dir: &Path,
    run: Option<&serde_json::Value>,
) -> serde_json::Value {
    let mut record = provisioner_digest(p, template_dir);
    let settings: serde_json::Map<String, serde_json::Value> = p
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.to_masked_json()))
        .collect();
    let listed = |keys: &[&str]| -> Vec<serde_json::Value> {
        keys.iter()
            .flat_map(|key| match p.config.get(*key) {
                Some(Value::Str(s)) => vec![s.clone()],
                Some(Value::List(l)) => l.iter().filter_map(Value::as_interpolated).collect(),
                _ => vec![],
            })
            .map(|path| {
                let digest = record["files"][&path].clone();
                json!({ "path": path, "digest": digest })
            })
            .collect()
    };
    let (scripts, sources) = (listed(&["script", "scripts"]), listed(&["source"]));
    if let Some(inline) = settings.get("inline") {
        record["commands"] = inline.clone();
    }
    if !scripts.is_empty() {
        record["scripts"] = scripts.into();
    }
    if !sources.is_empty() {
        record["sources"] = sources.into();
    }
    record["settings"] = settings.into();
    if let Some(run) = run.and_then(|r| r.as_object()) {
        for (k, v) in run.iter().filter(|(k, _)| *k != "index") {
            record[k] = v.clone();
        }
    }
    record
}

/// Where the template comes from when it is in a git work tree: the
/// repository's `origin` (credentials in the URL removed), the commit
/// checked out, and whether its tracked files differ from it (`dirty`: the
/// manifest then describes uncommitted content). `None` outside git.
///
/// Asked once per template and process: it takes four `git` runs, so the
/// engine starts it in the background when a build starts
/// ([`warm_template_source`]) and the records, written at the end, find
/// the answer ready — the state of the checkout the build started from.
pub fn template_source(plan: &BuildPlan) -> Option<serde_json::Value> {
    source_of(&plan.template, &plan.template_dir())
}

/// Starts [`template_source`] on a blocking thread, so its answer is ready
/// when the records need it.
pub fn warm_template_source(plan: &BuildPlan) {
    let (template, dir) = (plan.template.clone(), plan.template_dir());
    tokio::task::spawn_blocking(move || source_of(&template, &dir));
}

fn source_of(template: &Path, dir: &Path) -> Option<serde_json::Value> {
    type Cells = HashMap<PathBuf, Arc<OnceLock<Option<serde_json::Value>>>>;
    static ASKED: OnceLock<Mutex<Cells>> = OnceLock::new();
    let key = std::path::absolute(template).unwrap_or_else(|_| template.to_path_buf());
    let cell = ASKED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key)
        .or_default()
        .clone();
    // A second caller waits for the first one's answer.
    cell.get_or_init(|| ask_git(template, dir)).clone()
}

fn ask_git(template: &Path, dir: &Path) -> Option<serde_json::Value> {
    let git = |args: &[&str]| -> Option<String> {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--verify", "HEAD"])?;
    let top = git(&["rev-parse", "--show-toplevel"]).unwrap_or_default();
    // Tracked files only: a build's own output or keys in the checkout
    // are not changes to what was built from.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    let origin = git(&["config", "--get", "remote.origin.url"]).map(|u| without_userinfo(&u));
    let path = std::path::absolute(template)
        .ok()
        .and_then(|t| t.strip_prefix(&top).ok().map(|p| p.display().to_string()));
    Some(json!({
        "repository": origin,
        "commit": commit,
        "dirty": dirty,
        "path": path,
    }))
}

/// A URL without `user:password@` (a token in a clone URL is a secret).
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                format!("{scheme}://{host}/{path}")
            }
            None => format!(
                "{scheme}://{}",
                rest.rsplit_once('@').map_or(rest, |(_, h)| h)
            ),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_url_loses_its_credentials() {
        assert_eq!(
            without_userinfo("https://ci-token:s3cret@git.example.com/a/b.git"),
            "https://git.example.com/a/b.git"
        );
        assert_eq!(
            without_userinfo("https://git.example.com/a/b.git"),
            "https://git.example.com/a/b.git"
        );
        assert_eq!(without_userinfo("ssh://git@h:22/x"), "ssh://h:22/x");
        assert_eq!(without_userinfo("git@h:x/y.git"), "git@h:x/y.git");
    }
}
