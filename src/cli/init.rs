//! `kiln init`: scaffolds a project for one builder — a template that
//! validates, a cosign key pair (`KILN_PASSWORD` or a prompt) and a
//! `.gitignore` that keeps kiln's state, outputs and the private key out of
//! git. It never overwrites a file: all are checked before any is written.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::Exit;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InitBuilder {
    /// Container images (needs root: runc).
    Oci,
    /// Disk images from a VM.
    Qemu,
    /// AWS AMIs.
    Ami,
    /// Provisioners on this host, no artifact (the lightest start).
    Null,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The folder to scaffold (created if missing).
    #[arg(default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    /// The builder the template starts with.
    #[arg(long, value_enum)]
    pub builder: InitBuilder,
    /// The image name (default: the folder's name).
    #[arg(long)]
    pub name: Option<String>,
}

const GITIGNORE: &str = "# kiln: state, journal, logs, the local catalog
.kiln/
# build outputs (OCI layouts, disk images)
out/
# the encrypted private signing key: keep it in the CI's secret store
# (KILN_SIGNING_KEY, its password KILN_PASSWORD; see `kiln ci`)
cosign.key
";

fn template(builder: InitBuilder, name: &str) -> String {
    let (source, id, note) = match builder {
        InitBuilder::Oci => (
            format!(
                "[source.oci.base]\nfrom = \"registry:docker.io/library/debian:bookworm-slim\"\nto = [\"oci-layout:out/{name}:${{image.version}}\"]\n"
            ),
            "oci.base",
            "needs root (runc); `to` may also list `registry:HOST/REPO:TAG`",
        ),
        InitBuilder::Qemu => (
            format!(
                "[source.qemu.base]\n# A cloud image with cloud-init, e.g. Debian's genericcloud qcow2.\ndisk = \"images/base.qcow2\"\ndisk_checksum = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\noutput = \"out/{name}-${{image.version}}.qcow2\"\n"
            ),
            "qemu.base",
            "put the base disk at images/base.qcow2 and its sha256 in `disk_checksum`",
        ),
        InitBuilder::Ami => (
            "[source.ami.base]\nregion = \"us-east-1\"\nfrom = { owners = [\"amazon\"], name = \"al2023-ami-*-x86_64\", most_recent = true }\ninstance_type = \"t3.micro\"\niam_instance_profile = \"kiln-builder\"   # needs SSM permissions\nencrypted = true\n".to_string(),
            "ami.base",
            "AWS credentials from the usual chain; the instance profile needs SSM",
        ),
        InitBuilder::Null => (
            "[source.null.local]\n".to_string(),
            "null.local",
            "runs the provisioners on this host, in a throw-away workspace",
        ),
    };
    let sign = if matches!(builder, InitBuilder::Null) {
        "\n# The null builder makes no artifact, so nothing is signed; other\n# builders sign with the key `kiln init` made:\n# [build.sign]\n# key = \"cosign.key\"\n".to_string()
    } else {
        "\n[build.sign]\nkey = \"cosign.key\"                 # password: KILN_PASSWORD\n\n[build.register]\nchannels = [\"dev\"]\n".to_string()
    };
    let target = if matches!(builder, InitBuilder::Null) {
        "motd"
    } else {
        "/etc/motd"
    };
    format!(
        "# Scaffolded by `kiln init`: {note}.\n# `kiln validate {name}.toml` checks it, `kiln build {name}.toml` bakes it,\n# `kiln ci github {name}.toml` writes its pipeline.\n\n[image]\nname = \"{name}\"\nversion = \"0.1.0\"\ndescription = \"{name}, baked by kiln\"\n\n{source}\n[[build]]\nname = \"{name}\"\nsources = [\"{id}\"]\n\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo 'built by kiln' > {target}\"]\n{sign}"
    )
}

fn default_name(dir: &Path) -> String {
    let base = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase()))
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if crate::catalog::model::is_valid_name(name) {
        name.to_string()
    } else {
        "golden".to_string()
    }
}

pub fn exec(args: InitArgs) -> Exit {
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.dir));
    if !crate::catalog::model::is_valid_name(&name) {
        eprintln!("error: `{name}` is not a valid image name (letters, digits, `-`, `_`, `.`, at most 64 characters)");
        return Exit::BadInput;
    }
    let template_path = args.dir.join(format!("{name}.toml"));
    let gitignore = args.dir.join(".gitignore");
    let prefix = args.dir.join("cosign");
    let exist: Vec<String> = [
        template_path.clone(),
        gitignore.clone(),
        prefix.with_extension("key"),
        prefix.with_extension("pub"),
    ]
    .iter()
    .filter(|p| p.exists())
    .map(|p| format!("`{}`", p.display()))
    .collect();
    if !exist.is_empty() {
        eprintln!(
            "error: {} exist{} already; `kiln init` does not overwrite files",
            exist.join(", "),
            if exist.len() == 1 { "s" } else { "" }
        );
        return Exit::BadInput;
    }
    let pw = match crate::sign::password("the new signing key") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    if let Err(e) = fs_err::create_dir_all(&args.dir) {
        eprintln!("error: {e}");
        return Exit::Failure;
    }
    if let Err(e) = crate::sign::keygen(&prefix, &pw) {
        eprintln!("error: {e}");
        return Exit::Failure;
    }
    let written = fs_err::write(&template_path, template(args.builder, &name))
        .and_then(|_| fs_err::write(&gitignore, GITIGNORE));
    if let Err(e) = written {
        eprintln!("error: {e}");
        return Exit::Failure;
    }
    for p in [
        &template_path,
        &prefix.with_extension("key"),
        &prefix.with_extension("pub"),
        &gitignore,
    ] {
        println!("created {}", p.display());
    }
    println!(
        "next: kiln validate {0} && kiln build {0}",
        template_path.display()
    );
    Exit::Success
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_folder() {
        assert_eq!(default_name(Path::new("/x/My Web")), "my-web");
        assert_eq!(default_name(Path::new("/x/---")), "golden");
    }
}
