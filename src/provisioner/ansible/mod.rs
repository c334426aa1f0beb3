//! Ansible, both ways Packer users write it: `ansible-local` ([`local`])
//! runs inside the instance; `ansible` (here) runs `ansible-playbook` on
//! the build host against the instance.
//!
//! The host run reaches the instance the way the communicator offers
//! ([`Communicator::host_access`]): over SSH with the build's ephemeral
//! key and pinned host key (QEMU), or through kiln's own connection plugin
//! (`kiln_exec.py`) that execs into a session container (OCI). Sources
//! with neither refuse it before anything launches. The key, the known
//! host, the inventory and `extra_vars` (which may hold secrets) live in a
//! private tmpfs folder for the run only; `ansible-playbook` gets a clean
//! environment (as `shell-local` does) and no value on its command line.
//! Ansible's remote temporary folder is inside the instance's `/tmp` and
//! removed afterwards, so nothing of it reaches the image.

pub mod local;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{list, text, ProvisionError, Provisioner};
use crate::communicator::local::LocalCommunicator;
use crate::communicator::{sh_quote, Communicator, HostAccess, RemoteCommand};
use crate::job::{JobContext, Resource};
use crate::template::plan::ProvisionerPlan;
use crate::template::schema::{parse_duration, Field, Kind, STR, STR_LIST};
use crate::template::Value;

/// kiln's connection plugin for instances reached by exec.
const CONNECTION_PLUGIN: &str = include_str!("kiln_exec.py");

pub const FIELDS: &[Field] = &[
    Field::req("playbook_file", Kind::ExistingFile),
    Field::opt("user", Kind::Str),
    Field::opt("groups", STR_LIST),
    Field::opt("extra_arguments", STR_LIST),
    Field::opt("extra_vars", Kind::Map(&STR)).sensitive_ok(),
    Field::opt("ansible_env_vars", STR_LIST),
    Field::opt("command", Kind::Str),
    Field::opt("timeout", Kind::Duration),
];

/// The source types whose communicators a host tool can reach.
const SOURCES: &[&str] = &["qemu", "oci"];

/// Problems with an `ansible` provisioner's settings beyond their types.
pub fn settings_problems(
    config: &std::collections::BTreeMap<String, Value>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![];
    if let Some(Value::List(l)) = config.get("ansible_env_vars") {
        for v in l.iter().filter_map(Value::as_interpolated) {
            let name = v.split('=').next().unwrap_or_default();
            if !v.contains('=')
                || name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                out.push(("ansible_env_vars", format!("`{v}` is not `NAME=value`")));
            }
        }
    }
    out
}

pub struct Ansible {
    playbook: PathBuf,
    user: Option<String>,
    groups: Vec<String>,
    extra_arguments: Vec<String>,
    extra_vars: Vec<(String, String)>,
    env_vars: Vec<(String, String)>,
    command: String,
    timeout: Option<std::time::Duration>,
    at: String,
}

impl Ansible {
    pub fn from_plan(
        plan: &ProvisionerPlan,
        template_dir: &Path,
    ) -> Result<Ansible, ProvisionError> {
        let extra_vars = match plan.config.get("extra_vars") {
            Some(Value::Map(m)) => m
                .iter()
                .map(|(k, v)| (k.clone(), v.as_interpolated().unwrap_or_default()))
                .collect(),
            _ => vec![],
        };
        let env_vars = list(plan, "ansible_env_vars")
            .into_iter()
            .filter_map(|v| {
                v.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        Ok(Ansible {
            playbook: template_dir.join(text(plan, "playbook_file").unwrap_or_default()),
            user: text(plan, "user"),
            groups: list(plan, "groups"),
            extra_arguments: list(plan, "extra_arguments"),
            extra_vars,
            env_vars,
            command: text(plan, "command").unwrap_or_else(|| "ansible-playbook".into()),
            timeout: text(plan, "timeout").and_then(|t| parse_duration(&t)),
            at: plan.at.clone(),
        })
    }

    /// The inventory line for the instance (`default` and its variables).
    fn host_line(&self, access: &HostAccess, dir: &Path) -> Result<String, ProvisionError> {
        match access {
            HostAccess::Ssh(ssh) => {
                if ssh.private_key.is_none() {
                    return Err(ProvisionError::NotSupported(format!(
                        "`ansible` at {}: the build connects with a password; only key authentication is passed to Ansible (not supported yet)",
                        self.at
                    )));
                }
                let user = self.user.clone().unwrap_or_else(|| ssh.username.clone());
                let ssh_args = format!(
                    "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o ControlMaster=no",
                    dir.join("known_hosts").display()
                );
                Ok(format!(
                    "default ansible_host={} ansible_port={} ansible_user={user} ansible_ssh_private_key_file={} ansible_ssh_common_args=\"{ssh_args}\"",
                    ssh.host,
                    ssh.port,
                    dir.join("key").display(),
                ))
            }
            HostAccess::Exec(_) => Ok("default ansible_connection=kiln_exec".into()),
        }
    }

    fn inventory(&self, host: &str) -> String {
        let mut inv = format!("{host} ansible_python_interpreter=auto_silent\n");
        for g in &self.groups {
            inv.push_str(&format!("[{g}]\ndefault\n"));
        }
        inv
    }

    /// Writes the run's private files into `dir` (a tmpfs folder).
    fn write_files(&self, access: &HostAccess, dir: &Path) -> Result<(), ProvisionError> {
        use std::os::unix::fs::OpenOptionsExt;
        let write = |name: &str, body: &str| -> Result<(), ProvisionError> {
            use std::io::Write as _;
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(body.as_bytes()).map(|()| f))
                .map_err(|source| ProvisionError::Io {
                    what: format!("cannot write `{}`", path.display()),
                    source,
                })?;
            let _ = std::io::Write::flush(&mut f);
            Ok(())
        };
        match access {
            HostAccess::Ssh(ssh) => {
                let key = ssh.private_key.clone().unwrap_or_default();
                write("key", &key)?;
                let host_key = ssh.host_key.clone().ok_or_else(|| {
                    ProvisionError::NotSupported(format!(
                        "`ansible` at {}: the instance's host key is not pinned yet",
                        self.at
                    ))
                })?;
                write(
                    "known_hosts",
                    &format!("[{}]:{} {host_key}\n", ssh.host, ssh.port),
                )?;
            }
            HostAccess::Exec(_) => {
                std::fs::create_dir(dir.join("plugins")).map_err(|source| ProvisionError::Io {
                    what: "cannot create the plugin folder".into(),
                    source,
                })?;
                write("plugins/kiln_exec.py", CONNECTION_PLUGIN)?;
            }
        }
        write("inventory", &self.inventory(&self.host_line(access, dir)?))?;
        if !self.extra_vars.is_empty() {
            let vars: serde_json::Map<String, serde_json::Value> = self
                .extra_vars
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            write("vars.json", &serde_json::Value::Object(vars).to_string())?;
        }
        Ok(())
    }

    /// The command line (no value of `extra_vars` in it).
    fn script(&self, dir: &Path) -> String {
        let mut args = vec![
            "-i".to_string(),
            sh_quote(&dir.join("inventory").display().to_string()),
        ];
        if !self.extra_vars.is_empty() {
            args.push("-e".into());
            args.push(sh_quote(&format!("@{}", dir.join("vars.json").display())));
        }
        args.extend(self.extra_arguments.iter().map(|a| sh_quote(a)));
        args.push(sh_quote(&self.playbook.display().to_string()));
        format!("exec {} {}\n", self.command, args.join(" "))
    }

    /// The environment of `ansible-playbook`.
    fn env(&self, access: &HostAccess, dir: &Path, remote_tmp: &str) -> Vec<(String, String)> {
        let d = |p: &str| dir.join(p).display().to_string();
        let mut env: Vec<(String, String)> = vec![
            ("ANSIBLE_HOST_KEY_CHECKING".into(), "True".into()),
            ("ANSIBLE_REMOTE_TEMP".into(), remote_tmp.into()),
            ("ANSIBLE_LOCAL_TEMP".into(), d("tmp")),
            ("ANSIBLE_SSH_CONTROL_PATH_DIR".into(), d("cp")),
            ("ANSIBLE_RETRY_FILES_ENABLED".into(), "0".into()),
            ("ANSIBLE_NOCOLOR".into(), "1".into()),
            ("PYTHONUNBUFFERED".into(), "1".into()),
        ];
        // Ansible's control socket is `cp/` plus a 10-character hash; when
        // that cannot fit a Unix socket path, connections are not shared.
        if dir.join("cp").as_os_str().len() + 12 > 107 {
            env.push(("ANSIBLE_SSH_ARGS".into(), "-C -o ControlMaster=no".into()));
        }
        if let HostAccess::Exec(prefix) = access {
            env.push(("ANSIBLE_CONNECTION_PLUGINS".into(), d("plugins")));
            env.push((
                "KILN_ANSIBLE_EXEC".into(),
                serde_json::to_string(prefix).expect("words serialize"),
            ));
        }
        env.extend(self.env_vars.iter().cloned());
        env
    }

    async fn run(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
        access: &HostAccess,
        dir: &Path,
        remote_tmp: &str,
    ) -> Result<(), ProvisionError> {
        self.write_files(access, dir)?;
        let scripts = crate::job::scratch::build_work_dir(&ctx.state_dir, &ctx.build_id)
            .join(crate::job::journal::sanitize(&ctx.name))
            .join("ansible");
        let host = LocalCommunicator::new(ctx.template_dir.clone(), scripts, ctx.undo.clone());
        let cmd = RemoteCommand {
            script: self.script(dir),
            env: self.env(access, dir, remote_tmp),
            workdir: None,
            timeout: self.timeout,
            may_reboot: false,
        };
        let code = host
            .exec(&cmd, &mut |stream, line| ctx.output(stream, line))
            .await?;
        // Ansible's remote temporary folder never reaches the image.
        let _ = comm
            .exec(
                &RemoteCommand {
                    script: format!("rm -rf {}", sh_quote(remote_tmp)),
                    ..Default::default()
                },
                &mut |_, _| {},
            )
            .await;
        if code != 0 {
            return Err(ProvisionError::ExitCode {
                what: format!(
                    "`{}` (the playbook `{}`), in the provisioner at {}",
                    self.command,
                    self.playbook.display(),
                    self.at
                ),
                code,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Provisioner for Ansible {
    fn check_source(&self, source_type: &str) -> Result<(), ProvisionError> {
        if SOURCES.contains(&source_type) {
            return Ok(());
        }
        Err(ProvisionError::NotSupported(format!(
            "`ansible` at {} runs on the build host and reaches the instance over SSH (qemu) or by exec (oci); a `{source_type}` source offers neither here: use `ansible-local`",
            self.at
        )))
    }

    async fn provision(
        &self,
        ctx: &JobContext,
        comm: &dyn Communicator,
    ) -> Result<(), ProvisionError> {
        let Some(access) = comm.host_access().await? else {
            return Err(self.check_source("this").unwrap_err());
        };
        let tmpfs = crate::secrets::tmpfs_dir("the Ansible provisioner's key and variables")
            .map_err(ProvisionError::NotSupported)?;
        // Short: OpenSSH's control socket below it must fit in 108 bytes.
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = tmpfs.join(format!("kiln-ans-{}", &id[..12]));
        let undo = ctx
            .undo
            .register(
                Resource::TempDir { path: dir.clone() },
                "Ansible's private files (tmpfs)",
            )
            .await
            .map_err(|source| ProvisionError::Io {
                what: "cannot journal the Ansible folder".into(),
                source,
            })?;
        let made = {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir)
        };
        let remote_tmp = format!("/tmp/kiln-ansible-remote-{}", uuid::Uuid::new_v4().simple());
        let result = match made {
            Ok(()) => self.run(ctx, comm, &access, &dir, &remote_tmp).await,
            Err(source) => Err(ProvisionError::Io {
                what: format!("cannot create `{}`", dir.display()),
                source,
            }),
        };
        comm.close_host_access().await;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        ctx.undo.release(undo).await;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::communicator::SshEndpoint;

    fn sample() -> Ansible {
        Ansible {
            playbook: "/t/site.yml".into(),
            user: None,
            groups: vec!["web".into()],
            extra_arguments: vec!["--diff".into()],
            extra_vars: vec![("db_password".into(), "hunter2-secret".into())],
            env_vars: vec![("ANSIBLE_FORKS".into(), "1".into())],
            command: "ansible-playbook".into(),
            timeout: None,
            at: "t.toml:3:1".into(),
        }
    }

    #[test]
    fn the_command_line_holds_no_value_and_ssh_pins_the_host_key() {
        let a = sample();
        let dir = Path::new("/dev/shm/k");
        let script = a.script(dir);
        assert!(!script.contains("hunter2"), "{script}");
        assert!(script.contains("-e '@/dev/shm/k/vars.json'"), "{script}");
        let ssh = HostAccess::Ssh(SshEndpoint {
            host: "127.0.0.1".into(),
            port: 2222,
            username: "kiln".into(),
            private_key: Some("KEY".into()),
            host_key: Some("ssh-ed25519 AAAA".into()),
        });
        let line = a.host_line(&ssh, dir).unwrap();
        assert!(
            line.contains("ansible_port=2222 ansible_user=kiln"),
            "{line}"
        );
        assert!(line.contains("StrictHostKeyChecking=yes"), "{line}");
        assert!(
            line.contains("UserKnownHostsFile=/dev/shm/k/known_hosts"),
            "{line}"
        );
        assert!(a.inventory(&line).ends_with("[web]\ndefault\n"));
        let env = a.env(
            &HostAccess::Exec(vec!["runc".into(), "exec".into(), "id".into()]),
            dir,
            "/tmp/r",
        );
        assert!(env.contains(&("KILN_ANSIBLE_EXEC".into(), r#"["runc","exec","id"]"#.into())));
        assert!(env.contains(&("ANSIBLE_FORKS".into(), "1".into())));
        assert!(a
            .check_source("ami")
            .unwrap_err()
            .to_string()
            .contains("use `ansible-local`"));
    }
}
