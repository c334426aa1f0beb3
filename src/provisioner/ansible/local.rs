//! `type = "ansible-local"`: run an Ansible playbook *inside* the instance
//! (Ansible must be installed there), as Packer's `ansible-local` does. The
//! playbook (and `playbook_dir`, and `galaxy_file`) are uploaded to a
//! staging folder, roles from `galaxy_file` installed next to them,
//! `ansible-playbook` runs against `127.0.0.1` with a local connection,
//! and the staging folder is removed afterwards, whatever happened.
//!
//! `extra_vars` may hold secrets: they reach Ansible only through a file on
//! the instance's `/dev/shm` tmpfs (mode 0600, removed when the run ends),
//! never on a command line or in a file that reaches the image. Ansible's
//! own temporary and home folders are kept inside the staging folder, so
//! nothing of it is left in the image.

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::communicator::{sh_quote, Communicator, RemoteCommand};
use crate::job::JobContext;
use crate::provisioner::file::{run_quiet, upload_folder};
use crate::provisioner::{list, text, ProvisionError, Provisioner};
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{parse_duration, Field, Kind, STR, STR_LIST};
use crate::template::Value;

pub const FIELDS: &[Field] = &[
    Field::req("playbook_file", Kind::ExistingFile),
    Field::opt("playbook_dir", Kind::Path),
    Field::opt("galaxy_file", Kind::ExistingFile),
    Field::opt("extra_arguments", STR_LIST),
    Field::opt("extra_vars", Kind::Map(&STR)).sensitive_ok(),
    Field::opt("inventory_groups", STR_LIST),
    Field::opt("staging_directory", Kind::Str),
    Field::opt("clean_staging_directory", Kind::Bool),
    Field::opt("command", Kind::Str),
    Field::opt("galaxy_command", Kind::Str),
    Field::opt("timeout", Kind::Duration),
];

pub struct AnsibleLocal {
    playbook: PathBuf,
    playbook_dir: Option<PathBuf>,
    galaxy_file: Option<PathBuf>,
    extra_arguments: Vec<String>,
    extra_vars: Vec<(String, String)>,
    groups: Vec<String>,
    staging: String,
    clean: bool,
    command: String,
    galaxy_command: String,
    timeout: Option<std::time::Duration>,
    at: String,
}

impl AnsibleLocal {
    pub fn from_plan(
        plan: &ProvisionerPlan,
        template_dir: &Path,
    ) -> Result<AnsibleLocal, ProvisionError> {
        let playbook = template_dir.join(text(plan, "playbook_file").unwrap_or_default());
        let playbook_dir = text(plan, "playbook_dir").map(|d| template_dir.join(d));
        if let Some(d) = &playbook_dir {
            if !d.is_dir() {
                return Err(ProvisionError::Config(format!(
                    "ansible-local at {}: `playbook_dir` `{}` is not a folder",
                    plan.at,
                    d.display()
                )));
            }
        }
        let extra_vars = match plan.config.get("extra_vars") {
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_interpolated().unwrap_or_default()))
                .collect(),
            _ => vec![],
        };
        Ok(AnsibleLocal {
            playbook,
            playbook_dir,
            galaxy_file: text(plan, "galaxy_file").map(|g| template_dir.join(g)),
            extra_arguments: list(plan, "extra_arguments"),
            extra_vars,
            groups: list(plan, "inventory_groups"),
            staging: text(plan, "staging_directory")
                .unwrap_or_else(|| format!("/tmp/kiln-ansible-{}", uuid::Uuid::new_v4().simple())),
            clean: !matches!(
                plan.config.get("clean_staging_directory"),
                Some(Value::Bool(false))
            ),
            command: text(plan, "command").unwrap_or_else(|| "ansible-playbook".into()),
            galaxy_command: text(plan, "galaxy_command").unwrap_or_else(|| "ansible-galaxy".into()),
            timeout: text(plan, "timeout").and_then(|t| parse_duration(&t)),
            at: plan.at.clone(),
        })
    }

    /// The inventory: the instance itself, in each of `inventory_groups`.
    fn inventory(&self) -> String {
        let host = "127.0.0.1 ansible_connection=local";
        if self.groups.is_empty() {
            return format!("{host}\n");
        }
        self.groups
            .iter()
            .map(|g| format!("[{g}]\n{host}\n"))
            .collect()
    }

    /// The script that runs the playbook (no secret in it: `extra_vars`
    /// arrive in `KILN_ANSIBLE_EXTRA_VARS`).
    fn script(&self, playbook: &str, galaxy: Option<&str>) -> String {
        let q = |s: &str| sh_quote(s);
        let staging = q(&self.staging);
        let mut s = format!("cd {staging}\n");
        if let Some(g) = galaxy {
            s.push_str(&format!(
                "{} install -r {} -p {staging}/roles\n",
                self.galaxy_command,
                q(g)
            ));
        }
        let mut args: Vec<String> = vec!["-i".into(), q(&format!("{}/inventory", self.staging))];
        if !self.extra_vars.is_empty() {
            // A tmpfs file, 0600, gone when this script ends.
            s.push_str(
                "[ \"$(stat -f -c %T /dev/shm 2>/dev/null)\" = tmpfs ] || { echo 'kiln: /dev/shm is not a tmpfs in the instance: extra_vars (which may hold secrets) are only passed through a tmpfs' >&2; exit 97; }\n\
                 umask 077\nkiln_vars=$(mktemp /dev/shm/kiln-ansible-vars.XXXXXX)\ntrap 'rm -f \"$kiln_vars\"' EXIT\n\
                 printf '%s' \"$KILN_ANSIBLE_EXTRA_VARS\" > \"$kiln_vars\"\nunset KILN_ANSIBLE_EXTRA_VARS\numask 022\n",
            );
            args.push("-e".into());
            args.push("\"@$kiln_vars\"".into());
        }
        args.extend(self.extra_arguments.iter().map(|a| q(a)));
        args.push(q(playbook));
        s.push_str(&format!("{} {}\n", self.command, args.join(" ")));
        s
    }
}

#[async_trait]
impl Provisioner for AnsibleLocal {
    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        let result = self.run(ctx, comm).await;
        if self.clean {
            let cleaned = run_quiet(
                comm,
                &format!("rm -rf {}", sh_quote(&self.staging)),
                "remove the staging folder",
                &self.at,
            )
            .await;
            if result.is_ok() {
                cleaned?;
            }
        }
        result
    }
}

impl AnsibleLocal {
    async fn run(&self, ctx: &JobContext, comm: &dyn Communicator) -> Result<(), ProvisionError> {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        if let Some(dir) = &self.playbook_dir {
            upload_folder(comm, dir, &self.staging, None, &self.at).await?;
        }
        let playbook = format!("{}/{}", self.staging, name(&self.playbook));
        comm.upload(&self.playbook, &playbook, Some(0o644)).await?;
        let galaxy = match &self.galaxy_file {
            Some(g) => {
                let remote = format!("{}/{}", self.staging, name(g));
                comm.upload(g, &remote, Some(0o644)).await?;
                Some(remote)
            }
            None => None,
        };
        let inventory =
            ctx.scratch_file("inventory")
                .await
                .map_err(|source| ProvisionError::Io {
                    what: "cannot create scratch file".into(),
                    source,
                })?;
        fs_err::tokio::write(&inventory, self.inventory())
            .await
            .map_err(|source| ProvisionError::Io {
                what: "cannot write the inventory".into(),
                source,
            })?;
        comm.upload(
            &inventory,
            &format!("{}/inventory", self.staging),
            Some(0o644),
        )
        .await?;
        let _ = tokio::fs::remove_file(&inventory).await;

        let mut env: Vec<(String, String)> = [
            ("ANSIBLE_LOCAL_TEMP", "tmp"),
            ("ANSIBLE_REMOTE_TEMP", "tmp"),
            ("ANSIBLE_HOME", "home"),
            ("ANSIBLE_ROLES_PATH", "roles"),
        ]
        .into_iter()
        .map(|(k, d)| (k.to_string(), format!("{}/{d}", self.staging)))
        .collect();
        env.extend(
            [
                ("ANSIBLE_RETRY_FILES_ENABLED", "0"),
                ("ANSIBLE_NOCOLOR", "1"),
                ("PYTHONUNBUFFERED", "1"),
                ("PYTHONDONTWRITEBYTECODE", "1"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        if !self.extra_vars.is_empty() {
            let vars: serde_json::Map<String, serde_json::Value> = self
                .extra_vars
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            env.push((
                "KILN_ANSIBLE_EXTRA_VARS".into(),
                serde_json::Value::Object(vars).to_string(),
            ));
        }
        let cmd = RemoteCommand {
            script: self.script(&playbook, galaxy.as_deref()),
            env,
            workdir: None,
            timeout: self.timeout,
            may_reboot: false,
        };
        let code = comm
            .exec(&cmd, &mut |stream, line| ctx.output(stream, line))
            .await?;
        if code != 0 {
            return Err(ProvisionError::ExitCode {
                what: format!(
                    "`{}` (the playbook `{}`), in the provisioner at {}",
                    self.command,
                    name(&self.playbook),
                    self.at
                ),
                code,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(vars: &[(&str, &str)]) -> AnsibleLocal {
        AnsibleLocal {
            playbook: "site.yml".into(),
            playbook_dir: None,
            galaxy_file: None,
            extra_arguments: vec!["--tags".into(), "web x".into()],
            extra_vars: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            groups: vec!["web".into(), "db".into()],
            staging: "/tmp/s".into(),
            clean: true,
            command: "ansible-playbook".into(),
            galaxy_command: "ansible-galaxy".into(),
            timeout: None,
            at: "t.toml:1:1".into(),
        }
    }

    #[test]
    fn extra_vars_never_reach_the_script_text() {
        let a = sample(&[("db_password", "hunter2-secret")]);
        let s = a.script("/tmp/s/site.yml", None);
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("-e \"@$kiln_vars\""), "{s}");
        assert!(s.contains("/dev/shm"), "{s}");
        assert!(s.contains("'--tags' 'web x'"), "{s}");
        assert_eq!(
            a.inventory(),
            "[web]\n127.0.0.1 ansible_connection=local\n[db]\n127.0.0.1 ansible_connection=local\n"
        );
        let plain = sample(&[]).script("/tmp/s/site.yml", Some("/tmp/s/req.yml"));
        assert!(!plain.contains("/dev/shm"), "{plain}");
        assert!(
            plain.contains("ansible-galaxy install -r '/tmp/s/req.yml' -p '/tmp/s'/roles"),
            "{plain}"
        );
    }
}
