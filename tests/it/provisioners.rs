//! What real templates provision with (issue #19), on the OCI builder with
//! runc: shell options (`execute_command`, `valid_exit_codes`,
//! `pause_before`, `max_retries`), folders both ways with Packer's
//! trailing-slash rule, `shell-local` on the host, and `ansible-local`
//! with a real `ansible-core` from Debian inside the instance. Reboots
//! (`expect_disconnect`) need a VM: see `qemu.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::oci::{assert_nothing_left, build, busybox_rootfs, ready, template, SECRET};
use crate::{text, Scratch};

/// Unpacks `layout:tag` with umoci (an independent reader) into `dir`.
fn unpack(layout: &Path, tag: &str, dir: &Path) -> std::path::PathBuf {
    let o = Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "umoci: {}", text(&o).1);
    dir.join("rootfs")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

#[test]
fn shell_options_folders_both_ways_and_shell_local() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    // A folder to upload: files and folders with their own modes, and an
    // empty folder.
    s.write("tree/f", "f\n");
    s.write("tree/run.sh", "#!/bin/sh\n");
    s.write("tree/sub/g", "g\n");
    std::fs::create_dir_all(s.path().join("tree/empty")).unwrap();
    set_mode(&s.path().join("tree/f"), 0o600);
    set_mode(&s.path().join("tree/run.sh"), 0o755);
    set_mode(&s.path().join("tree/sub"), 0o750);
    s.write("one.txt", "one\n");
    s.write("two.txt", "two\n");
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
inline = ["/bin/busybox --install -s /bin"]

[[build.provisioner]]
type = "shell"
pause_before = "1s"
execute_command = "env {vars} MODE=through-execute-command sh {path}"
env = { GREETING = "hello world", TOKEN = "${secret.token}" }
inline = ["echo \"$GREETING/$MODE\" > /etc/greeting", "echo $${#TOKEN} > /etc/token-length", "ls /tmp > /etc/tmp-during"]

[[build.provisioner]]
type = "shell"
valid_exit_codes = [0, 3]
inline = ["echo three > /etc/three", "exit 3"]

[[build.provisioner]]
type = "shell"
max_retries = 2
inline = ["n=$(cat /tmp/attempts 2>/dev/null || echo 0); n=$((n+1)); echo $n > /tmp/attempts; [ $n -ge 2 ] || { echo attempt-$n-fails; exit 1; }", "mv /tmp/attempts /etc/attempts"]

[[build.provisioner]]
type = "file"
source = "tree/"
destination = "/opt/contents"

[[build.provisioner]]
type = "file"
source = "tree"
destination = "/opt/folder/"

[[build.provisioner]]
type = "file"
sources = ["one.txt", "two.txt"]
destination = "/opt/many/"

[[build.provisioner]]
type = "shell"
inline = ["mkdir -p /srv/out/sub /srv/out/empty", "echo a > /srv/out/a", "echo b > /srv/out/sub/b", "chmod 0751 /srv/out/sub", "chmod 4755 /srv/out/a"]

[[build.provisioner]]
type = "file"
direction = "download"
source = "/srv/out"
destination = "fetched/"

[[build.provisioner]]
type = "shell-local"
env = { LISTED = "${secret.token}" }
inline = ["echo \"$KILN_IMAGE_NAME $KILN_SOURCE_NAME $KILN_BUILD_NAME $${#LISTED}\" > local.txt", "env | cut -d= -f1 | sort > local-env.txt", "test -f fetched/out/sub/b"]

[secrets.token]
env = "KILN_OCI_TEST_TOKEN"
"#;
    let t = s.write(
        "t.toml",
        &template("rootfs:base.tar", "\"oci-layout:out/p:1\"", provisioners),
    );
    let (code, summary, out) = build(&s, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(out.contains("pausing 1s before the provisioner"), "{out}");
    assert!(out.contains("attempt-1-fails"), "{out}");
    assert!(out.contains("retry 1 of 2"), "{out}");
    assert!(!out.contains(SECRET), "the secret is redacted");

    let root = unpack(&s.path().join("out/p"), "1", &s.path().join("bundle"));
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // execute_command ran the script with the environment passed on by name.
    assert_eq!(
        read("etc/greeting"),
        "hello world/through-execute-command\n"
    );
    assert_eq!(read("etc/token-length"), format!("{}\n", SECRET.len()));
    assert!(
        read("etc/tmp-during").contains("kiln-script-"),
        "the script was uploaded to /tmp"
    );
    assert!(
        !std::fs::read_dir(root.join("tmp")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("kiln-script-")),
        "the uploaded script is removed"
    );
    assert_eq!(read("etc/three"), "three\n", "exit 3 is valid");
    assert_eq!(read("etc/attempts"), "2\n", "retried once, then passed");
    // `tree/` copies the contents, `tree` the folder; modes kept.
    assert_eq!(read("opt/contents/f"), "f\n");
    assert_eq!(mode(&root.join("opt/contents/f")), 0o600);
    assert_eq!(mode(&root.join("opt/contents/run.sh")), 0o755);
    assert_eq!(mode(&root.join("opt/contents/sub")), 0o750);
    assert_eq!(read("opt/contents/sub/g"), "g\n");
    assert!(root.join("opt/contents/empty").is_dir());
    assert!(!root.join("opt/contents/tree").exists());
    assert_eq!(read("opt/folder/tree/sub/g"), "g\n");
    assert_eq!(read("opt/many/one.txt"), "one\n");
    assert_eq!(read("opt/many/two.txt"), "two\n");
    // The folder came out; no setuid bit reaches the host.
    let fetched = s.path().join("fetched/out");
    assert_eq!(std::fs::read_to_string(fetched.join("a")).unwrap(), "a\n");
    assert_eq!(mode(&fetched.join("a")), 0o755);
    assert_eq!(mode(&fetched.join("sub")), 0o751);
    assert_eq!(
        std::fs::read_to_string(fetched.join("sub/b")).unwrap(),
        "b\n"
    );
    assert!(fetched.join("empty").is_dir());
    // shell-local: the build's names, a listed secret, not kiln's own
    // environment.
    assert_eq!(
        std::fs::read_to_string(s.path().join("local.txt")).unwrap(),
        format!("web img b {}\n", SECRET.len())
    );
    let names = std::fs::read_to_string(s.path().join("local-env.txt")).unwrap();
    assert!(names.lines().any(|l| l == "LISTED"), "{names}");
    assert!(names.lines().any(|l| l == "KILN_BUILD_ID"), "{names}");
    assert!(
        !names.lines().any(|l| l == "KILN_OCI_TEST_TOKEN"),
        "kiln's own environment does not reach shell-local: {names}"
    );
    assert_nothing_left(&s);
}

#[test]
fn bad_exit_codes_hostile_listings_and_links_are_refused() {
    if !ready() {
        return;
    }
    let s = Scratch::new();
    busybox_rootfs(&s, &[]);
    let run = |name: &str, provisioners: &str| {
        let t = s.write(
            &format!("{name}.toml"),
            &template(
                "rootfs:base.tar",
                &format!("\"oci-layout:out/{name}:1\""),
                provisioners,
            ),
        );
        build(&s, &t)
    };
    // An exit code outside valid_exit_codes fails, with the code.
    let (code, summary, _) = run(
        "codes",
        "[[build.provisioner]]\ntype = \"shell\"\nvalid_exit_codes = [0, 3]\ninline = [\"exit 4\"]\n",
    );
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary.to_string().contains("exited with code 4"),
        "{summary}"
    );

    // The instance lies about a folder's content: its shell answers the
    // listing with a path outside the destination. Nothing is written
    // outside it.
    let liar = "#!/bin/busybox ash\nfor a; do f=$a; done\ncase \"$f\" in *-mindepth*) echo 'regular file|644|./../../escaped'; exit 0;; esac\nexec /bin/busybox ash \"$@\"\n";
    let write_liar = format!("printf '%s' '{}' > /bin/sh", liar.replace('\'', "'\\''"));
    let (code, summary, _) = run(
        "liar",
        &format!(
            "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"mkdir -p /srv/x\", \"echo x > /srv/x/x\", \"rm /bin/sh\", {}, \"chmod 755 /bin/sh\"]\n\n[[build.provisioner]]\ntype = \"file\"\ndirection = \"download\"\nsource = \"/srv/x\"\ndestination = \"deep/down/\"\n",
            toml_string(&write_liar)
        ),
    );
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary.to_string().contains("not a path kiln copies out"),
        "{summary}"
    );
    assert!(!s.path().join("escaped").exists());
    assert!(!s.path().join("deep/escaped").exists());

    // A link in a downloaded folder is refused, naming it.
    let (code, summary, _) = run(
        "link",
        "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"/bin/busybox --install -s /bin\", \"mkdir -p /srv/l\", \"ln -s /etc/passwd /srv/l/pw\"]\n\n[[build.provisioner]]\ntype = \"file\"\ndirection = \"download\"\nsource = \"/srv/l\"\ndestination = \"links/\"\n",
    );
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary
            .to_string()
            .contains("`/srv/l/pw` in the instance is a symbolic link"),
        "{summary}"
    );
    assert!(!s.path().join("links/l/pw").exists());

    // execute_command must run the script; one error, at its line.
    let t = s.write(
        "exec.toml",
        &template(
            "rootfs:base.tar",
            "\"oci-layout:out/e:1\"",
            "[[build.provisioner]]\ntype = \"shell\"\nexecute_command = \"sudo sh\"\ninline = [\"true\"]\n",
        ),
    );
    let o = s.kiln().arg("validate").arg(&t).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("write `{path}` where its path goes"), "{err}");
    assert!(err.contains("1 error found"), "{err}");
    assert!(
        err.contains("exec.toml:17:1"),
        "the error is at the key: {err}"
    );
    assert_nothing_left(&s);
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `ansible-local` with ansible-core from Debian inside the instance: a
/// playbook folder with a role, inventory groups, extra arguments and
/// extra variables, one of them a secret that never reaches the output,
/// a command line or the image; nothing of Ansible is left behind.
#[test]
fn ansible_local_runs_a_playbook_with_a_role_inside_a_debian_instance() {
    if !ready() || !crate::require("ansible-local", &["mmdebstrap"], true) {
        return;
    }
    let rootfs = ansible_rootfs();
    let s = Scratch::new();
    s.write(
        "site.yml",
        r#"- hosts: web
  gather_facts: false
  tasks:
    - name: greeting
      ansible.builtin.copy:
        content: "{{ greeting }}\n"
        dest: /etc/greeting
        mode: "0640"
    - name: the secret arrived
      ansible.builtin.assert:
        that: ["db_password | length == 20"]
      no_log: true
    - ansible.builtin.import_role:
        name: motd
"#,
    );
    s.write(
        "ansible/roles/motd/tasks/main.yml",
        "- name: motd\n  ansible.builtin.copy:\n    content: \"baked by kiln\\n\"\n    dest: /etc/motd-kiln\n",
    );
    let provisioners = r#"
[[build.provisioner]]
type = "ansible-local"
playbook_file = "site.yml"
playbook_dir = "ansible"
inventory_groups = ["web"]
extra_arguments = ["--diff"]
extra_vars = { greeting = "from-ansible", db_password = "${secret.token}" }

[secrets.token]
env = "KILN_OCI_TEST_TOKEN"
"#;
    let t = s.write(
        "a.toml",
        &template(
            &format!("rootfs:{rootfs}"),
            "\"oci-layout:out/a:1\"",
            provisioners,
        ),
    );
    let (code, summary, out) = build(&s, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(out.contains("TASK [motd : motd]"), "{out}");
    assert!(!out.contains(SECRET), "the secret is never shown");
    let root = unpack(&s.path().join("out/a"), "1", &s.path().join("bundle"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/greeting")).unwrap(),
        "from-ansible\n"
    );
    assert_eq!(mode(&root.join("etc/greeting")), 0o640);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd-kiln")).unwrap(),
        "baked by kiln\n"
    );
    let tmp: Vec<String> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !tmp.iter().any(|n| n.starts_with("kiln-ansible")),
        "staging left: {tmp:?}"
    );
    assert!(
        !root.join("root/.ansible").exists(),
        "Ansible's home is left"
    );
    // The secret is nowhere in the image's blobs.
    for blob in walk(&s.path().join("out/a")) {
        let bytes = std::fs::read(&blob).unwrap();
        let plain = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut v = vec![];
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut v)
                .unwrap();
            v
        } else {
            bytes
        };
        assert!(
            !plain.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is in {}",
            blob.display()
        );
    }
    assert_nothing_left(&s);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `ansible` on the host (ansible-core from PyPI) against an OCI build
/// container, through kiln's exec connection: the playbook changes the
/// image, gets a secret without showing it, and leaves nothing of Ansible
/// in the image or on the host's tmpfs. A source that offers no way in
/// (`null`) is refused before anything launches.
#[test]
fn ansible_on_the_host_reaches_an_oci_build_container() {
    if !ready() || !crate::require("ansible", &["mmdebstrap", "ansible-playbook"], true) {
        return;
    }
    let rootfs = ansible_rootfs();
    let s = Scratch::new();
    s.write(
        "site.yml",
        r#"- hosts: builders
  gather_facts: true
  tasks:
    - name: greeting
      ansible.builtin.copy:
        content: "{{ greeting }} on {{ ansible_facts['distribution'] }}\n"
        dest: /etc/greeting
        mode: "0644"
    - name: the secret arrived
      ansible.builtin.assert:
        that: ["db_password | length == 20"]
      no_log: true
    - name: a file comes back
      ansible.builtin.fetch:
        src: /etc/debian_version
        dest: fetched/
        flat: true
"#,
    );
    let provisioners = r#"
[[build.provisioner]]
type = "ansible"
playbook_file = "site.yml"
groups = ["builders"]
extra_vars = { greeting = "from-the-host", db_password = "${secret.token}" }
ansible_env_vars = ["ANSIBLE_FORKS=1"]

[secrets.token]
env = "KILN_OCI_TEST_TOKEN"
"#;
    let t = s.write(
        "h.toml",
        &template(
            &format!("rootfs:{rootfs}"),
            "\"oci-layout:out/h:1\"",
            provisioners,
        ),
    );
    let tmpfs_before = shm_entries();
    let (code, summary, out) = build(&s, &t);
    assert_eq!(code, 0, "{summary}\n{out}");
    assert!(out.contains("TASK [greeting]"), "{out}");
    assert!(!out.contains(SECRET), "the secret is never shown");
    let root = unpack(&s.path().join("out/h"), "1", &s.path().join("bundle"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/greeting")).unwrap(),
        "from-the-host on Debian\n"
    );
    assert!(s.path().join("fetched/debian_version").is_file());
    let tmp: Vec<String> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !tmp.iter().any(|n| n.starts_with("kiln-ansible")),
        "left in /tmp: {tmp:?}"
    );
    assert!(
        !root.join("root/.ansible").exists(),
        "Ansible's home is left"
    );
    assert_eq!(
        shm_entries(),
        tmpfs_before,
        "the private tmpfs folder is removed"
    );
    assert_nothing_left(&s);

    // The null source has no way in for a host tool.
    let t = s.write(
        "null.toml",
        "[image]\nname = \"n\"\nversion = \"1.0.0\"\n[source.null.n]\n[[build]]\nsources = [\"null.n\"]\n[[build.provisioner]]\ntype = \"ansible\"\nplaybook_file = \"site.yml\"\n",
    );
    let (code, summary, _) = build(&s, &t);
    assert_eq!(code, 1, "{summary}");
    assert!(
        summary.to_string().contains("use `ansible-local`"),
        "{summary}"
    );
}

/// The `kiln-ans-*` (ansible) and `kiln-ansible-*` folders on /dev/shm.
fn shm_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("kiln-ans"))
        .collect();
    v.sort();
    v
}

/// The cached Debian root file system with ansible-core and python3
/// (`scripts/hardening/debian-rootfs.sh ansible`).
fn ansible_rootfs() -> String {
    let o = Command::new(crate::repo().join("scripts/hardening/debian-rootfs.sh"))
        .arg("ansible")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "debian-rootfs.sh ansible: {}",
        text(&o).1
    );
    text(&o).0.trim().to_string()
}
