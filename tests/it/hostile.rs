//! Hostile inputs, as an attacker would hand them to kiln: base images
//! built by the test with device nodes, setuid files and decompression
//! bombs; secrets printed and stored in encodings; a catalog log cut at
//! its tail; control characters in templates. Each test would have passed
//! the attack through before kiln refused it.

#![cfg_attr(not(feature = "oci"), allow(dead_code, unused_imports))]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{assert_exit, text, Scratch};

/// A base entry beyond the busybox files.
pub enum Extra<'a> {
    File(&'a str, &'a [u8], u32),
    Block(&'a str, u32, u32),
    /// A file of this many zero bytes (streamed, never in memory).
    Zeros(&'a str, u64),
}

/// A busybox root filesystem (as `oci::busybox_rootfs`) with hostile extras,
/// written to `NAME` in the scratch dir.
pub fn hostile_base(s: &Scratch, name: &str, extras: &[Extra]) -> PathBuf {
    let busybox = std::fs::read("/usr/bin/busybox")
        .or_else(|_| std::fs::read("/bin/busybox"))
        .unwrap();
    let path = s.path().join(name);
    let f = std::fs::File::create(&path).unwrap();
    let out: Box<dyn std::io::Write> = if name.ends_with(".gz") {
        Box::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::default(),
        ))
    } else {
        Box::new(f)
    };
    let mut b = tar::Builder::new(out);
    let add = |b: &mut tar::Builder<Box<dyn std::io::Write>>,
               name: &str,
               data: &[u8],
               mode: u32,
               kind: tar::EntryType,
               link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    for d in ["bin", "etc", "tmp", "root"] {
        add(&mut b, d, b"", 0o755, tar::EntryType::Directory, None);
    }
    add(
        &mut b,
        "bin/busybox",
        &busybox,
        0o755,
        tar::EntryType::Regular,
        None,
    );
    for applet in [
        "sh", "cat", "echo", "rm", "mkdir", "chmod", "sleep", "ls", "id",
    ] {
        add(
            &mut b,
            &format!("bin/{applet}"),
            b"",
            0o777,
            tar::EntryType::Symlink,
            Some("busybox"),
        );
    }
    add(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
        tar::EntryType::Regular,
        None,
    );
    for e in extras {
        match e {
            Extra::File(name, data, mode) => {
                add(&mut b, name, data, *mode, tar::EntryType::Regular, None)
            }
            Extra::Block(name, major, minor) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Block);
                h.set_mode(0o644);
                h.set_size(0);
                h.set_device_major(*major).unwrap();
                h.set_device_minor(*minor).unwrap();
                b.append_data(&mut h, name, std::io::empty()).unwrap();
            }
            Extra::Zeros(name, size) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(*size);
                b.append_data(&mut h, name, std::io::Read::take(std::io::repeat(0), *size))
                    .unwrap();
            }
        }
    }
    // Dropping the gzip encoder writes its trailer.
    b.into_inner().unwrap().flush().unwrap();
    path
}

fn template(from: &str, provisioners: &str) -> String {
    format!(
        "[image]\nname = \"web\"\nversion = \"1.2.3\"\n\n[source.oci.img]\nfrom = \"{from}\"\nto = [\"oci-layout:out/img:1\"]\n\n[[build]]\nname = \"b\"\nsources = [\"oci.img\"]\n{provisioners}\n"
    )
}

/// `kiln build --json` → (exit code, the job's error or "").
fn build_err(s: &Scratch, t: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = s.kiln();
    c.args(["build", "--json"]).arg(t);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let summary = crate::json_summary(&o);
    let err = summary["jobs"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (out, errs) = text(&o);
    (o.status.code().unwrap_or(-1), err, format!("{out}\n{errs}"))
}

fn oci_ready() -> bool {
    crate::require("hostile base image", &["runc", "busybox"], true)
}

/// Detaches the loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[cfg(feature = "oci")]
#[test]
fn an_upload_onto_a_device_node_of_the_base_is_refused_and_the_device_untouched() {
    if !oci_ready() || !crate::require("loop devices", &["losetup"], true) {
        return;
    }
    let s = Scratch::new();
    let backing = s.path().join("disk.img");
    std::fs::write(&backing, vec![0u8; 1 << 20]).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !o.status.success() {
        let msg = format!(
            "losetup cannot attach a loop device here: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!std::env::var("CI").is_ok_and(|v| v == "true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    let dev = Loop(String::from_utf8_lossy(&o.stdout).trim().to_string());
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(&dev.0).unwrap().rdev();
    let (major, minor) = (
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    );
    hostile_base(
        &s,
        "base.tar",
        &[Extra::Block("etc/app.conf", major, minor)],
    );
    s.write("files/app.conf", &"PWNED ".repeat(100));
    let t = s.write(
        "t.toml",
        &template(
            "rootfs:base.tar",
            "[[build.provisioner]]\ntype = \"file\"\nsource = \"files/app.conf\"\ndestination = \"/etc/app.conf\"\n",
        ),
    );
    for overlay in ["0", "1"] {
        let (code, err, all) = build_err(&s, &t, &[("KILN_OCI_NO_OVERLAY", overlay)]);
        assert_eq!(code, 1, "{all}");
        assert!(
            err.contains("`/etc/app.conf`") && err.contains("block device"),
            "the error names the path and its type: {err}"
        );
        let _ = Command::new("blockdev")
            .args(["--flushbufs", &dev.0])
            .status();
        let data = std::fs::read(&backing).unwrap();
        assert!(
            data.iter().all(|b| *b == 0),
            "the host's device was written through the image's node (no-overlay={overlay})"
        );
    }
}

#[cfg(feature = "oci")]
#[test]
fn the_base_cache_is_root_only_reported_and_removable() {
    if !oci_ready() || !crate::require("another user", &["su"], true) {
        return;
    }
    let s = Scratch::new();
    use std::os::unix::fs::PermissionsExt;
    // A folder others may enter, and a state folder made before kiln ran.
    std::fs::set_permissions(s.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(s.state()).unwrap();
    std::fs::set_permissions(s.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bash = std::fs::read("/bin/bash").unwrap();
    hostile_base(
        &s,
        "base.tar",
        &[Extra::File("bin/suid-bash", &bash, 0o4755)],
    );
    let t = s.write("t.toml", &template("rootfs:base.tar", ""));
    let (code, err, all) = build_err(&s, &t, &[]);
    assert_eq!(code, 0, "{err}\n{all}");
    assert!(all.contains("tightened to 0700"), "said so: {all}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.state()), 0o700);
    let rootfs = s.state().join("oci/rootfs");
    let cached: Vec<PathBuf> = std::fs::read_dir(&rootfs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    // Another local user cannot reach the image's setuid-root shell.
    let cmd = format!(
        "{} -p -c 'id -u'",
        cached[0].join("bin/suid-bash").display()
    );
    let o = Command::new("su")
        .args(["-s", "/bin/sh", "nobody", "-c", &cmd])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && !String::from_utf8_lossy(&o.stdout).contains('0'),
        "nobody ran the image's setuid shell: {:?}",
        text(&o)
    );
    // Said once.
    let o = s.kiln().arg("cleanup").output().unwrap();
    assert_exit(&o, 0);
    let (out, err) = text(&o);
    assert!(!err.contains("tightened"), "{err}");
    assert!(
        out.contains("1 unpacked base images") && out.contains("kiln cleanup --caches"),
        "a size report: {out}"
    );
    let o = s
        .kiln()
        .args(["cleanup", "--caches", "--json"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["caches_removed"][0]["entries"], 1, "{v}");
    assert!(v["caches_removed"][0]["bytes"].as_u64().unwrap() > bash.len() as u64);
    assert_eq!(v["caches"][0]["entries"], 0, "{v}");
    assert_eq!(v["caches"][1]["entries"], 0, "{v}");
    assert!(std::fs::read_dir(&rootfs).unwrap().next().is_none());
}

#[cfg(feature = "oci")]
#[test]
fn decompression_bombs_and_oversized_files_stop_at_limits_and_leave_nothing() {
    if !oci_ready() {
        return;
    }
    // 256 MiB of zeros in a gzip layer of about 256 KiB.
    let s = Scratch::new();
    hostile_base(&s, "bomb.tar.gz", &[Extra::Zeros("opt/zeros", 256 << 20)]);
    let small = std::fs::metadata(s.path().join("bomb.tar.gz"))
        .unwrap()
        .len();
    assert!(small < 2 << 20, "{small}");
    let t = s.write("t.toml", &template("rootfs:bomb.tar.gz", ""));
    let (code, err, all) = build_err(&s, &t, &[]);
    assert_eq!(code, 1, "{all}");
    assert!(
        err.contains("expands more than 200 times") && err.contains("KILN_OCI_MAX_RATIO"),
        "names the limit and how to raise it: {err}"
    );
    let digest = err
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("names the layer digest")
        .to_string();
    let hex = digest.trim_start_matches("sha256:");
    assert!(
        !s.state().join("oci/blobs/sha256").join(hex).exists(),
        "the bomb's blob is not kept"
    );
    let rootfs = s.state().join("oci/rootfs");
    assert!(
        !rootfs.exists() || std::fs::read_dir(&rootfs).unwrap().next().is_none(),
        "nothing unpacked stays cached"
    );

    // One file past the per-file limit (environment), and an image past
    // the template's limit.
    let s = Scratch::new();
    let noise: Vec<u8> = (0u32..(6 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    hostile_base(&s, "base.tar", &[Extra::File("opt/big", &noise, 0o644)]);
    let t = s.write("t.toml", &template("rootfs:base.tar", ""));
    let (code, err, all) = build_err(&s, &t, &[("KILN_OCI_MAX_FILE", "4MiB")]);
    assert_eq!(code, 1, "{all}");
    assert!(
        err.contains("`/opt/big`") && err.contains("4.0 MiB") && err.contains("KILN_OCI_MAX_FILE"),
        "{err}"
    );
    let t = s.write(
        "t.toml",
        &template("rootfs:base.tar", "").replace(
            "[[build]]",
            "[source.oci.img.limits]\nunpacked = \"1MiB\"\n\n[[build]]",
        ),
    );
    let (code, err, all) = build_err(&s, &t, &[]);
    assert_eq!(code, 1, "{all}");
    assert!(err.contains("limits.unpacked"), "{err}");
    assert!(std::fs::read_dir(s.state().join("oci/rootfs"))
        .unwrap()
        .next()
        .is_none());
}

/// A secret printed by a provisioner as `xxd`, `od`, Python's `quote` and
/// `json.dumps` would: masked in human output, `--json` and the log file.
#[test]
fn secrets_printed_in_hex_percent_and_unicode_escapes_are_redacted_in_every_sink() {
    if !crate::require("redaction", &["xxd", "od", "python3"], false) {
        return;
    }
    // 24 bytes: an `od` dump wraps it after 16.
    let secret = "Zürich s3cret/pw&<x>!!!";
    assert_eq!(secret.len(), 24);
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        r#"[image]
name = "s"
version = "1.0.0"
[secrets.pw]
env = "KILN_TEST_PW"
[source.null.a]
[[build]]
sources = ["null.a"]
[[build.provisioner]]
type = "shell"
env = { PW = "${secret.pw}" }
inline = [
  "printf %s \"$PW\" | xxd -p",
  "printf %s \"$PW\" | xxd -p -u",
  "printf %s \"$PW\" | od -An -tx1",
  "printf %s \"$PW\" | od -An -tx1 | tr a-f A-F",
  "python3 -c 'import os,urllib.parse as u; print(u.quote(os.environ[\"PW\"]))'",
  "python3 -c 'import os,urllib.parse as u; print(u.quote(os.environ[\"PW\"], safe=\"~()*!.\\x27\"))'",
  "python3 -c 'import os,json; print(json.dumps(os.environ[\"PW\"]))'",
  "python3 -c 'import os,json; print(json.dumps({\"pw\": os.environ[\"PW\"]}).replace(\"<\", \"\\\\u003c\").replace(\">\", \"\\\\u003e\").replace(\"&\", \"\\\\u0026\"))'",
  "echo done",
]
"#,
    );
    let hex = hex::encode(secret);
    let spaced: Vec<String> = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let mut leaks = vec![
        hex.clone(),
        hex.to_uppercase(),
        spaced[..8].join(" "),
        spaced[16..].join(" "),
        spaced[..8].join(" ").to_uppercase(),
        spaced[16..].join(" ").to_uppercase(),
        "s3cret".to_string(),
        "Z%C3%BCrich".to_string(),
        "Z\\u00fcrich".to_string(),
    ];
    leaks.push(hex[..16].to_string());
    let log = s.path().join("build.log");
    let json = s
        .kiln()
        .args(["build", "--json", "--log-file"])
        .arg(&log)
        .arg(&t)
        .env("KILN_TEST_PW", secret)
        .output()
        .unwrap();
    assert_exit(&json, 0);
    let human = s
        .kiln()
        .arg("build")
        .arg(&t)
        .env("KILN_TEST_PW", secret)
        .output()
        .unwrap();
    assert_exit(&human, 0);
    let log = std::fs::read_to_string(&log).unwrap();
    for (sink, out) in [
        ("--json", text(&json).0),
        ("human", text(&human).1),
        ("log file", log),
    ] {
        assert!(out.contains("done"), "{sink}: the provisioner ran: {out}");
        assert!(
            out.matches("<redacted>").count() >= 8,
            "{sink}: every line masked: {out}"
        );
        for l in &leaks {
            assert!(!out.contains(l.as_str()), "{sink} leaked `{l}`:\n{out}");
        }
    }
}

/// Zip archive bytes with one deflated member (written by hand: the test
/// does not trust kiln's reader to check kiln's reader).
fn zip_with(name: &str, body: &[u8]) -> Vec<u8> {
    let mut deflated =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflated.write_all(body).unwrap();
    let data = deflated.finish().unwrap();
    let crc = {
        let mut c = flate2::Crc::new();
        c.update(body);
        c.sum()
    };
    let mut z = vec![];
    let le16 = |v: &mut Vec<u8>, x: u16| v.extend_from_slice(&x.to_le_bytes());
    let le32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_le_bytes());
    z.extend_from_slice(b"PK\x03\x04");
    le16(&mut z, 20);
    le16(&mut z, 0);
    le16(&mut z, 8);
    le32(&mut z, 0);
    le32(&mut z, crc);
    le32(&mut z, data.len() as u32);
    le32(&mut z, body.len() as u32);
    le16(&mut z, name.len() as u16);
    le16(&mut z, 0);
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(&data);
    let cd = z.len();
    z.extend_from_slice(b"PK\x01\x02");
    le16(&mut z, 20);
    le16(&mut z, 20);
    le16(&mut z, 0);
    le16(&mut z, 8);
    le32(&mut z, 0);
    le32(&mut z, crc);
    le32(&mut z, data.len() as u32);
    le32(&mut z, body.len() as u32);
    le16(&mut z, name.len() as u16);
    le16(&mut z, 0);
    le16(&mut z, 0);
    le16(&mut z, 0);
    le16(&mut z, 0);
    le32(&mut z, 0);
    le32(&mut z, 0);
    z.extend_from_slice(name.as_bytes());
    let cd_len = z.len() - cd;
    z.extend_from_slice(b"PK\x05\x06");
    le16(&mut z, 0);
    le16(&mut z, 0);
    le16(&mut z, 1);
    le16(&mut z, 1);
    le32(&mut z, cd_len as u32);
    le32(&mut z, cd as u32);
    le16(&mut z, 0);
    z
}

#[cfg(feature = "oci")]
#[test]
fn the_leak_scan_finds_secrets_at_offsets_in_hex_dumps_archives_and_split_lines() {
    if !oci_ready() {
        return;
    }
    let secret = "hostile-leak-secret-4711";
    let s = Scratch::new();
    hostile_base(&s, "base.tar", &[]);
    std::fs::write(
        s.path().join("bundle.zip"),
        zip_with("conf/app.ini", format!("password = {secret}\n").as_bytes()),
    )
    .unwrap();
    // `unzip -p` (Info-ZIP) reads the hand-made archive back: it is a real zip.
    if crate::require("zip reader", &["unzip"], false) {
        let o = Command::new("unzip")
            .args(["-p"])
            .arg(s.path().join("bundle.zip"))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("password = {secret}\n")
        );
    }
    let provisioners = r#"
[[build.provisioner]]
type = "shell"
env = { TOKEN = "${secret.token}" }
inline = [
  "printf 'user:%s' \"$TOKEN\" | /bin/busybox base64 > /root/auth.b64",
  "printf %s \"$TOKEN\" | /bin/busybox od -An -tx1 > /root/dump.txt",
  "printf 'token=%s\\n' \"$TOKEN\" | /bin/busybox gzip > /root/token.gz",
  "/bin/busybox mkdir -p /tmp/x/etc && printf %s \"$TOKEN\" > /tmp/x/etc/token && /bin/busybox tar -cf - -C /tmp/x etc | /bin/busybox gzip > /root/bundle.tgz",
  "/bin/busybox rm -r /tmp/x",
  "printf %s \"$TOKEN\" | /bin/busybox fold -w 10 > /root/split.txt",
]

[[build.provisioner]]
type = "file"
source = "bundle.zip"
destination = "/root/bundle.zip"

[secrets.token]
env = "KILN_HOSTILE_TOKEN"
"#;
    let t = s.write("t.toml", &template("rootfs:base.tar", provisioners));
    let (code, err, all) = build_err(&s, &t, &[("KILN_HOSTILE_TOKEN", secret)]);
    assert_eq!(code, 1, "{all}");
    assert!(err.contains("leak scan"), "{err}");
    for want in [
        "/root/auth.b64: secret `token` (base64)",
        "/root/dump.txt: secret `token` (hex)",
        "/root/token.gz: secret `token` (value)",
        "/root/bundle.tgz!/etc/token: secret `token` (value)",
        "/root/split.txt: secret `token` (value)",
        "/root/bundle.zip!/conf/app.ini: secret `token` (value)",
    ] {
        assert!(err.contains(want), "{want} missing from: {err}");
    }
    assert!(!all.contains(secret), "findings never show the value");
}

/// Cutting the catalog log's tail (removing a `revoke`) leaves an intact
/// chain; a head pinned from an earlier `verify` refuses it.
#[cfg(feature = "oci")]
#[test]
fn a_revoke_cut_from_the_catalog_log_is_refused_by_a_pinned_head() {
    if !oci_ready() {
        return;
    }
    let s = Scratch::new();
    hostile_base(&s, "base.tar", &[]);
    s.keygen("cosign", "pw");
    let t = s.write(
        "t.toml",
        &template("rootfs:base.tar", "[build.sign]\nkey = \"cosign.key\"\n"),
    );
    let o = s
        .kiln()
        .args(["build", "--json"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let summary = crate::json_summary(&o);
    let manifest = summary["jobs"][0]["artifacts"][0]["manifest"]
        .as_str()
        .unwrap()
        .to_string();
    let verify = |extra: &[&str]| {
        s.kiln()
            .args(["verify", "--json", "--key", "cosign.pub"])
            .args(extra)
            .arg(&manifest)
            .output()
            .unwrap()
    };
    let o = verify(&[]);
    assert_exit(&o, 0);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let first = v["head"].as_str().expect("the head is printed").to_string();
    assert!(first.starts_with("1:"), "{first}");
    let o = s
        .kiln()
        .args([
            "images",
            "revoke",
            "web",
            "1.2.3+1",
            "--reason",
            "CVE-2026-1",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let o = verify(&[]);
    assert_exit(&o, 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let pinned = v["head"].as_str().unwrap().to_string();
    assert!(pinned.starts_with("2:"), "{v}");
    // Human output prints it too.
    let o = s
        .kiln()
        .args(["verify", "--key", "cosign.pub"])
        .arg(&manifest)
        .output()
        .unwrap();
    assert!(
        text(&o).0.contains(&format!("catalog head: {pinned}")),
        "{:?}",
        text(&o)
    );

    // The attack: the newest entry (the revoke) is removed.
    let log = s.state().join("catalog/log");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    std::fs::remove_file(entries.last().unwrap()).unwrap();
    assert_exit(&verify(&[]), 0); // the chain alone cannot tell
    let o = verify(&["--expect-head", &pinned]);
    assert_exit(&o, 1);
    assert!(
        text(&o).0.contains("removed from its end"),
        "{:?}",
        text(&o)
    );
    let o = s
        .kiln()
        .args(["audit", "--expect-head", &pinned])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    // A head that still holds passes.
    assert_exit(&verify(&["--expect-head", &first]), 0);
}

/// The same attack on an image in a registry, with nothing pinned by the
/// verifier: the revoke published the catalog head beside the image (tag
/// `kiln-catalog-head`, signed), where writing the catalog folder does not
/// reach, and `verify` holds the log to it.
#[cfg(feature = "oci")]
#[test]
fn a_revoke_cut_from_the_catalog_log_is_refused_by_the_head_published_in_the_registry() {
    if !oci_ready() || !crate::require("published head", &["docker-registry", "skopeo"], true) {
        return;
    }
    let reg = crate::oci::Registry::start();
    let s = Scratch::new();
    hostile_base(&s, "base.tar", &[]);
    s.keygen("cosign", "pw");
    let t = s.write(
        "t.toml",
        &format!(
            "[image]\nname = \"web\"\nversion = \"1.2.3\"\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{}/web:1\"]\n[[build]]\nsources = [\"oci.img\"]\n[build.sign]\nkey = \"cosign.key\"\n[build.register]\nchannels = [\"dev\"]\n",
            reg.addr
        ),
    );
    let o = s
        .kiln()
        .args(["build"])
        .arg(&t)
        .env("KILN_PASSWORD", "pw")
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let all = format!("{}{}", text(&o).0, text(&o).1);
    assert!(
        all.contains("catalog head 2:") && all.contains("web:kiln-catalog-head"),
        "the promotion publishes the head: {all}"
    );
    let image = format!("registry:{}/web:1", reg.addr);
    let verify = || {
        s.kiln()
            .args(["verify", "--key", "cosign.pub"])
            .arg(&image)
            .output()
            .unwrap()
    };
    let o = verify();
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("web:kiln-catalog-head` held"),
        "{}",
        text(&o).0
    );

    // Revoked with the operator's own key (not the build's): the head is
    // published again and signed by a signer of the log.
    let o = s
        .kiln()
        .args([
            "images",
            "revoke",
            "web",
            "1.2.3+1",
            "--reason",
            "CVE-2026-2",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("catalog head 3:"), "{}", text(&o).0);
    assert_exit(&verify(), 1);

    // The attack: the newest entry (the revoke) is removed from the folder.
    let log = s.state().join("catalog/log");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&log)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    entries.sort();
    assert_eq!(entries.len(), 3);
    std::fs::remove_file(entries.last().unwrap()).unwrap();
    // The chain still holds: audit alone (nothing pinned) cannot tell ...
    assert_exit(&s.kiln().arg("audit").output().unwrap(), 0);
    // ... but verify reads the head published in the registry.
    let o = verify();
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains("does not hold the head published at") && err.contains("removed from its end"),
        "{err}"
    );
    // Skopeo sees the head as an ordinary tag beside the image.
    let o = Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{}/web:kiln-catalog-head", reg.addr))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains("application/vnd.dsse.envelope.v1+json"));
}

/// A template carrying a right-to-left override and a terminal escape:
/// the error shows them escaped.
#[test]
fn control_and_bidi_characters_in_a_template_are_escaped_in_errors() {
    let s = Scratch::new();
    let t = s.write(
        "t.toml",
        "[image]\nname = \"web\"\nversion = \"1.0.0\"\n\"fr\u{202e}om\" = 1\n[source.null.a]\n\"x\\u001b[2Jy\" = 1\n[[build]]\nsources = [\"null.a\"]\n",
    );
    for json in [false, true] {
        let mut c = s.kiln();
        c.arg("validate");
        if json {
            c.arg("--json");
        }
        let o = c.arg(&t).output().unwrap();
        assert_exit(&o, 2);
        let (out, err) = text(&o);
        let all = format!("{out}{err}");
        assert!(
            !all.contains('\u{202e}') && !all.contains('\u{1b}'),
            "raw control characters in: {all:?}"
        );
        if !json {
            assert!(
                all.contains("fr\\u{202e}om") && all.contains("x\\u{1b}[2Jy"),
                "escaped, still readable: {all}"
            );
        }
    }
}
