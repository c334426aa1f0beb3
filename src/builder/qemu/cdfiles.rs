//! `cd_files`: which host files go where on the seed volume, by Packer's
//! rule (`StepCreateCD`): a file goes to the root under its own name; a
//! folder goes to the root under its own name with its structure kept,
//! or, written with a trailing `/`, its contents do; a glob (`*`, `?`,
//! `[`) adds each match by the same rule. Unlike Packer, a glob that
//! matches nothing, a link or special file found inside a folder or
//! matched by a glob, and two entries that land on the same name are
//! refused, each naming the entry.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::builder::BuildError;

/// What goes on the volume: a file (its bytes come from `source`) or a
/// folder (so that empty folders arrive too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdEntry {
    File { dest: String, source: PathBuf },
    Folder { dest: String },
}

/// The characters that make a `cd_files` entry a glob (as Packer decides).
const GLOB_CHARS: &[char] = &['*', '?', '['];

/// The volume's content named by `entries` (relative to `template_dir`),
/// in order, checked: every path exists, no link is followed below an
/// entry, and no two entries land on the same name (compared without
/// case, as FAT does). `taken` are names already on the volume
/// (`cd_content` keys), with where they come from.
pub fn plan(
    template_dir: &Path,
    entries: &[String],
    taken: &[(String, String)],
) -> Result<Vec<CdEntry>, BuildError> {
    let mut names = Names::default();
    for (dest, origin) in taken {
        names.add(dest, false, origin)?;
    }
    let mut out = vec![];
    for (i, entry) in entries.iter().enumerate() {
        let origin = format!("`cd_files[{i}]` (`{entry}`)");
        if entry.contains(GLOB_CHARS) {
            for m in glob_matches(template_dir, entry, &origin)? {
                add_path(&m, false, &origin, &mut names, &mut out)?;
            }
        } else {
            let path = template_dir.join(entry);
            // The entry itself is named by the template: a link there is
            // followed, as Packer does; nothing below it is.
            let meta = std::fs::metadata(&path).map_err(|e| {
                BuildError::Config(format!("{origin}: cannot read `{}`: {e}", path.display()))
            })?;
            if meta.is_dir() {
                let contents_only = entry.ends_with('/');
                let prefix = if contents_only {
                    String::new()
                } else {
                    utf8_name(&path, &origin)?
                };
                add_folder(&path, &prefix, &origin, &mut names, &mut out)?;
            } else if meta.is_file() {
                let dest = utf8_name(&path, &origin)?;
                names.add(&dest, false, &origin)?;
                out.push(CdEntry::File { dest, source: path });
            } else {
                return Err(BuildError::Config(format!(
                    "{origin}: `{}` is not a file or a folder",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// The paths `pattern` matches below `template_dir` (sorted); none is an
/// error. A link at or below the first wildcard is refused: the glob may
/// not lead out through one.
fn glob_matches(
    template_dir: &Path,
    pattern: &str,
    origin: &str,
) -> Result<Vec<PathBuf>, BuildError> {
    let dir = std::path::absolute(template_dir)
        .map_err(|e| BuildError::Config(format!("{origin}: `{}`: {e}", template_dir.display())))?;
    let base = dir.to_str().ok_or_else(|| {
        BuildError::Config(format!(
            "{origin}: the template's folder `{}` is not UTF-8, so globs cannot be matched in it",
            template_dir.display()
        ))
    })?;
    let full = if Path::new(pattern).is_absolute() {
        pattern.to_string()
    } else {
        format!("{}/{pattern}", glob::Pattern::escape(base))
    };
    // The folder the wildcards start in: matches are checked for links
    // below it.
    let literal: PathBuf = plain(Path::new(&full))
        .components()
        .take_while(|c| !c.as_os_str().to_string_lossy().contains(GLOB_CHARS))
        .collect();
    let paths = glob::glob(&full).map_err(|e| {
        BuildError::Config(format!(
            "{origin}: not a glob pattern: {} (at character {})",
            e.msg, e.pos
        ))
    })?;
    let mut out = vec![];
    for p in paths {
        let p = p.map_err(|e| {
            BuildError::Config(format!(
                "{origin}: cannot read `{}`: {}",
                e.path().display(),
                e.error()
            ))
        })?;
        let p = plain(&p);
        for a in p
            .ancestors()
            .take_while(|a| a.starts_with(&literal) && *a != literal)
        {
            if std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(link_error(origin, a));
            }
        }
        out.push(p);
    }
    if out.is_empty() {
        return Err(BuildError::Config(format!(
            "{origin} matches nothing in `{}`",
            template_dir.display()
        )));
    }
    out.sort();
    Ok(out)
}

/// `path` without `.` components, so that prefixes compare.
fn plain(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

fn link_error(origin: &str, path: &Path) -> BuildError {
    BuildError::Config(format!(
        "{origin}: `{}` is a link; kiln does not follow links found by a glob or inside a folder (name its target in `cd_files`)",
        path.display()
    ))
}

/// A glob match: a file to the root, a folder under its own name.
fn add_path(
    path: &Path,
    contents_only: bool,
    origin: &str,
    names: &mut Names,
    out: &mut Vec<CdEntry>,
) -> Result<(), BuildError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| {
        BuildError::Config(format!("{origin}: cannot read `{}`: {e}", path.display()))
    })?;
    let ty = meta.file_type();
    if ty.is_dir() {
        let prefix = if contents_only {
            String::new()
        } else {
            utf8_name(path, origin)?
        };
        add_folder(path, &prefix, origin, names, out)
    } else if ty.is_file() {
        let dest = utf8_name(path, origin)?;
        names.add(&dest, false, origin)?;
        out.push(CdEntry::File {
            dest,
            source: path.to_path_buf(),
        });
        Ok(())
    } else if ty.is_symlink() {
        Err(link_error(origin, path))
    } else {
        Err(BuildError::Config(format!(
            "{origin}: `{}` is not a file or a folder",
            path.display()
        )))
    }
}

/// Everything below the folder `root`, under `prefix` on the volume
/// (`""`: at the root); links and special files are refused.
fn add_folder(
    root: &Path,
    prefix: &str,
    origin: &str,
    names: &mut Names,
    out: &mut Vec<CdEntry>,
) -> Result<(), BuildError> {
    if !prefix.is_empty() {
        names.add(prefix, true, origin)?;
        out.push(CdEntry::Folder {
            dest: prefix.to_string(),
        });
    }
    let walk = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for e in walk {
        let e = e.map_err(|e| {
            BuildError::Config(format!("{origin}: cannot read `{}`: {e}", root.display()))
        })?;
        let rel = e.path().strip_prefix(root).expect("walked below the root");
        let rel = rel.to_str().ok_or_else(|| {
            BuildError::Config(format!(
                "{origin}: `{}` is not a UTF-8 name",
                e.path().display()
            ))
        })?;
        let dest = if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        };
        let ty = e.file_type();
        if ty.is_dir() {
            names.add(&dest, true, origin)?;
            out.push(CdEntry::Folder { dest });
        } else if ty.is_file() {
            names.add(&dest, false, origin)?;
            out.push(CdEntry::File {
                dest,
                source: e.path().to_path_buf(),
            });
        } else if ty.is_symlink() {
            return Err(link_error(origin, e.path()));
        } else {
            return Err(BuildError::Config(format!(
                "{origin}: `{}` is not a file or a folder",
                e.path().display()
            )));
        }
    }
    Ok(())
}

/// The last component of `path`, which must be UTF-8.
fn utf8_name(path: &Path, origin: &str) -> Result<String, BuildError> {
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_str(),
        _ => None,
    };
    name.map(str::to_string).ok_or_else(|| {
        BuildError::Config(format!(
            "{origin}: `{}` has no UTF-8 file name to use on the volume",
            path.display()
        ))
    })
}

/// The names on the volume so far (lower case, as FAT compares them):
/// whether each is a folder, and which entry put it there.
#[derive(Default)]
struct Names(BTreeMap<String, (bool, String)>);

impl Names {
    fn add(&mut self, dest: &str, folder: bool, origin: &str) -> Result<(), BuildError> {
        let parts: Vec<&str> = dest.split('/').filter(|p| !p.is_empty()).collect();
        for n in 1..=parts.len() {
            let key = parts[..n].join("/").to_lowercase();
            let is_folder = folder || n < parts.len();
            match self.0.get(&key) {
                // Folders merge, as Packer's copies into one tree do.
                Some((true, _)) if is_folder => {}
                Some((_, first)) => {
                    return Err(BuildError::Config(format!(
                        "{first} and {origin} both put `{}` on the volume",
                        parts[..n].join("/")
                    )))
                }
                None => {
                    self.0.insert(key, (is_folder, origin.to_string()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(out: &[CdEntry]) -> Vec<String> {
        out.iter()
            .map(|e| match e {
                CdEntry::File { dest, .. } => dest.clone(),
                CdEntry::Folder { dest } => format!("{dest}/"),
            })
            .collect()
    }

    /// A template folder: `ks.cfg`, `conf/a.cfg`, `conf/sub/b.cfg`,
    /// `conf/empty/`, `scripts/{one,two}.sh`.
    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "ks.cfg",
            "conf/a.cfg",
            "conf/sub/b.cfg",
            "scripts/one.sh",
            "scripts/two.sh",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), f).unwrap();
        }
        std::fs::create_dir_all(p.join("conf/empty")).unwrap();
        d
    }

    fn plan_of(d: &Path, entries: &[&str]) -> Result<Vec<CdEntry>, BuildError> {
        let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        plan(d, &entries, &[])
    }

    #[test]
    fn qemu_cd_files_follow_packers_mapping() {
        let d = tree();
        // A file goes to the root; a folder keeps its own name and its
        // structure; with a trailing slash, its contents go to the root.
        let out = plan_of(d.path(), &["./ks.cfg", "conf"]).unwrap();
        assert_eq!(
            dests(&out),
            [
                "ks.cfg",
                "conf/",
                "conf/a.cfg",
                "conf/empty/",
                "conf/sub/",
                "conf/sub/b.cfg"
            ]
        );
        assert_eq!(
            out[0],
            CdEntry::File {
                dest: "ks.cfg".into(),
                source: d.path().join("./ks.cfg")
            }
        );
        let out = plan_of(d.path(), &["conf/"]).unwrap();
        assert_eq!(dests(&out), ["a.cfg", "empty/", "sub/", "sub/b.cfg"]);
        // A glob adds each match by the same rule, in order.
        let out = plan_of(d.path(), &["scripts/*.sh", "c*"]).unwrap();
        assert_eq!(
            dests(&out),
            [
                "one.sh",
                "two.sh",
                "conf/",
                "conf/a.cfg",
                "conf/empty/",
                "conf/sub/",
                "conf/sub/b.cfg"
            ]
        );
        // Absolute paths are taken as they are.
        let abs = d.path().join("scripts").display().to_string();
        let out = plan_of(Path::new("/nonexistent"), &[&format!("{abs}/o?e.sh")]).unwrap();
        assert_eq!(dests(&out), ["one.sh"]);
    }

    #[test]
    fn qemu_cd_files_refuse_what_they_cannot_place() {
        let d = tree();
        let err = |entries: &[&str]| plan_of(d.path(), entries).unwrap_err().to_string();
        let e = err(&["nothing-*.cfg"]);
        assert!(
            e.contains("`cd_files[0]` (`nothing-*.cfg`) matches nothing in"),
            "{e}"
        );
        let e = err(&["ks.cfg", "missing.cfg"]);
        assert!(
            e.contains("`cd_files[1]` (`missing.cfg`): cannot read"),
            "{e}"
        );
        let e = err(&["[z-a"]);
        assert!(
            e.contains("`cd_files[0]` (`[z-a`): not a glob pattern"),
            "{e}"
        );
        // Two entries on one name, also when only the case differs (FAT).
        let e = err(&["conf/a.cfg", "conf/"]);
        assert!(
            e.contains("`cd_files[0]` (`conf/a.cfg`) and `cd_files[1]` (`conf/`) both put `a.cfg` on the volume"),
            "{e}"
        );
        std::fs::write(d.path().join("scripts/KS.cfg"), "x").unwrap();
        let e = err(&["ks.cfg", "scripts/K*"]);
        assert!(e.contains("both put `KS.cfg`"), "{e}");
        // A file where a folder goes.
        std::fs::write(d.path().join("scripts/conf"), "x").unwrap();
        let e = err(&["conf", "scripts/conf"]);
        assert!(e.contains("both put `conf`"), "{e}");
        // cd_content's names are taken too.
        let entries = vec!["conf".to_string()];
        let taken = vec![(
            "conf/a.cfg".to_string(),
            "`cd_content` key `conf/a.cfg`".to_string(),
        )];
        let e = plan(d.path(), &entries, &taken).unwrap_err().to_string();
        assert!(
            e.contains(
                "`cd_content` key `conf/a.cfg` and `cd_files[0]` (`conf`) both put `conf/a.cfg`"
            ),
            "{e}"
        );
    }

    /// A link inside a folder, or matched by a glob, or on the way to a
    /// match, is refused by name, never followed out; the entry itself
    /// may be one.
    #[test]
    fn qemu_cd_files_never_follow_links_below_an_entry() {
        let d = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let link = d.path().join("conf/sub/escape");
        std::os::unix::fs::symlink(outside.path().join("secret"), &link).unwrap();
        let e = plan_of(d.path(), &["conf"]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{}` is a link", link.display())),
            "{e}"
        );
        let e = plan_of(d.path(), &["conf/sub/*"]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("`{}` is a link", link.display())),
            "{e}"
        );
        std::fs::remove_file(&link).unwrap();
        let dir_link = d.path().join("scripts/out");
        std::os::unix::fs::symlink(outside.path(), &dir_link).unwrap();
        let e = plan_of(d.path(), &["scripts/*/secret"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("`{}` is a link", dir_link.display())),
            "{e}"
        );
        // Named directly, the entry is the template's choice.
        let out = plan_of(d.path(), &["scripts/out"]).unwrap();
        assert_eq!(dests(&out), ["out/", "out/secret"]);
    }
}
