//! Packer provisioners and post-processors as kiln steps: `shell`,
//! `shell-local`, `file`, `breakpoint`, `ansible` and `ansible-local` map
//! one to one (`execute_command`'s `{{ .Path }}`/`{{ .Vars }}` become
//! kiln's `{path}`/`{vars}`), `docker-tag` + `docker-push` become the `to`
//! of the build's OCI sources, `manifest` and `checksum` are what kiln does
//! anyway; everything else is reported.

use toml_edit::{Array, InlineTable, Item, Table, Value};

use super::convert::Converter;
use super::model::{Attr, Block, Expr, Node};
use super::report::Level;

impl Converter<'_> {
    /// One Packer provisioner as kiln provisioner tables (usually one).
    pub(super) fn provisioner(&mut self, p: &Block, sources: &[String]) -> Vec<Table> {
        let ty = p.labels.first().cloned().unwrap_or_default();
        let construct = format!("provisioner \"{ty}\"");
        let mut steps = match ty.as_str() {
            "shell" | "shell-local" => self.shell(p, &ty, &construct).into_iter().collect(),
            "file" => self.file(p, &construct),
            "breakpoint" => {
                let mut t = Table::new();
                t.insert("type", toml_edit::value("breakpoint"));
                for a in &p.attrs {
                    match a.key.as_str() {
                        "note" | "disable" => {
                            self.put(&mut t, &a.key, &a.value, &construct, false);
                        }
                        _ => self.common(&construct, a),
                    }
                }
                vec![t]
            }
            "ansible-local" | "ansible" => {
                let amis: Vec<&String> = sources.iter().filter(|s| s.starts_with("ami.")).collect();
                if ty == "ansible" && !amis.is_empty() {
                    self.report.push(
                        Level::Approximate,
                        construct.clone(),
                        Some(&p.loc),
                        format!(
                            "kiln runs `ansible` from the host against QEMU and OCI instances; a build refuses it on AMI sources ({})",
                            amis.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
                        ),
                        "use `type = \"ansible-local\"` there (Ansible installed in the image first), or `except` the AMI sources",
                    );
                }
                self.ansible(p, &ty, &construct).into_iter().collect()
            }
            _ => {
                self.report.push(
                    Level::NotConverted,
                    construct.clone(),
                    Some(&p.loc),
                    "kiln has no such provisioner (it has shell, shell-local, file, ansible, ansible-local, breakpoint and hardening)",
                    "rewrite the step as a `shell` script",
                );
                vec![]
            }
        };
        let only = self.source_filter(p, "only", &construct);
        let except = self.source_filter(p, "except", &construct);
        for s in &mut steps {
            if let Some(o) = &only {
                s.insert("only", toml_edit::value(o.clone()));
            }
            if let Some(e) = &except {
                s.insert("except", toml_edit::value(e.clone()));
            }
        }
        steps
    }

    /// `only`/`except` with Packer source names as kiln `TYPE.NAME`s.
    fn source_filter(&mut self, p: &Block, key: &str, construct: &str) -> Option<Array> {
        let list = p.value(key)?.as_list()?;
        let mut out = Array::new();
        for item in list {
            let Some(s) = item.as_str() else { continue };
            let name = s.strip_prefix("source.").unwrap_or(s);
            match self.source_names.get(name) {
                Some(k) => out.push(k.clone()),
                None => self.report.push(
                    Level::Approximate,
                    format!("{construct}.{key}"),
                    Some(&item.loc),
                    format!(
                        "`{s}` names a source that was not converted; it was left out of `{key}`"
                    ),
                    format!("check `{key}` once the source exists in kiln"),
                ),
            }
        }
        Some(out)
    }

    /// Settings every Packer provisioner takes.
    fn common(&mut self, construct: &str, a: &Attr) {
        match a.key.as_str() {
            "only" | "except" => {}
            "pause_before" | "max_retries" | "override" => self.report.push(
                Level::NotConverted,
                format!("{construct}.{}", a.key),
                Some(&a.loc),
                "kiln steps have no such setting",
                "drop it, or do it in the script (e.g. `sleep`, a retry loop)",
            ),
            _ => self.report.push(
                Level::NotConverted,
                format!("{construct}.{}", a.key),
                Some(&a.loc),
                "kiln's step has no such setting",
                "see docs/import.md, or drop it",
            ),
        }
    }

    /// `shell` (in the instance) or `shell-local` (on the build host).
    fn shell(&mut self, p: &Block, ty: &str, construct: &str) -> Option<Table> {
        let local = ty == "shell-local";
        let mut t = Table::new();
        t.insert("type", toml_edit::value(ty));
        for a in &p.attrs {
            let c = format!("{construct}.{}", a.key);
            match a.key.as_str() {
                "inline" => {
                    self.put(&mut t, "inline", &a.value, &c, false);
                }
                "command" if local => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let one: Array = [s].into_iter().collect();
                        t.insert("inline", toml_edit::value(one));
                    }
                }
                "script" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let path = self.path(&s, &c, &a.loc, true);
                        t.insert("script", toml_edit::value(path));
                    }
                }
                "scripts" => {
                    let mut list = Array::new();
                    for item in a.value.as_list().unwrap_or_default() {
                        if let Some(s) = self.text(item, &c, false) {
                            list.push(self.path(&s, &c, &item.loc, true));
                        }
                    }
                    if a.value.as_list().is_none() {
                        self.report.push(
                            Level::NotConverted,
                            c,
                            Some(&a.loc),
                            "the script list is computed",
                            "list the scripts by hand",
                        );
                    } else {
                        t.insert("scripts", toml_edit::value(list));
                    }
                }
                "environment_vars" => self.environment_vars(&mut t, &a.value, &c),
                "env" => {
                    self.put(&mut t, "env", &a.value, &c, true);
                }
                "timeout" | "valid_exit_codes" | "pause_before" | "max_retries" => {
                    self.put(&mut t, &a.key, &a.value, &c, false);
                }
                "remote_folder" | "expect_disconnect" | "start_retry_timeout" if !local => {
                    self.put(&mut t, &a.key, &a.value, &c, false);
                }
                "execute_command" if !local => {
                    if let Some(cmd) = self.execute_command(&a.value, &c) {
                        // `NAME="$NAME"` quoted for a later shell (`sudo sh -c '{vars} …'`)
                        // is expanded after sudo dropped the environment.
                        let quoted = cmd
                            .find("{vars}")
                            .is_some_and(|i| cmd[..i].matches('\'').count() % 2 == 1);
                        if cmd.contains("sudo") && !cmd.contains("-E") && quoted {
                            self.report.push(
                                Level::Approximate,
                                c.clone(),
                                Some(&a.loc),
                                "kiln's `{vars}` is `NAME=\"$NAME\"` (the values stay in the environment, out of the command text); here it is expanded by a shell that `sudo` without `-E` started with a cleared environment",
                                "use `sudo -E`, or pass the names through `--preserve-env`",
                            );
                        }
                        t.insert("execute_command", toml_edit::value(cmd));
                    }
                }
                "execute_command" | "only_on" | "use_linux_pathing" | "env_var_format"
                | "inline_shebang" | "tempfile_extension"
                    if local =>
                {
                    self.report.push(
                        Level::Approximate,
                        c,
                        Some(&a.loc),
                        "kiln runs host commands itself (`/bin/sh -e` for inline commands, scripts by their `#!` line), in the template's folder with a clean environment plus `env`",
                        "drop it unless the commands depend on it",
                    )
                }
                "inline_shebang" | "remote_path" | "remote_file" | "skip_clean"
                | "use_env_var_file" | "env_var_format" | "binary" => self.report.push(
                    Level::Approximate,
                    c,
                    Some(&a.loc),
                    "kiln decides how scripts are named, run and removed (`REMOTE_FOLDER/kiln-script-*.sh`, removed after running, env never in a file)",
                    "drop it unless the script depends on it",
                ),
                _ => self.common(construct, a),
            }
        }
        if !["inline", "script", "scripts"]
            .iter()
            .any(|k| t.contains_key(k))
        {
            self.report.push(
                Level::NotConverted,
                construct,
                Some(&p.loc),
                "nothing of the step was left to run",
                "write the step by hand",
            );
            return None;
        }
        Some(t)
    }

    /// Packer's `execute_command` with `{{ .Path }}` and `{{ .Vars }}` as
    /// kiln's `{path}` and `{vars}`; any other build variable is reported.
    fn execute_command(&mut self, n: &Node, construct: &str) -> Option<String> {
        self.text_with_placeholders(
            n,
            construct,
            &[("{{ .Path }}", "{path}"), ("{{ .Vars }}", "{vars}")],
        )
    }

    /// `["K=V", …]` as kiln's `env = { K = "V" }`.
    fn environment_vars(&mut self, t: &mut Table, n: &Node, construct: &str) {
        let Some(items) = n.as_list() else {
            self.put(t, "env", n, construct, true);
            return;
        };
        let mut env = InlineTable::new();
        for item in items {
            let Some(s) = self.text(item, construct, true) else {
                continue;
            };
            match s.split_once('=') {
                Some((k, v)) => {
                    env.insert(k, Value::from(v));
                }
                None => self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&item.loc),
                    format!("`{s}` is not `NAME=VALUE`"),
                    "write the entry by hand",
                ),
            }
        }
        t.insert("env", toml_edit::value(env));
    }

    fn file(&mut self, p: &Block, construct: &str) -> Vec<Table> {
        let mut t = Table::new();
        t.insert("type", toml_edit::value("file"));
        let mut sources: Vec<String> = vec![];
        let download = p.value("direction").and_then(Node::as_str) == Some("download");
        for a in &p.attrs {
            let c = format!("{construct}.{}", a.key);
            match a.key.as_str() {
                "source" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        if download {
                            t.insert("source", toml_edit::value(s));
                        } else {
                            let path = self.path(&s, &c, &a.loc, true);
                            sources.push(path);
                        }
                    }
                }
                "sources" => {
                    for item in a.value.as_list().unwrap_or_default() {
                        if let Some(s) = self.text(item, &c, false) {
                            sources.push(self.path(&s, &c, &item.loc, true));
                        }
                    }
                }
                "destination" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let s = if download {
                            self.path(&s, &c, &a.loc, false)
                        } else {
                            s
                        };
                        t.insert("destination", toml_edit::value(s));
                    }
                }
                "content" => {
                    self.put(&mut t, "content", &a.value, &c, false);
                }
                "direction" => {
                    self.put(&mut t, "direction", &a.value, &c, false);
                }
                "generated" => {}
                _ => self.common(construct, a),
            }
        }
        if sources.len() <= 1 {
            if let Some(s) = sources.pop() {
                t.insert("source", toml_edit::value(s));
            }
            return vec![t];
        }
        // One kiln step per source, into the destination folder.
        let dest = t
            .get("destination")
            .and_then(Item::as_str)
            .unwrap_or("/tmp")
            .to_string();
        sources
            .into_iter()
            .map(|s| {
                let mut one = t.clone();
                let base = std::path::Path::new(&s)
                    .file_name()
                    .map(|f| f.to_string_lossy().to_string())
                    .unwrap_or_default();
                one.insert("source", toml_edit::value(s));
                one.insert(
                    "destination",
                    toml_edit::value(format!("{}/{base}", dest.trim_end_matches('/'))),
                );
                one
            })
            .collect()
    }

    /// `ansible-local` (in the instance) or `ansible` (on the build host).
    fn ansible(&mut self, p: &Block, ty: &str, construct: &str) -> Option<Table> {
        let local = ty == "ansible-local";
        let mut t = Table::new();
        t.insert("type", toml_edit::value(ty));
        for a in &p.attrs {
            let c = format!("{construct}.{}", a.key);
            match a.key.as_str() {
                "playbook_file" | "galaxy_file" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let path = self.path(&s, &c, &a.loc, true);
                        t.insert(&a.key, toml_edit::value(path));
                    }
                }
                "playbook_dir" if local => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let path = self.path(&s, &c, &a.loc, true);
                        t.insert("playbook_dir", toml_edit::value(path));
                    }
                }
                "extra_arguments" => {
                    let mut list = Array::new();
                    for item in a.value.as_list().unwrap_or_default() {
                        if let Some(s) = self.text(item, &c, false) {
                            // ansible-local's arguments went through a shell
                            // in Packer; kiln passes each one as it is.
                            list.push(if local { unquote(&s) } else { s });
                        }
                    }
                    t.insert("extra_arguments", toml_edit::value(list));
                }
                "inventory_groups" | "staging_directory" | "clean_staging_directory"
                | "galaxy_command"
                    if local =>
                {
                    self.put(&mut t, &a.key, &a.value, &c, false);
                }
                "user" | "groups" | "ansible_env_vars" if !local => {
                    self.put(&mut t, &a.key, &a.value, &c, false);
                }
                "command" => {
                    self.put(&mut t, "command", &a.value, &c, false);
                }
                "use_proxy" | "use_sftp" | "sftp_command" | "local_port"
                | "ssh_host_key_file" | "ssh_authorized_key_file" | "skip_version_check"
                | "keep_inventory_file" | "host_alias"
                    if !local =>
                {
                    self.report.push(
                        Level::Approximate,
                        c,
                        Some(&a.loc),
                        "kiln connects Ansible to the instance itself (SSH with the build's key and pinned host key, or its exec connection for containers; no proxy), as the inventory host `default`",
                        "drop it unless the playbook depends on it",
                    )
                }
                _ => self.common(construct, a),
            }
        }
        if !t.contains_key("playbook_file") {
            self.report.push(
                Level::NotConverted,
                construct,
                Some(&p.loc),
                "there is no `playbook_file` to run",
                "write the step by hand",
            );
            return None;
        }
        Some(t)
    }

    /// A post-processor chain of a build.
    pub(super) fn post_processors(&mut self, chain: &[Block], sources: &[String]) {
        let has_push = chain
            .iter()
            .any(|p| p.labels.first().map(String::as_str) == Some("docker-push"));
        for p in chain {
            let ty = p.labels.first().cloned().unwrap_or_default();
            let construct = format!("post-processor \"{ty}\"");
            match ty.as_str() {
                "docker-tag" if has_push => self.docker_tag(p, &construct, sources),
                "docker-tag" => self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&p.loc),
                    "kiln has no local Docker daemon to tag the image in; without `docker-push` it stays in kiln's blob cache",
                    "add `to = [\"registry:REPO:TAG\"]` to push it, or `oci-layout:DIR` and load it with `skopeo copy oci:DIR docker-daemon:REPO:TAG`",
                ),
                "docker-push" => {
                    let tagged = chain.iter().any(|p| p.labels.first().map(String::as_str) == Some("docker-tag"));
                    if tagged {
                        for a in &p.attrs {
                            self.report.push(
                                Level::NotConverted,
                                format!("{construct}.{}", a.key),
                                Some(&a.loc),
                                "kiln pushes with the credentials of the Docker config",
                                "log in with `docker login` before the build",
                            );
                        }
                    } else {
                        self.report.push(
                            Level::NotConverted,
                            construct,
                            Some(&p.loc),
                            "it pushes an imported image kiln does not make",
                            "add `to = [\"registry:REPO:TAG\"]` to the OCI source",
                        );
                    }
                }
                "manifest" => self.report.push(
                    Level::Note,
                    construct,
                    Some(&p.loc),
                    "kiln writes a build manifest per artifact (ids, digests, signatures) under `STATE/manifests/BUILD/`",
                    "read it there (or with `kiln images show`) instead of Packer's manifest file",
                ),
                "checksum" => self.report.push(
                    Level::Note,
                    construct,
                    Some(&p.loc),
                    "kiln records each artifact's sha256 digest in its build manifest",
                    "read the digest from the manifest",
                ),
                "compress" => {
                    let mut done = false;
                    for (kind, name, t) in self.sources.iter_mut() {
                        if kind == "qemu" && sources.contains(&format!("qemu.{name}")) {
                            t.insert("compress", toml_edit::value(true));
                            done = true;
                        }
                    }
                    self.report.push(
                        if done { Level::Approximate } else { Level::NotConverted },
                        construct,
                        Some(&p.loc),
                        if done {
                            "kiln compresses qcow2 disks inside the image (`compress = true`) instead of writing an archive"
                        } else {
                            "kiln does not archive artifacts"
                        },
                        "compress the artifact after the build if you need an archive",
                    );
                }
                _ => self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&p.loc),
                    "kiln has no such post-processor",
                    "do it after `kiln build` (the artifacts are in the build manifest)",
                ),
            }
        }
    }

    /// `docker-tag` (followed by `docker-push`): a registry `to` for each
    /// OCI source of the build.
    fn docker_tag(&mut self, p: &Block, construct: &str, sources: &[String]) {
        let repo = p
            .value("repository")
            .and_then(|n| self.text(n, &format!("{construct}.repository"), false));
        let tags: Vec<Node> = match p.value("tags").or(p.value("tag")) {
            Some(Node {
                expr: Expr::List(items),
                ..
            }) => items.clone(),
            Some(n) => vec![n.clone()],
            None => vec![],
        };
        let Some(repo) = repo else { return };
        let mut refs = vec![];
        for tag in &tags {
            if let Some(t) = self.text(tag, &format!("{construct}.tags"), false) {
                refs.push(format!("registry:{repo}:{t}"));
            }
        }
        if tags.is_empty() {
            refs.push(format!("registry:{repo}:latest"));
        }
        let mut targets: Vec<String> = sources
            .iter()
            .filter(|s| s.starts_with("oci."))
            .cloned()
            .collect();
        if let Some(only) = p.value("only").and_then(Node::as_list) {
            let keep: Vec<String> = only
                .iter()
                .filter_map(Node::as_str)
                .filter_map(|s| {
                    self.source_names
                        .get(s.strip_prefix("source.").unwrap_or(s))
                        .cloned()
                })
                .collect();
            targets.retain(|t| keep.contains(t));
        }
        for (kind, name, t) in self.sources.iter_mut() {
            if !targets.contains(&format!("{kind}.{name}")) {
                continue;
            }
            let to = t.entry("to").or_insert(toml_edit::value(Array::new()));
            if let Some(a) = to.as_array_mut() {
                for r in &refs {
                    a.push(r.as_str());
                }
            }
        }
        if !refs.is_empty() && targets.len() > 1 {
            self.report.push(
                Level::Approximate,
                construct,
                Some(&p.loc),
                "every OCI source of the build now pushes to the same tags; Packer pushed them in turn, the last one winning",
                "give each source its own tag",
            );
        }
        for a in &p.attrs {
            if !["repository", "tags", "tag", "only", "except", "force"].contains(&a.key.as_str()) {
                self.report.push(
                    Level::NotConverted,
                    format!("{construct}.{}", a.key),
                    Some(&a.loc),
                    "kiln's registry targets have no such setting",
                    "drop it",
                );
            }
        }
    }
}

/// One argument without the shell quotes around it (`"a=b"` → `a=b`).
fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}
