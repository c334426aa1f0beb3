//! What a provisioner contributes to a manifest and a fingerprint: its
//! settings (masked) and the digests of the local files and folders it runs
//! or uploads, a hardening profile with everything it includes.

use std::path::Path;

use serde_json::json;

use super::canonical::{canonical, sha256_hex};
use crate::template::plan::ProvisionerPlan;
use crate::template::Value;

/// `sha256:` of a file, or of a folder's files (relative paths and
/// contents, sorted), so a provisioner's uploaded tree counts whole.
fn path_digest(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return std::fs::read(path).ok().map(|b| sha256_hex(&b));
    }
    let mut files = vec![];
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).ok()?.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_symlink() => {
                    let target = std::fs::read_link(&p).ok()?;
                    files.push((p, format!("link:{}", target.display())));
                }
                Ok(_) => {
                    let bytes = std::fs::read(&p).ok()?;
                    files.push((p, sha256_hex(&bytes)));
                }
                Err(_) => return None,
            }
        }
    }
    files.sort();
    let listing: Vec<String> = files
        .iter()
        .map(|(p, d)| format!("{} {d}", p.strip_prefix(path).unwrap_or(p).display()))
        .collect();
    Some(sha256_hex(listing.join("\n").as_bytes()))
}

/// A provisioner's digest: its settings (secrets masked, never hashed) and
/// the content of every local file or folder it runs or copies (relative
/// paths against `template_dir`, keyed as written so a checkout's location
/// does not count).
pub fn provisioner_digest(p: &ProvisionerPlan, template_dir: &Path) -> serde_json::Value {
    let settings = serde_json::Value::Object(
        p.config
            .iter()
            .map(|(k, v)| (k.clone(), v.to_masked_json()))
            .collect(),
    );
    let mut files = serde_json::Map::new();
    for key in ["script", "scripts", "source"] {
        let paths: Vec<String> = match p.config.get(key) {
            Some(Value::Str(s)) => vec![s.clone()],
            Some(Value::List(l)) => l.iter().filter_map(Value::as_interpolated).collect(),
            _ => vec![],
        };
        for path in paths {
            if let Some(d) = path_digest(&template_dir.join(&path)) {
                files.insert(path, d.into());
            }
        }
    }
    // A hardening profile file counts with everything it includes (shipped
    // profiles change only with kiln's version, which is fingerprinted).
    if p.kind == "hardening" {
        use crate::provisioner::hardening::profile;
        let spec = p.config.get("profile").and_then(Value::as_interpolated);
        if let Some(spec) = spec.filter(|s| profile::is_path(s)) {
            if let Ok(loaded) = profile::load(&spec, template_dir) {
                files.insert(spec, loaded.digest.into());
            }
        }
    }
    json!({
        "index": p.index,
        "type": p.kind,
        "settings_digest": sha256_hex(&canonical(&settings)),
        "files": files,
    })
}
