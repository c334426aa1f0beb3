//! `kiln import packer` on public Packer templates (tests/fixtures/packer,
//! sources and licenses in SOURCES.md): each imports, the kiln template it
//! writes passes `kiln validate` and `kiln fmt --check`, and the report
//! lists exactly the constructs in the fixture's `expected.txt`
//! (`KILN_BLESS=1` rewrites those files after a reviewed change).

use std::path::{Path, PathBuf};

use crate::{assert_exit, repo, text, Scratch};

/// (fixture folder, what to import inside it, exit code, `--var`s for validate)
const FIXTURES: &[(&str, &str, i32, &[&str])] = &[
    ("amazon-basic", ".", 1, &[]),
    ("ansible-local-docker", ".", 1, &[]),
    ("docker-post-processors", ".", 1, &[]),
    ("docker-variables", ".", 0, &[]),
    ("hcp-golden", "golden.pkr.hcl", 1, &[]),
    ("kali-hcl", "packer.pkr.hcl", 1, &[]),
    ("kali-json", "packer.json", 1, &[]),
    ("nginx-json", "nginx.json", 1, &[]),
    ("qemu-example", ".", 1, &[]),
    ("secretsmanager", "template.pkr.hcl", 1, &[]),
    ("vault-docker", ".", 1, &[]),
];

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// One line per finding: `LEVEL FILE:LINE:COL CONSTRUCT`.
fn findings(report: &serde_json::Value) -> String {
    let mut out = String::new();
    for f in report["findings"].as_array().expect("findings") {
        let place = match (f["file"].as_str(), f["line"].as_u64(), f["column"].as_u64()) {
            (Some(file), Some(l), Some(c)) => {
                let base = Path::new(file)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                format!("{base}:{l}:{c}")
            }
            _ => "-".into(),
        };
        out.push_str(&format!(
            "{} {place} {}\n",
            f["level"].as_str().unwrap(),
            f["construct"].as_str().unwrap()
        ));
    }
    out
}

#[test]
fn public_packer_templates_import_and_validate() {
    let fixtures = repo().join("tests/fixtures/packer");
    let mut failures = vec![];
    for (name, input, code, vars) in FIXTURES {
        let s = Scratch::new();
        let dir = s.path().join("fx").join(name);
        copy_dir(&fixtures.join(name), &dir);
        let out = dir.join("kiln.toml");
        let rel_input = PathBuf::from("fx").join(name).join(input);
        let o = s
            .kiln()
            .args(["import", "packer", "--json", "-o"])
            .arg(&out)
            .arg(&rel_input)
            .output()
            .unwrap();
        assert_exit(&o, *code);
        let (stdout, _) = text(&o);
        let report: serde_json::Value =
            serde_json::from_str(stdout.trim()).expect("one JSON object");
        assert_eq!(report["converted"], *code == 0, "{name}");
        let got = findings(&report);
        let expected_file = fixtures.join(name).join("expected.txt");
        if std::env::var_os("KILN_BLESS").is_some() {
            std::fs::write(&expected_file, &got).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{name}: report differs\n--- expected\n{expected}--- got\n{got}"
            ));
        }
        // Every finding says why and what to do.
        for f in report["findings"].as_array().unwrap() {
            assert!(
                !f["why"].as_str().unwrap().is_empty() && !f["help"].as_str().unwrap().is_empty(),
                "{f}"
            );
        }
        // `--syntax-only`: the templates name files their repositories keep
        // beside them (keys, base disks) that the fixtures do not ship; the
        // schema, expressions and references are all still checked.
        let mut validate = s.kiln();
        validate.args(["validate", "--syntax-only"]);
        for v in *vars {
            validate.args(["--var", v]);
        }
        let v = validate.arg(&out).output().unwrap();
        if v.status.code() != Some(0) {
            let (a, b) = text(&v);
            failures.push(format!(
                "{name}: the imported template does not validate\n{a}{b}\n{}",
                std::fs::read_to_string(&out).unwrap()
            ));
        }
        let f = s
            .kiln()
            .args(["fmt", "--check"])
            .arg(&out)
            .output()
            .unwrap();
        if f.status.code() != Some(0) {
            failures.push(format!("{name}: the imported template is not formatted"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A hostile template: sensitive values (a variable's default, a local)
/// must not reach the kiln template, and a secret headed for a command
/// line is refused rather than written.
#[test]
fn sensitive_values_are_never_written() {
    let s = Scratch::new();
    s.write(
        "p/t.pkr.hcl",
        r#"variable "db_password" {
  type      = string
  default   = "hunter2-very-secret"
  sensitive = true
}
local "token" {
  expression = "tok-3f9a1c77"
  sensitive  = true
}
source "docker" "d" {
  image = "debian:12"
}
build {
  sources = ["source.docker.d"]
  provisioner "shell" {
    environment_vars = ["PW=${var.db_password}"]
    inline           = ["echo ${local.token}"]
  }
  provisioner "shell" {
    environment_vars = ["TOKEN=${local.token}", "PW=${var.db_password}"]
    inline           = ["test -n \"$TOKEN\""]
  }
}
"#,
    );
    let o = s
        .kiln()
        .args(["import", "packer", "p/t.pkr.hcl", "-o", "kiln.toml"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let (_, err) = text(&o);
    assert!(
        err.contains("warning: p/t.pkr.hcl:17:24: not converted: provisioner \"shell\".inline: it holds a secret"),
        "{err}"
    );
    assert!(err.contains("help:"), "{err}");
    let out = std::fs::read_to_string(s.path().join("kiln.toml")).unwrap();
    for secret in ["hunter2", "tok-3f9a1c77"] {
        assert!(!out.contains(secret), "{secret} written:\n{out}");
        assert!(!err.contains(secret), "{secret} in the report:\n{err}");
    }
    assert!(
        out.contains("[secrets.db_password]\nenv = \"PKR_VAR_db_password\""),
        "{out}"
    );
    assert!(out.contains("PW = \"${secret.db_password}\""), "{out}");
    assert!(out.contains("TOKEN = \"${var.token}\""), "{out}");
    assert!(
        !out.contains("echo"),
        "the step with the secret in its command line is left out:\n{out}"
    );
    let v = s
        .kiln()
        .args(["validate", "kiln.toml"])
        .env("KILN_VAR_token", "x")
        .output()
        .unwrap();
    assert_exit(&v, 0);
}

#[test]
fn unreadable_input_exits_2_naming_the_place() {
    let s = Scratch::new();
    s.write(
        "bad.pkr.hcl",
        "source \"docker\" \"d\" {\n  image = \"debian:12\"\n  commit = \n}\n",
    );
    let o = s
        .kiln()
        .args(["import", "packer", "bad.pkr.hcl"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    let (out, err) = text(&o);
    assert!(out.is_empty(), "no template on bad input: {out}");
    assert!(err.contains("error: bad.pkr.hcl:"), "{err}");
    assert!(err.contains("invalid HCL"), "{err}");
    s.write("bad.json", "{\n  \"builders\": [,]\n}\n");
    let o = s
        .kiln()
        .args(["import", "packer", "bad.json"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("error: bad.json:2:"), "{}", text(&o).1);
    let o = s
        .kiln()
        .args(["import", "packer", "missing.pkr.hcl"])
        .output()
        .unwrap();
    assert_exit(&o, 2);
}

/// Without `-o` the template goes to stdout, the report to stderr; a
/// template with nothing to report exits 0.
#[test]
fn template_on_stdout_exit_0_when_all_converted() {
    let s = Scratch::new();
    s.write(
        "t.pkr.hcl",
        "source \"docker\" \"d\" {\n  image = \"debian:12\"\n  changes = [\"ENV A=1\", \"CMD [\\\"nginx\\\"]\"]\n}\nbuild {\n  name = \"web\"\n  sources = [\"source.docker.d\"]\n  provisioner \"file\" {\n    content = \"x\"\n    destination = \"/x\"\n  }\n}\n",
    );
    let o = s
        .kiln()
        .args(["import", "packer", "t.pkr.hcl"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let (out, err) = text(&o);
    assert!(
        out.contains("[source.oci.d]\nfrom = \"registry:debian:12\""),
        "{out}"
    );
    assert!(
        out.contains("env = { A = \"1\" }") && out.contains("cmd = [\"nginx\"]"),
        "{out}"
    );
    assert!(out.contains("[image]\nname = \"web\""), "{out}");
    assert!(
        err.contains("0 not converted, 0 converted approximately"),
        "{err}"
    );
}

/// A Packer QEMU source's machine settings become kiln's, and the result
/// validates; firmware files kiln picks itself are reported.
#[test]
fn qemu_machine_settings_are_translated() {
    let s = Scratch::new();
    s.write("base.qcow2", "not really a disk");
    s.write(
        "t.pkr.hcl",
        r#"source "qemu" "m" {
  disk_image = true
  iso_url = "base.qcow2"
  iso_checksum = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  machine_type = "q35"
  cpu_model = "host"
  sockets = 1
  cores = 2
  disk_interface = "virtio-scsi"
  disk_cache = "unsafe"
  disk_discard = "unmap"
  disk_detect_zeroes = "unmap"
  net_device = "virtio-net"
  qemuargs = [["-device", "virtio-rng-pci"]]
  qemu_binary = "qemu-system-x86_64"
  efi_boot = true
  efi_firmware_code = "/usr/share/OVMF/OVMF_CODE.fd"
  ssh_username = "root"
}
build {
  name = "m"
  sources = ["source.qemu.m"]
}
"#,
    );
    let (out, err) = import_to(&s, "t.pkr.hcl", "kiln.toml");
    for want in [
        "machine_type = \"q35\"",
        "cpu_model = \"host\"",
        "sockets = 1",
        "cores = 2",
        "disk_interface = \"virtio-scsi\"",
        "disk_cache = \"unsafe\"",
        "disk_discard = \"unmap\"",
        "disk_detect_zeroes = \"unmap\"",
        "net_device = \"virtio-net\"",
        "qemuargs = [[\"-device\", \"virtio-rng-pci\"]]",
        "qemu_binary = \"qemu-system-x86_64\"",
        "firmware = \"uefi\"",
    ] {
        assert!(out.contains(want), "{want} not in {out}");
    }
    assert!(err.contains("efi_firmware_code"), "{err}");
    assert!(!err.contains("machine_type"), "{err}");
    assert!(!out.contains("arch ="), "{out}");
    let o = s.kiln().args(["validate", "kiln.toml"]).output().unwrap();
    assert_exit(&o, 0);

    // An aarch64 emulator: kiln's `arch` (AAVMF for UEFI, `virt`).
    let arm = std::fs::read_to_string(s.path().join("t.pkr.hcl"))
        .unwrap()
        .replace("qemu-system-x86_64", "/usr/bin/qemu-system-aarch64")
        .replace("machine_type = \"q35\"", "machine_type = \"virt\"");
    s.write("arm.pkr.hcl", &arm);
    let (out, _) = import_to(&s, "arm.pkr.hcl", "arm.toml");
    assert!(out.contains("arch = \"aarch64\""), "{out}");
    let o = s.kiln().args(["validate", "arm.toml"]).output().unwrap();
    assert_exit(&o, 0);

    // A downloaded base: mirrors and a checksum file.
    s.write(
        "u.pkr.hcl",
        r#"source "qemu" "u" {
  disk_image = true
  iso_urls = ["https://a.example/debian.qcow2", "https://b.example/debian.qcow2"]
  iso_checksum = "file:https://a.example/SHA512SUMS"
}
build {
  name = "u"
  sources = ["source.qemu.u"]
}
"#,
    );
    let (out, err) = import_to(&s, "u.pkr.hcl", "u.toml");
    assert!(
        out.contains(
            "disk_urls = [\"https://a.example/debian.qcow2\", \"https://b.example/debian.qcow2\"]"
        ) && out.contains("disk_checksum = \"file:https://a.example/SHA512SUMS\""),
        "{out}\n{}",
        err
    );
    assert!(!out.contains("disk = "), "{out}");
}

/// An install from an ISO: `iso_url`, `iso_checksum` (bare hex),
/// `boot_command` with Packer's `{{ .HTTPIP }}`/`{{ .HTTPPort }}` as kiln's
/// `{http_ip}`/`{http_port}`, the HTTP server settings and `cd_files`;
/// floppies are reported, and the result validates.
#[test]
fn qemu_iso_install_is_translated() {
    let s = Scratch::new();
    s.write("http/ks.cfg", "text\n");
    s.write(
        "i.pkr.hcl",
        r#"source "qemu" "i" {
  iso_url = "https://mirror.example/alma-9-boot.iso"
  iso_checksum = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  disk_size = "20G"
  boot_wait = "5s"
  boot_key_interval = "10ms"
  boot_command = ["<tab> inst.ks=http://{{ .HTTPIP }}:{{ .HTTPPort }}/ks.cfg<enter><wait10>"]
  http_directory = "http"
  http_port_min = 8100
  http_port_max = 8200
  cd_files = ["http/ks.cfg"]
  floppy_files = ["http/ks.cfg"]
}
build {
  name = "i"
  sources = ["source.qemu.i"]
}
"#,
    );
    let (out, err) = import_to(&s, "i.pkr.hcl", "i.toml");
    for want in [
        "iso_url = \"https://mirror.example/alma-9-boot.iso\"",
        "iso_checksum = \"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
        "boot_command = [\"<tab> inst.ks=http://{http_ip}:{http_port}/ks.cfg<enter><wait10>\"]",
        "boot_wait = \"5s\"",
        "boot_key_interval = \"10ms\"",
        "http_directory = \"http\"",
        "http_port_min = 8100",
        "http_port_max = 8200",
    ] {
        assert!(out.contains(want), "{want} not in {out}\n{err}");
    }
    assert!(!out.contains("disk = "), "no placeholder base disk: {out}");
    assert!(out.contains("cd_files = [\"http/ks.cfg\"]"), "{out}");
    assert!(err.contains("floppy_files"), "floppies are reported: {err}");
    let o = s
        .kiln()
        .args(["validate", "--syntax-only", "i.toml"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
}

/// Packer's provisioner options (shell reboots, exit codes, retries,
/// `execute_command` placeholders, shell-local, both Ansible provisioners)
/// become kiln's own settings, from HCL and from legacy JSON, and the
/// result validates.
#[test]
fn provisioner_options_are_translated() {
    let s = Scratch::new();
    s.write("setup.sh", "#!/bin/sh\necho setup\n");
    s.write("site.yml", "- hosts: all\n  tasks: []\n");
    s.write(
        "t.pkr.hcl",
        r#"source "docker" "d" {
  image = "debian:12"
  commit = true
}
build {
  name = "p"
  sources = ["source.docker.d"]
  provisioner "shell" {
    script = "setup.sh"
    execute_command = "chmod +x {{ .Path }}; {{ .Vars }} sudo -E sh -eux '{{.Path}}'"
    environment_vars = ["MODE=prod"]
    expect_disconnect = true
    start_retry_timeout = "10m"
    valid_exit_codes = [0, 100]
    pause_before = "10s"
    max_retries = 3
    remote_folder = "/var/tmp"
  }
  provisioner "shell" {
    inline = ["echo $MODE"]
    execute_command = "echo 'packer' | sudo -S sh -c '{{ .Vars }} {{ .Path }}'"
    environment_vars = ["MODE=prod"]
  }
  provisioner "shell-local" {
    inline = ["echo built"]
    valid_exit_codes = [0, 1]
  }
  provisioner "shell-local" {
    command = "echo one command"
  }
  provisioner "ansible-local" {
    playbook_file = "site.yml"
    extra_arguments = ["--extra-vars", "\"role=web\""]
    inventory_groups = ["web"]
    clean_staging_directory = true
  }
  provisioner "ansible" {
    playbook_file = "site.yml"
    user = "admin"
    groups = ["web"]
    ansible_env_vars = ["ANSIBLE_HOST_KEY_CHECKING=False"]
    extra_arguments = ["--extra-vars", "role=web"]
    use_proxy = false
  }
}
"#,
    );
    let (out, err) = import_to(&s, "t.pkr.hcl", "kiln.toml");
    for want in [
        "execute_command = \"chmod +x {path}; {vars} sudo -E sh -eux '{path}'\"",
        "expect_disconnect = true",
        "start_retry_timeout = \"10m\"",
        "valid_exit_codes = [0, 100]",
        "pause_before = \"10s\"",
        "max_retries = 3",
        "remote_folder = \"/var/tmp\"",
        "type = \"shell-local\"\ninline = [\"echo built\"]\nvalid_exit_codes = [0, 1]",
        "inline = [\"echo one command\"]",
        "type = \"ansible-local\"",
        // Packer passed ansible-local's arguments through a shell.
        "extra_arguments = [\"--extra-vars\", \"role=web\"]",
        "inventory_groups = [\"web\"]",
        "type = \"ansible\"",
        "user = \"admin\"",
        "ansible_env_vars = [\"ANSIBLE_HOST_KEY_CHECKING=False\"]",
    ] {
        assert!(out.contains(want), "{want} not in {out}");
    }
    // Only the `sudo -S sh -c '{vars} …'` form loses the environment.
    let warned = |what: &str| {
        err.lines()
            .filter(|l| l.starts_with("warning:") && l.contains(what))
            .count()
    };
    assert_eq!(warned("provisioner \"shell\".execute_command"), 1, "{err}");
    assert!(err.contains("use_proxy"), "{err}");
    for key in [
        "\"ansible\":",
        "expect_disconnect",
        "valid_exit_codes",
        "max_retries",
    ] {
        assert!(!err.contains(key), "{key} reported: {err}");
    }
    let o = s.kiln().args(["validate", "kiln.toml"]).output().unwrap();
    assert_exit(&o, 0);

    // Legacy JSON: the placeholders are Go template actions there.
    s.write(
        "t.json",
        r#"{
  "builders": [{"type": "docker", "image": "debian:12", "commit": true}],
  "provisioners": [{
    "type": "shell",
    "inline": ["reboot"],
    "execute_command": "{{ .Vars }} sudo -E '{{ .Path }}'",
    "expect_disconnect": true
  }, {
    "type": "shell",
    "inline": ["true"],
    "execute_command": "{{ .Path }} {{ .EnvVarFile }}"
  }]
}
"#,
    );
    let (out, err) = import_to(&s, "t.json", "j.toml");
    assert!(
        out.contains("execute_command = \"{vars} sudo -E '{path}'\""),
        "{out}"
    );
    assert!(
        err.contains(".EnvVarFile"),
        "an unknown variable is named: {err}"
    );
    let o = s.kiln().args(["validate", "j.toml"]).output().unwrap();
    assert_exit(&o, 0);
}

/// `kiln import packer INPUT -o OUTPUT` in `s`: the template written, and
/// the report on stderr.
fn import_to(s: &Scratch, input: &str, output: &str) -> (String, String) {
    let o = s
        .kiln()
        .args(["import", "packer", input, "-o", output])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    let out = std::fs::read_to_string(s.path().join(output)).expect(output);
    (out, err)
}

/// Issue #21: amazon-ebs's network filters, block device mappings and spot
/// settings translate one to one — in cisagov's public Kali templates (HCL
/// and legacy JSON) and in a template using the rest of Packer's keys —
/// and what comes out passes kiln's schema.
#[test]
fn amazon_ebs_filters_volumes_and_spot_translate_one_to_one() {
    let s = Scratch::new();
    let fixtures = repo().join("tests/fixtures/packer");
    for name in ["kali-hcl", "kali-json", "hcp-golden"] {
        copy_dir(&fixtures.join(name), &s.path().join(name));
    }
    let source = |out: &str, name: &str| -> toml::Table {
        let doc: toml::Table = toml::from_str(out).unwrap();
        doc["source"]["ami"][name].as_table().unwrap().clone()
    };
    let (out, _) = import_to(&s, "kali-hcl/packer.pkr.hcl", "hcl.toml");
    let src = source(&out, "x86_64");
    let filter: toml::Value =
        toml::from_str::<toml::Table>("v = { filters = { \"tag:Name\" = \"AMI Build\" } }")
            .unwrap()["v"]
            .clone();
    assert_eq!(src["subnet_filter"], filter, "{out}");
    assert_eq!(src["vpc_filter"], filter, "{out}");
    let want: toml::Value = toml::from_str::<toml::Table>(
        "v = [{ delete_on_termination = true, device_name = \"/dev/xvda\", encrypted = true, volume_size = 30, volume_type = \"gp3\" }]",
    )
    .unwrap()["v"]
        .clone();
    assert_eq!(src["launch_block_device_mappings"], want, "{out}");

    let (out, _) = import_to(&s, "kali-json/packer.json", "json.toml");
    let src = source(&out, "amazon-ebs");
    let want: toml::Value = toml::from_str::<toml::Table>(
        "v = [{ delete_on_termination = true, device_name = \"xvda\", encrypted = true, volume_size = 8, volume_type = \"gp2\" }]",
    )
    .unwrap()["v"]
        .clone();
    assert_eq!(src["launch_block_device_mappings"], want, "{out}");
    assert_eq!(src["ami_block_device_mappings"], want, "{out}");

    // HashiCorp's golden-image guide tags its snapshots apart.
    let (out, _) = import_to(&s, "hcp-golden/golden.pkr.hcl", "golden.toml");
    let src = source(&out, "base_east");
    assert_eq!(
        src["snapshot_tags"]["environment"].as_str(),
        Some("production"),
        "{out}"
    );

    s.write(
        "spot.pkr.hcl",
        r#"source "amazon-ebs" "spot" {
  region                = "eu-west-1"
  source_ami            = "ami-0123456789abcdef0"
  iam_instance_profile  = "ssm-build"
  ami_name              = "spot-build"
  spot_price            = "auto"
  spot_instance_types   = ["c6a.large", "m6a.large"]
  run_tags              = { cost = "ci" }
  subnet_filter {
    filters = { "tag:Tier" = "build" }
    most_free = true
  }
  security_group_filter {
    filters = { "group-name" = "packer-build" }
  }
  launch_block_device_mappings {
    device_name = "/dev/sdf"
    volume_size = 100
    volume_type = "gp3"
    iops        = 6000
    throughput  = 500
    omit_from_artifact = true
  }
  ami_block_device_mappings {
    device_name = "/dev/sdg"
    virtual_name = "ephemeral0"
  }
  ami_block_device_mappings {
    device_name = "/dev/sdh"
    no_device = true
  }
}
build { sources = ["source.amazon-ebs.spot"] }
"#,
    );
    let (out, err) = import_to(&s, "spot.pkr.hcl", "spot.toml");
    let src = source(&out, "spot");
    assert_eq!(src["spot_price"].as_str(), Some("auto"), "{out}");
    assert_eq!(src["run_tags"]["cost"].as_str(), Some("ci"), "{out}");
    assert_eq!(
        src["spot_instance_types"],
        toml::Value::Array(vec!["c6a.large".into(), "m6a.large".into()])
    );
    assert_eq!(
        src["subnet_filter"]["most_free"].as_bool(),
        Some(true),
        "{out}"
    );
    assert_eq!(
        src["security_group_filter"]["filters"]["group-name"].as_str(),
        Some("packer-build")
    );
    let launch = src["launch_block_device_mappings"].as_array().unwrap();
    assert_eq!(launch.len(), 1);
    assert_eq!(launch[0]["throughput"].as_integer(), Some(500), "{out}");
    assert!(launch[0].get("omit_from_artifact").is_none(), "{out}");
    let ami = src["ami_block_device_mappings"].as_array().unwrap();
    assert_eq!(ami.len(), 2, "{out}");
    assert_eq!(ami[0]["virtual_name"].as_str(), Some("ephemeral0"));
    assert_eq!(ami[1]["no_device"].as_bool(), Some(true));
    // The one key kiln has no place for is reported, not dropped silently.
    assert!(err.contains("omit_from_artifact"), "{err}");
    let v = s
        .kiln()
        .args(["validate", "--syntax-only", "spot.toml"])
        .output()
        .unwrap();
    assert_exit(&v, 0);
}
