//! Packer sources (builders) as kiln sources: `docker` → `oci`, `qemu` →
//! `qemu`, `amazon-ebs` → `ami`, `null` → `null`. Settings with a kiln
//! equivalent are translated; the rest are reported one by one.

use toml_edit::{Array, InlineTable, Item, Table, Value};

use super::convert::Converter;
use super::model::{Attr, Block, Expr, Node};
use super::report::Level;
use super::translate::Binding;

/// Settings that change nothing in kiln (display, caching), left out
/// without a report; docs/import.md lists them.
const QEMU_COSMETIC: &[&str] = &[
    "headless",
    "vnc_bind_address",
    "vnc_port_min",
    "vnc_port_max",
    "vnc_use_password",
    "use_default_display",
    "display",
    "skip_compaction",
];

impl Converter<'_> {
    /// Converts `source "ty" "base_name"` (or a build's copy of it named
    /// `new_name`) into `[source.KIND.NAME]`.
    pub(super) fn source(&mut self, b: &Block, ty: &str, base_name: &str, new_name: &str) {
        let construct = if base_name == new_name {
            format!("source \"{ty}\" \"{new_name}\"")
        } else {
            format!("source \"{ty}\" \"{base_name}\" (as \"{new_name}\")")
        };
        let (kind, table) = match ty {
            "docker" => ("oci", self.docker(b, &construct)),
            "qemu" => ("qemu", self.qemu(b, &construct, new_name)),
            "amazon-ebs" => ("ami", self.amazon_ebs(b, &construct)),
            "null" => ("null", self.null(b, &construct)),
            other => {
                self.report.push(
                    Level::NotConverted,
                    construct,
                    Some(&b.loc),
                    format!("kiln has no `{other}` builder (it has oci, qemu, ami and null)"),
                    "build this image another way, or rewrite the source for one of kiln's builders",
                );
                return;
            }
        };
        let mut name = new_name.replace('.', "-");
        while self.sources.iter().any(|(k, n, _)| k == kind && *n == name) {
            name.push_str("-2");
        }
        self.source_names
            .insert(format!("{ty}.{new_name}"), format!("{kind}.{name}"));
        self.sources.push((kind.to_string(), name, table));
    }

    fn unknown_setting(&mut self, construct: &str, kind: &str, a: &Attr) {
        self.report.push(
            Level::NotConverted,
            format!("{construct}.{}", a.key),
            Some(&a.loc),
            format!("kiln's `{kind}` source has no such setting"),
            "see docs/import.md for what kiln does instead, or drop it",
        );
    }

    fn unknown_block(&mut self, construct: &str, kind: &str, b: &Block) {
        self.report.push(
            Level::NotConverted,
            format!("{construct}.{}", b.kind),
            Some(&b.loc),
            format!("kiln's `{kind}` source has no such setting"),
            "see docs/import.md for what kiln does instead, or drop it",
        );
    }

    // ---- docker → oci ----

    fn docker(&mut self, b: &Block, construct: &str) -> Table {
        let mut t = Table::new();
        let mut config = Table::new();
        let mut to = Array::new();
        for a in &b.attrs {
            let c = format!("{construct}.{}", a.key);
            match a.key.as_str() {
                "image" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        t.insert("from", toml_edit::value(format!("registry:{s}")));
                    }
                }
                // kiln always snapshots the build into a new image.
                "commit" | "discard" | "pull" => {}
                "export_path" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let dir = s.trim_end_matches(".tar").to_string();
                        let dir = self.path(&dir, &c, &a.loc, false);
                        to.push(format!("oci-layout:{dir}"));
                        self.report.push(
                            Level::Approximate,
                            c,
                            Some(&a.loc),
                            "kiln writes an OCI image layout, not a `docker export` tarball",
                            format!("use the layout at `{dir}` (e.g. `skopeo copy oci:{dir} …`), or a registry `to`"),
                        );
                    }
                }
                "changes" => self.docker_changes(&a.value, &c, &mut config),
                "platform" => self.report.push(
                    Level::Approximate,
                    c,
                    Some(&a.loc),
                    "kiln builds for the host's architecture (an index picks linux/<this architecture>)",
                    "build on a machine of the wanted architecture",
                ),
                "run_command" | "privileged" | "volumes" | "cap_add" | "cap_drop" | "device"
                | "tmpfs" | "container_dir" | "fix_upload_owner" | "exec_user" => {
                    self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln runs each step in its own runc container with Docker's default capabilities and no extra mounts or `docker run` arguments",
                        "do what the setting did inside a provisioner, or drop it",
                    )
                }
                k if k.starts_with("login") || k.starts_with("ecr_") || k.starts_with("aws_") => {
                    self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln reads registry credentials from the Docker config (`~/.docker/config.json`, `REGISTRY_AUTH_FILE`)",
                        "log in with `docker login`/`skopeo login` before the build",
                    )
                }
                _ => self.unknown_setting(construct, "oci", a),
            }
        }
        for nb in &b.blocks {
            self.unknown_block(construct, "oci", nb);
        }
        if !t.contains_key("from") {
            t.insert("from", toml_edit::value("scratch"));
            self.report.push(
                Level::NotConverted,
                format!("{construct}.image"),
                Some(&b.loc),
                "the base image was not converted; `from = \"scratch\"` stands in",
                "set `from = \"registry:IMAGE\"`",
            );
        }
        if !to.is_empty() {
            t.insert("to", toml_edit::value(to));
        }
        if !config.is_empty() {
            t.insert("config", Item::Table(config));
        }
        t
    }

    /// Dockerfile instructions of `changes` as `[source.oci.N.config]`.
    fn docker_changes(&mut self, n: &Node, construct: &str, config: &mut Table) {
        let Some(items) = n.as_list() else { return };
        for item in items {
            let Some(line) = self.text(item, construct, false) else {
                continue;
            };
            let (instr, args) = line
                .trim()
                .split_once(char::is_whitespace)
                .unwrap_or((line.trim(), ""));
            let args = args.trim();
            let exec_form = || -> Array {
                match serde_json::from_str::<Vec<String>>(args) {
                    Ok(v) => v.into_iter().filter(|s| !s.is_empty()).collect(),
                    Err(_) => ["/bin/sh", "-c", args].into_iter().collect(),
                }
            };
            match instr.to_ascii_uppercase().as_str() {
                "CMD" => {
                    config.insert("cmd", toml_edit::value(exec_form()));
                }
                "ENTRYPOINT" => {
                    config.insert("entrypoint", toml_edit::value(exec_form()));
                }
                "WORKDIR" => {
                    config.insert("workdir", toml_edit::value(args));
                }
                "USER" => {
                    config.insert("user", toml_edit::value(args));
                }
                "EXPOSE" => {
                    let ports = config.entry("exposed_ports").or_insert(toml_edit::value(Array::new()));
                    if let Some(a) = ports.as_array_mut() {
                        for p in args.split_whitespace() {
                            a.push(p);
                        }
                    }
                }
                "ENV" | "LABEL" => {
                    let key = if instr.eq_ignore_ascii_case("ENV") { "env" } else { "labels" };
                    let map = config.entry(key).or_insert(toml_edit::value(InlineTable::new()));
                    let Some(m) = map.as_inline_table_mut() else { continue };
                    let pairs: Vec<(String, String)> = if args.contains('=') {
                        shell_words::split(args)
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|w| w.split_once('=').map(|(k, v)| (k.into(), v.into())))
                            .collect()
                    } else {
                        args.split_once(char::is_whitespace)
                            .map(|(k, v)| vec![(k.to_string(), v.trim().to_string())])
                            .unwrap_or_default()
                    };
                    for (k, v) in pairs {
                        m.insert(&k, Value::from(v));
                    }
                }
                other => self.report.push(
                    Level::NotConverted,
                    format!("{construct}: {other}"),
                    Some(&item.loc),
                    "kiln's image config has env, cmd, entrypoint, labels, workdir, user and exposed_ports only",
                    "drop it, or set it in a later Dockerfile build",
                ),
            }
        }
    }

    // ---- qemu → qemu ----

    fn qemu(&mut self, b: &Block, construct: &str, name: &str) -> Table {
        let mut t = Table::new();
        let disk_image = b.value("disk_image").and_then(Node::as_bool) == Some(true);
        let mut out_dir = format!("output-{name}");
        let mut vm_name = format!("packer-{name}");
        let mut installer: Vec<&Attr> = vec![];
        for a in &b.attrs {
            let c = format!("{construct}.{}", a.key);
            let key = a.key.as_str();
            match key {
                "disk_image" => {}
                "iso_url" | "iso_urls" if disk_image => {
                    let nodes = match &a.value.expr {
                        Expr::List(items) => items.clone(),
                        _ => vec![a.value.clone()],
                    };
                    let texts: Vec<String> = nodes
                        .iter()
                        .filter_map(|n| self.text(n, &c, false))
                        .collect();
                    if texts.iter().any(|s| s.contains("://")) {
                        // Downloaded into kiln's cache by digest.
                        let mut list = Array::new();
                        for s in &texts {
                            list.push(s.as_str());
                        }
                        if list.len() == 1 {
                            t.insert("disk_url", toml_edit::value(texts[0].as_str()));
                        } else {
                            t.insert("disk_urls", toml_edit::value(list));
                        }
                    } else if let Some(s) = texts.first() {
                        let p = self.path(s, construct, &a.loc, false);
                        t.insert("disk", toml_edit::value(p));
                    }
                }
                "iso_checksum" if disk_image => match a.value.as_str().and_then(checksum) {
                    Some(sum) => {
                        t.insert("disk_checksum", toml_edit::value(sum));
                    }
                    None => self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln checks the base disk against `sha256:`/`sha512:` digests or a `file:` checksum file",
                        "set `disk_checksum = \"sha256:…\"` (sha256sum of the disk)",
                    ),
                },
                // An install from the ISO onto an empty disk.
                "iso_url" | "iso_urls" => {
                    let nodes = match &a.value.expr {
                        Expr::List(items) => items.clone(),
                        _ => vec![a.value.clone()],
                    };
                    let texts: Vec<String> = nodes
                        .iter()
                        .filter_map(|n| self.text(n, &c, false))
                        .collect();
                    if texts.len() > 1 {
                        let mut list = Array::new();
                        for s in &texts {
                            list.push(s.as_str());
                        }
                        t.insert("iso_urls", toml_edit::value(list));
                    } else if let Some(s) = texts.first() {
                        let v = if s.contains("://") {
                            s.clone()
                        } else {
                            self.path(s, construct, &a.loc, false)
                        };
                        t.insert("iso_url", toml_edit::value(v));
                    }
                }
                "iso_checksum" => match a.value.as_str().and_then(checksum) {
                    Some(sum) => {
                        t.insert("iso_checksum", toml_edit::value(sum));
                    }
                    None => self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln checks the ISO against `sha256:`/`sha512:` digests or a `file:` checksum file",
                        "set `iso_checksum = \"sha256:…\"`",
                    ),
                },
                "boot_command" => {
                    let items = match &a.value.expr {
                        Expr::List(items) => items.clone(),
                        _ => vec![a.value.clone()],
                    };
                    let mut list = Array::new();
                    for item in &items {
                        if let Some(s) = self.boot_command_text(item, &c) {
                            list.push(s);
                        }
                    }
                    t.insert("boot_command", toml_edit::value(list));
                }
                "boot_wait" | "boot_key_interval" | "http_port_min" | "http_port_max"
                | "http_content" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "http_directory" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let p = self.path(&s, &c, &a.loc, false);
                        t.insert(key, toml_edit::value(p));
                    }
                }
                "cd_files" | "cd_content" | "cd_label" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "floppy_files" | "floppy_dirs" | "floppy_content" => installer.push(a),
                "cpus" => {
                    self.put(&mut t, "cpus", &a.value, &c, false);
                }
                "memory" => {
                    self.size(&mut t, "memory", a, &c);
                }
                "disk_size" => {
                    self.size(&mut t, "disk_size", a, &c);
                }
                "accelerator" => match a.value.as_str() {
                    Some(x @ ("kvm" | "tcg")) => {
                        t.insert("accelerator", toml_edit::value(x));
                    }
                    _ => self.report.push(
                        Level::Approximate,
                        c,
                        Some(&a.loc),
                        "kiln knows `kvm` and `tcg`; `auto` (the default) uses KVM when a probe guest runs on it",
                        "leave `accelerator` out, or set kvm or tcg",
                    ),
                },
                "ssh_username" | "ssh_timeout" | "shutdown_command" | "shutdown_timeout" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "ssh_wait_timeout" => {
                    self.put(&mut t, "ssh_timeout", &a.value, &c, false);
                }
                "ssh_password" => {
                    self.put(&mut t, key, &a.value, &c, true);
                }
                "ssh_private_key_file" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        let p = self.path(&s, &c, &a.loc, false);
                        t.insert(key, toml_edit::value(p));
                    }
                }
                "output_directory" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        out_dir = s;
                    }
                }
                "vm_name" => {
                    if let Some(s) = self.text(&a.value, &c, false) {
                        vm_name = s;
                    }
                }
                "format" => match a.value.as_str() {
                    Some(f @ ("qcow2" | "raw")) => {
                        t.insert("format", toml_edit::value(f));
                    }
                    _ => self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln exports qcow2 or raw",
                        "convert the exported disk with `qemu-img convert`",
                    ),
                },
                "disk_compression" => {
                    self.put(&mut t, "compress", &a.value, &c, false);
                }
                "machine_type" | "cpu_model" | "net_device" | "qemu_binary" | "sockets"
                | "cores" | "disk_cache" | "disk_discard" | "disk_detect_zeroes" | "qemuargs" => {
                    self.put(&mut t, key, &a.value, &c, false);
                    // Packer picks the guest architecture by the binary;
                    // kiln by `arch` (its machine, firmware and emulator).
                    if key == "qemu_binary"
                        && a.value.as_str().is_some_and(|b| b.ends_with("qemu-system-aarch64"))
                    {
                        t.insert("arch", toml_edit::value("aarch64"));
                    }
                }
                "disk_interface" => match a.value.as_str() {
                    Some(x @ ("virtio" | "virtio-scsi" | "ide" | "nvme")) => {
                        t.insert(key, toml_edit::value(x));
                    }
                    Some("scsi") => {
                        t.insert(key, toml_edit::value("virtio-scsi"));
                    }
                    _ => self.report.push(
                        Level::NotConverted,
                        c,
                        Some(&a.loc),
                        "kiln attaches the disk as `virtio`, `virtio-scsi`, `ide` or `nvme`",
                        "set `disk_interface` to one of them",
                    ),
                },
                "efi_boot" => {
                    if a.value.as_bool() == Some(true) {
                        t.insert("firmware", toml_edit::value("uefi"));
                    }
                }
                "firmware" | "efi_firmware_code" | "efi_firmware_vars" | "efi_drop_efivars"
                | "use_pflash" => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln picks the firmware files itself: Debian's OVMF with `firmware = \"uefi\"` (`secure_boot = true` for Microsoft's keys), AAVMF with `arch = \"aarch64\"`",
                    "set `firmware = \"uefi\"` if the image boots UEFI",
                ),
                k if QEMU_COSMETIC.contains(&k) => {}
                _ => self.unknown_setting(construct, "qemu", a),
            }
        }
        if !installer.is_empty() {
            let first = installer[0];
            let keys: Vec<&str> = installer.iter().map(|a| a.key.as_str()).collect();
            self.report.push(
                Level::NotConverted,
                format!("{construct}: floppies ({})", keys.join(", ")),
                Some(&first.loc),
                "kiln attaches no floppies",
                "put the files on the seed volume with `cd_files`/`cd_content`, or serve them with `http_directory`/`http_content` (`http://{http_ip}:{http_port}/…` in the boot command)",
            );
        }
        let has_base = ["disk", "disk_url", "disk_urls"]
            .iter()
            .any(|k| t.contains_key(k));
        let installs = t.contains_key("iso_url") || t.contains_key("iso_urls");
        if installs {
            if !t.contains_key("iso_checksum") {
                t.insert("insecure_skip_checksum", toml_edit::value(true));
            }
        } else if !has_base {
            t.insert("disk", toml_edit::value("base.qcow2"));
            t.insert("insecure_skip_checksum", toml_edit::value(true));
            self.report.push(
                Level::NotConverted,
                format!("{construct}.disk"),
                Some(&b.loc),
                "there is no base disk image; `disk = \"base.qcow2\"` and `insecure_skip_checksum` stand in",
                "point `disk` at a cloud image and set `disk_checksum`",
            );
        } else if !t.contains_key("disk_checksum") {
            t.insert("insecure_skip_checksum", toml_edit::value(true));
        }
        let out = self.path(&format!("{out_dir}/{vm_name}"), construct, &b.loc, false);
        t.insert("output", toml_edit::value(out));
        for nb in &b.blocks {
            self.unknown_block(construct, "qemu", nb);
        }
        t
    }

    /// A `boot_command` line with Packer's `{{ .HTTPIP }}` and
    /// `{{ .HTTPPort }}` as kiln's `{http_ip}` and `{http_port}`; other
    /// build variables are reported.
    fn boot_command_text(&mut self, n: &Node, construct: &str) -> Option<String> {
        self.text_with_placeholders(
            n,
            construct,
            &[
                ("{{ .HTTPIP }}", "{http_ip}"),
                ("{{ .HTTPPort }}", "{http_port}"),
            ],
        )
    }

    /// Packer sizes are MiB numbers (or strings with a unit); kiln's are
    /// strings with a unit.
    fn size(&mut self, t: &mut Table, key: &str, a: &Attr, construct: &str) {
        let s = match &a.value.expr {
            Expr::Num(x) => Some(format!("{x}MiB")),
            Expr::Str(s) if s.chars().all(|c| c.is_ascii_digit()) => Some(format!("{s}MiB")),
            Expr::Str(s) => Some(s.clone()),
            _ => self.text(&a.value, construct, false),
        };
        if let Some(s) = s {
            t.insert(key, toml_edit::value(s));
        }
    }

    // ---- amazon-ebs → ami ----

    fn amazon_ebs(&mut self, b: &Block, construct: &str) -> Table {
        let mut t = Table::new();
        for a in &b.attrs {
            let c = format!("{construct}.{}", a.key);
            let key = a.key.as_str();
            match key {
                "region" | "instance_type" | "iam_instance_profile" | "subnet_id"
                | "security_group_id" | "kms_key_id" | "ami_name" | "ami_description" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "encrypt_boot" => {
                    self.put(&mut t, "encrypted", &a.value, &c, false);
                }
                "ami_regions" => self.string_list(&mut t, "copy_to", a, &c),
                "ami_users" => self.string_list(&mut t, "share_with", a, &c),
                "region_kms_key_ids" => {
                    if a.value.as_map().is_none_or(|m| !m.is_empty()) {
                        self.put(&mut t, "copy_kms_key_ids", &a.value, &c, false);
                    }
                }
                "tags" => {
                    self.put(&mut t, "tags", &a.value, &c, false);
                }
                "security_group_ids" => match a.value.as_list() {
                    Some([one]) => {
                        self.put(&mut t, "security_group_id", one, &c, false);
                    }
                    _ => self.unknown_setting(construct, "ami", a),
                },
                "source_ami" => self.source_ami(&mut t, a, &c),
                "source_ami_filter" => {
                    let blocks = b.nested("source_ami_filter");
                    self.ami_filter_into(&mut t, blocks.first(), &c);
                }
                "launch_block_device_mappings" | "ami_block_device_mappings" => {
                    // The attribute form only: blocks come below.
                    for m in b.nested(key).iter().skip(b.blocks(key).count()) {
                        self.block_device(&mut t, key, m, &c);
                    }
                }
                "subnet_filter" | "vpc_filter" | "security_group_filter" => {
                    // The attribute form only: blocks come below.
                    for m in b.nested(key).iter().skip(b.blocks(key).count()) {
                        self.net_filter(&mut t, key, m, &c);
                    }
                }
                "spot_price" | "spot_instance_types" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "access_key" | "secret_key" | "token" | "profile" | "shared_credentials_file"
                | "assume_role" => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln takes AWS credentials from the SDK's standard chain (environment, AWS_PROFILE, SSO, web identity, instance role), never from the template",
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE where kiln runs",
                ),
                "associate_public_ip_address" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                // `ami_communicator` below.
                k if super::ami_communicator::is_communicator_setting(k) => {}
                "run_tags" | "run_volume_tags" | "snapshot_tags" => {
                    self.put(&mut t, key, &a.value, &c, false);
                }
                "skip_create_ami" => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln always makes the AMI of a successful build",
                    "run the provisioners against a `null` source to try them without an AMI",
                ),
                _ => self.unknown_setting(construct, "ami", a),
            }
        }
        for nb in &b.blocks {
            let c = format!("{construct}.{}", nb.kind);
            match nb.kind.as_str() {
                "source_ami_filter" => self.ami_filter_into(&mut t, Some(nb), &c),
                "launch_block_device_mappings" | "ami_block_device_mappings" => {
                    self.block_device(&mut t, &nb.kind, nb, &c)
                }
                "subnet_filter" | "vpc_filter" | "security_group_filter" => {
                    self.net_filter(&mut t, &nb.kind, nb, &c)
                }
                "run_tag" | "run_volume_tag" | "snapshot_tag" => {
                    self.report.push(
                        Level::Approximate,
                        c,
                        Some(&nb.loc),
                        "kiln's `run_tags`, `run_volume_tags` and `snapshot_tags` are maps; the `key`/`value` block form was not converted",
                        "write them as `run_tags = { KEY = \"VALUE\" }` (and likewise)",
                    )
                }
                "deregistration_protection" => {
                    if let Some(e) = nb.value("enabled") {
                        self.put(&mut t, "deregistration_protection", e, &c, false);
                    }
                }
                _ => self.unknown_block(construct, "ami", nb),
            }
        }
        let over_ssh = self.ami_communicator(b, &mut t, construct);
        if !over_ssh && !t.contains_key("iam_instance_profile") {
            self.report.push(
                Level::NotConverted,
                format!("{construct}.iam_instance_profile"),
                Some(&b.loc),
                "kiln runs provisioners over SSM, which needs an instance profile; the Packer source has none",
                "set `iam_instance_profile` to a profile with AmazonSSMManagedInstanceCore",
            );
        }
        if !t.contains_key("region") {
            t.insert("region", toml_edit::value("${env(\"AWS_REGION\")}"));
            self.report.push(
                Level::Approximate,
                format!("{construct}.region"),
                Some(&b.loc),
                "the Packer source takes its region from the environment; kiln's needs `region`, now `${env(\"AWS_REGION\")}`",
                "set the region",
            );
        }
        if !t.contains_key("from") {
            t.insert("from", toml_edit::value("ami-REPLACE-ME"));
            self.report.push(
                Level::NotConverted,
                format!("{construct}.source_ami"),
                Some(&b.loc),
                "the base AMI was not converted; `ami-REPLACE-ME` stands in",
                "set `from` to an AMI id or an `{ owners, name, most_recent }` filter",
            );
        }
        t
    }

    /// A list setting that legacy JSON may give as a comma-separated string.
    pub(super) fn string_list(&mut self, t: &mut Table, key: &str, a: &Attr, construct: &str) {
        match &a.value.expr {
            _ if !self.input.legacy_json => {
                self.put(t, key, &a.value, construct, false);
            }
            Expr::Str(s) => {
                let list: Array = s
                    .split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .collect();
                if !list.is_empty() {
                    t.insert(key, toml_edit::value(list));
                }
            }
            _ => {
                let Some(s) = self.text(&a.value, construct, false) else {
                    return;
                };
                match s.strip_prefix("${").and_then(|x| x.strip_suffix('}')) {
                    Some(inner) if !inner.contains("${") => {
                        t.insert(key, toml_edit::value(format!("${{split(\",\", {inner})}}")));
                        self.report.push(
                            Level::Approximate,
                            construct,
                            Some(&a.loc),
                            "Packer splits a string given for this list at commas; kiln now does with `split`, and an empty string gives one empty entry",
                            "make it a list variable",
                        );
                    }
                    _ => {
                        t.insert(key, Item::Value(Value::from(s)));
                    }
                }
            }
        }
    }

    fn source_ami(&mut self, t: &mut Table, a: &Attr, construct: &str) {
        // `data.amazon-ami.N.id` → the data source's filter.
        if let Some(p) = a.value.as_ref_path() {
            if p.len() == 4 && p[0] == "data" && p[1] == "amazon-ami" && p[3] == "id" {
                let key = format!("data.amazon-ami.{}", p[2]);
                if let Some(f) = self.ami_filters.get(&key).cloned() {
                    t.insert("from", Item::Value(f));
                } else if !matches!(self.names.map.get(&key), Some(Binding::Gone(_))) {
                    self.report.push(
                        Level::NotConverted,
                        construct,
                        Some(&a.loc),
                        format!("`{key}` is not declared"),
                        "set `from` by hand",
                    );
                }
                return;
            }
        }
        self.put(t, "from", &a.value, construct, false);
    }

    fn ami_filter_into(&mut self, t: &mut Table, b: Option<&Block>, construct: &str) {
        let Some(b) = b else { return };
        if let Some(f) = self.ami_filter(b, construct) {
            t.insert("from", Item::Value(f));
        }
    }

    /// One `launch_block_device_mappings` / `ami_block_device_mappings`
    /// entry, one to one: kiln's device tables take Packer's keys.
    fn block_device(&mut self, t: &mut Table, key: &str, m: &Block, construct: &str) {
        const KEYS: &[&str] = &[
            "device_name",
            "volume_size",
            "volume_type",
            "iops",
            "throughput",
            "delete_on_termination",
            "encrypted",
            "kms_key_id",
            "snapshot_id",
            "no_device",
            "virtual_name",
        ];
        let mut inner = Table::new();
        for a in &m.attrs {
            let c = format!("{construct}.{}", a.key);
            match a.key.as_str() {
                k if KEYS.contains(&k) => {
                    self.put(&mut inner, k, &a.value, &c, false);
                }
                "omit_from_artifact" => self.report.push(
                    Level::Approximate,
                    c,
                    Some(&a.loc),
                    "kiln's image keeps every launch volume unless `ami_block_device_mappings` leaves it out",
                    "add `{ device_name = \"…\", no_device = true }` to `ami_block_device_mappings`",
                ),
                _ => self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    "kiln's block device tables have no such setting",
                    "see docs/templates.md, AMI sources",
                ),
            }
        }
        let list = t
            .entry(key)
            .or_insert(Item::Value(Value::Array(Array::new())));
        if let Some(list) = list.as_array_mut() {
            list.push(Value::InlineTable(inner.into_inline_table()));
        }
    }

    /// `subnet_filter`, `vpc_filter`, `security_group_filter`, one to one
    /// (`filters`, and `most_free` / `random` for subnets).
    fn net_filter(&mut self, t: &mut Table, key: &str, m: &Block, construct: &str) {
        let keys: &[&str] = if key == "subnet_filter" {
            &["filters", "most_free", "random"]
        } else {
            &["filters"]
        };
        let mut inner = Table::new();
        for a in &m.attrs {
            let c = format!("{construct}.{}", a.key);
            if keys.contains(&a.key.as_str()) {
                self.put(&mut inner, &a.key, &a.value, &c, false);
            } else {
                self.report.push(
                    Level::NotConverted,
                    c,
                    Some(&a.loc),
                    format!("kiln's `{key}` takes only {}", keys.join(", ")),
                    "narrow `filters` instead",
                );
            }
        }
        t.insert(
            key,
            Item::Value(Value::InlineTable(inner.into_inline_table())),
        );
    }

    // ---- null → null ----

    fn null(&mut self, b: &Block, construct: &str) -> Table {
        for a in &b.attrs {
            if a.key != "communicator" {
                self.unknown_setting(construct, "null", a);
            }
        }
        Table::new()
    }
}

/// Packer's `iso_checksum` in kiln's form: `sha256:`/`sha512:`/`file:` as
/// they are, a bare hex digest with its algorithm named by its length.
fn checksum(s: &str) -> Option<String> {
    if s.starts_with("sha256:") || s.starts_with("sha512:") || s.starts_with("file:") {
        return Some(s.to_string());
    }
    let algo = match s.len() {
        64 => "sha256",
        128 => "sha512",
        _ => return None,
    };
    s.chars()
        .all(|c| c.is_ascii_hexdigit())
        .then(|| format!("{algo}:{s}"))
}
