//! The layer check (`scripts/ci/check-layers.sh`): it passes on this tree,
//! and on a copy it fails, naming file and line, for each way an upward
//! import can be written — while comments and strings that mention a
//! higher module do not count.

use std::path::Path;
use std::process::{Command, Output};

use crate::{assert_exit, repo, require, text};

fn check(root: &Path) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/ci/check-layers.sh"))
        .arg(root)
        .output()
        .expect("bash runs")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of `src/` and the architecture document.
fn copy_of_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("src"), &tmp.path().join("src"));
    std::fs::create_dir(tmp.path().join("docs")).unwrap();
    std::fs::copy(
        repo().join("docs/ARCHITECTURE.md"),
        tmp.path().join("docs/ARCHITECTURE.md"),
    )
    .unwrap();
    tmp
}

/// Appends `code` to a file of the copy; returns the line it starts on.
fn plant(root: &Path, file: &str, code: &str) -> usize {
    let path = root.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let line = text.lines().count() + 1;
    text.push_str(code);
    std::fs::write(&path, text).unwrap();
    line
}

#[test]
fn every_module_points_down() {
    if !require("layer check", &["python3"], false) {
        return;
    }
    let o = check(&repo());
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("check-layers: ok"), "{:?}", text(&o));
}

#[test]
fn planted_upward_imports_fail_with_file_and_line() {
    if !require("layer check", &["python3"], false) {
        return;
    }
    let cases = [
        // A plain `use` line.
        (
            "src/job/context.rs",
            "use crate::engine::RunOptions;\n",
            "`job` uses `engine`",
        ),
        // An inline path.
        (
            "src/template/value.rs",
            "pub fn planted() -> bool {\n    crate::catalog::model::is_valid_name(\"x\")\n}\n",
            "`template` uses `catalog`",
        ),
        // A `use crate::{…}` group.
        (
            "src/builder/null.rs",
            "use crate::{\n    ui::Stream,\n    engine::OnError,\n};\n",
            "`builder` uses `engine`",
        ),
        // A `super::` chain climbing out of the module.
        (
            "src/communicator/local.rs",
            "use super::super::builder::Builders;\n",
            "`communicator` uses `builder`",
        ),
    ];
    for (file, code, says) in cases {
        let copy = copy_of_repo();
        assert_exit(&check(copy.path()), 0);
        let line = plant(copy.path(), file, code);
        let o = check(copy.path());
        assert_exit(&o, 1);
        let (out, _) = text(&o);
        // The group's offending item is on the plant's third line.
        let line = if code.starts_with("use crate::{") {
            line + 2
        } else if code.starts_with("pub fn") {
            line + 1
        } else {
            line
        };
        let want = format!("{file}:{line}: {says}, which is above it in the layer order");
        assert!(out.contains(&want), "want `{want}` in\n{out}");
        assert_eq!(
            out.lines().count(),
            1,
            "one problem per planted import:\n{out}"
        );
    }
}

#[test]
fn comments_strings_and_downward_imports_pass() {
    if !require("layer check", &["python3"], false) {
        return;
    }
    let copy = copy_of_repo();
    plant(
        copy.path(),
        "src/job/context.rs",
        "// crate::engine::run is above; /* crate::cli */ too\n\
         #[allow(dead_code)]\n\
         const PLANTED: &str = \"crate::engine::run\";\n\
         #[allow(dead_code)]\n\
         const PLANTED_RAW: &str = r#\"use crate::cli;\"#;\n\
         #[allow(dead_code)]\n\
         fn planted(_: crate::ui::Stream) {}\n",
    );
    let o = check(copy.path());
    assert_exit(&o, 0);
}

#[test]
fn a_module_missing_from_the_declared_order_fails() {
    if !require("layer check", &["python3"], false) {
        return;
    }
    let copy = copy_of_repo();
    std::fs::create_dir(copy.path().join("src/importer")).unwrap();
    std::fs::write(copy.path().join("src/importer/mod.rs"), "//! New.\n").unwrap();
    let o = check(copy.path());
    assert_exit(&o, 1);
    assert!(
        text(&o)
            .0
            .contains("module `importer` is not in the ```layers list of docs/ARCHITECTURE.md"),
        "{:?}",
        text(&o)
    );
}
