//! The image catalog on both backends: the on-disk default and a real
//! PostgreSQL server (Debian's `postgresql`, started on a free loopback
//! port by [`Postgres::start`]). Register → promote → rollback → revoke,
//! concurrent writers, and tampering found by `kiln audit`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{assert_exit, text, Scratch};

/// A PostgreSQL server in a temp folder on a free loopback port, stopped
/// (and its folder removed) on drop. Runs as the `postgres` user, since
/// the server refuses root.
pub struct Postgres {
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Child>,
}

fn pg_bin() -> Option<PathBuf> {
    let mut bins: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("postgres").is_file() && b.join("initdb").is_file())
        .collect();
    bins.sort();
    bins.pop()
}

/// True when a PostgreSQL server can be started here.
pub fn pg_ready() -> bool {
    let have = pg_bin().is_some()
        && nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .is_some();
    if !have {
        let msg = "catalog tests need PostgreSQL (Debian `postgresql`, installed by .ci/run)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return false;
    }
    crate::require("catalog", &["runuser", "psql"], true)
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = pg_bin().expect("checked by pg_ready");
        let dir = tempfile::Builder::new()
            .prefix("kiln-pg-")
            .tempdir_in("/tmp")
            .unwrap();
        let pg = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid)).unwrap();
        let data = dir.path().join("data");
        let as_pg = |program: &Path| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        };
        let o = as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(o.status.success(), "initdb: {}", text(&o).1);
        let addr = crate::free_addr();
        let port = addr.rsplit(':').next().unwrap().to_string();
        let child = as_pg(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port, "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=off", "-c", "max_connections=100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        crate::wait_listening(&addr, "postgres");
        let url = format!("postgres://postgres@{addr}/postgres");
        // Listening is not accepting queries yet: wait for a real answer.
        let start = std::time::Instant::now();
        while !Command::new("psql")
            .args([url.as_str(), "-qAtc", "SELECT 1"])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(start.elapsed().as_secs() < 30, "postgres did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Postgres {
            url,
            bin,
            data,
            _dir: dir,
            child: Some(child),
        }
    }

    /// Runs SQL as the superuser; returns stdout, asserting success.
    pub fn sql(&self, sql: &str) -> String {
        let o = Command::new("psql")
            .args([
                self.url.as_str(),
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{sql}: {}", text(&o).1);
        text(&o).0
    }

    /// Like `sql`, for statements that must fail; returns stderr.
    pub fn sql_err(&self, sql: &str) -> String {
        let o = Command::new("psql")
            .args([
                self.url.as_str(),
                "-qAt",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{sql} should fail");
        text(&o).1
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A build manifest as `kiln build` writes it, for `kiln images register`.
fn manifest(s: &Scratch, name: &str, digest_byte: char) -> PathBuf {
    let digest = format!("sha256:{}", digest_byte.to_string().repeat(64));
    s.write(
        name,
        &serde_json::json!({
            "kiln_version": "0.1.0",
            "build_id": format!("build-{name}"),
            "job": "web.oci.app",
            "image": { "name": "web", "version": "1.0.0" },
            "template": { "path": "web.toml", "digest": "sha256:feed" },
            "fingerprint": format!("sha256:fp-{digest_byte}"),
            "base": "registry:example/base@sha256:beef",
            "artifact": { "kind": "oci", "id": "oci-layout:/images/web", "digest": digest },
            "signatures": [],
        })
        .to_string(),
    )
}

fn kiln_on(s: &Scratch, catalog: &str, args: &[&str]) -> std::process::Output {
    s.kiln()
        .arg("--catalog")
        .arg(catalog)
        .args(args)
        .env("KILN_ACTOR", "tester")
        .output()
        .unwrap()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(text(o).0.trim()).unwrap_or_else(|e| panic!("{e}: {}", text(o).0))
}

/// Register → promote → rollback → revoke, and what `show`, `history`,
/// `list` and `audit` say about it.
fn lifecycle(catalog: &str) {
    let s = Scratch::new();
    let m1 = manifest(&s, "m1.json", 'a');
    let m2 = manifest(&s, "m2.json", 'b');
    let k = |args: &[&str]| kiln_on(&s, catalog, args);

    let o = k(&["images", "register", m1.to_str().unwrap()]);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("registered web 1.0.0+1"),
        "{}",
        text(&o).0
    );
    let o = k(&[
        "images",
        "register",
        m2.to_str().unwrap(),
        "--channel",
        "dev",
    ]);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("registered web 1.0.0+2"),
        "{}",
        text(&o).0
    );
    // An OCI layout has no tag to move: said, not skipped silently.
    assert!(text(&o).0.contains("not supported yet"), "{}", text(&o).0);

    assert_exit(&k(&["images", "promote", "web", "1.0.0+1", "prod"]), 0);
    assert_exit(&k(&["images", "promote", "web", "1.0.0+2", "prod"]), 0);
    let o = k(&["images", "show", "web", "prod", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["version"], "1.0.0+2");
    assert_eq!(
        json(&o)["artifacts"][0]["digest"],
        format!("sha256:{}", "b".repeat(64))
    );

    let o = k(&["images", "rollback", "web", "prod"]);
    assert_exit(&o, 0);
    assert!(
        text(&o).0.contains("from 1.0.0+2 to 1.0.0+1"),
        "{}",
        text(&o).0
    );
    assert_eq!(
        json(&k(&["images", "show", "web", "prod", "--json"]))["version"],
        "1.0.0+1"
    );

    let o = k(&[
        "images",
        "revoke",
        "web",
        "1.0.0+1",
        "--reason",
        "CVE-2026-0001",
    ]);
    assert_exit(&o, 0);
    let o = k(&["images", "show", "web", "1.0.0+1", "--json"]);
    assert_eq!(json(&o)["status"]["status"], "revoked");
    assert_eq!(json(&o)["status"]["reason"], "CVE-2026-0001");
    assert_eq!(json(&o)["status"]["by"], "tester");
    // A revoked version cannot be promoted; unknown versions are named.
    let o = k(&["images", "promote", "web", "1.0.0+1", "dev"]);
    assert_exit(&o, 1);
    assert!(text(&o).1.contains("revoked"), "{}", text(&o).1);
    let o = k(&["images", "promote", "web", "9.9.9+9", "dev"]);
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("no version `9.9.9+9`"),
        "{}",
        text(&o).1
    );
    // Rolling back again skips the revoked target.
    let o = k(&["images", "rollback", "web", "prod"]);
    assert_exit(&o, 0);
    assert!(text(&o).0.contains("to 1.0.0+2"), "{}", text(&o).0);

    let o = k(&["images", "history", "web", "--channel", "prod", "--json"]);
    assert_exit(&o, 0);
    let moves: Vec<String> = json(&o)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["how"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        moves,
        [
            "promote 1.0.0+1",
            "promote 1.0.0+2",
            "rollback 1.0.0+1",
            "rollback 1.0.0+2"
        ]
    );
    let o = k(&["images", "list", "--json"]);
    let statuses: Vec<String> = json(&o)["web"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["status"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(statuses, ["revoked", "active"]);

    let o = k(&["audit"]);
    assert_exit(&o, 0);
    let (out, _) = text(&o);
    assert!(out.contains("8 entries"), "{out}");
    assert!(
        out.contains("revoke web 1.0.0+1: CVE-2026-0001  by tester"),
        "{out}"
    );
    assert!(out.contains("chain of 8 entries is intact"), "{out}");
    // Only entries signed by a trusted key pass `--key`.
    let other = s.write("other.pub", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n");
    let o = k(&["audit", "--key", other.to_str().unwrap()]);
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("entry 1 is signed by key sha256:")
            && text(&o).1.contains("which is not trusted")
            && !text(&o).1.contains("broken"),
        "{}",
        text(&o).1
    );
}

#[test]
fn lifecycle_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    lifecycle(dir.path().join("catalog").to_str().unwrap());
}

#[test]
fn lifecycle_on_postgres() {
    if !pg_ready() {
        return;
    }
    let pg = Postgres::start();
    lifecycle(&pg.url);
    // The table refuses changes in place.
    let err = pg.sql_err("UPDATE kiln_catalog_log SET actor = 'x'");
    assert!(
        err.contains("column \"actor\"") || err.contains("append-only"),
        "{err}"
    );
    let err = pg.sql_err("DELETE FROM kiln_catalog_log WHERE seq = 1");
    assert!(err.contains("append-only"), "{err}");
}

/// 8 processes register 50 versions each at once: nothing lost, every
/// build number once, and a chain that verifies.
fn concurrent(catalog: &str) {
    let s = Scratch::new();
    let m = manifest(&s, "m.json", 'c');
    let script = format!(
        "for i in $(seq 50); do {} --catalog '{catalog}' images register {} >/dev/null || exit 1; done",
        env!("CARGO_BIN_EXE_kiln"),
        m.display()
    );
    let children: Vec<Child> = (0..8)
        .map(|i| {
            s.kiln_shell(&script)
                .env("KILN_ACTOR", format!("runner-{i}"))
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "a writer failed: {}", text(&o).1);
    }
    let o = kiln_on(&s, catalog, &["images", "list", "web", "--json"]);
    assert_exit(&o, 0);
    let mut builds: Vec<u64> = json(&o)["web"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["build"].as_u64().unwrap())
        .collect();
    assert_eq!(builds.len(), 400, "every registration kept");
    builds.sort();
    builds.dedup();
    assert_eq!(
        builds,
        (1..=400).collect::<Vec<u64>>(),
        "unique build numbers"
    );
    let o = kiln_on(&s, catalog, &["audit", "--json"]);
    assert_exit(&o, 0);
    assert_eq!(json(&o)["entries"], 400);
    assert_eq!(json(&o)["verified"], true);
}

#[test]
fn concurrent_writers_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    concurrent(dir.path().join("catalog").to_str().unwrap());
}

#[test]
fn concurrent_writers_on_postgres() {
    if !pg_ready() {
        return;
    }
    let pg = Postgres::start();
    concurrent(&pg.url);
}

/// A catalog with `n` registered versions.
fn filled(s: &Scratch, catalog: &str, n: usize) {
    let m = manifest(s, "m.json", 'd');
    for _ in 0..n {
        assert_exit(
            &kiln_on(s, catalog, &["images", "register", m.to_str().unwrap()]),
            0,
        );
    }
}

fn audit_breaks_at(s: &Scratch, catalog: &str, position: usize) {
    let o = kiln_on(s, catalog, &["audit"]);
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains(&format!("broken at entry {position}:")),
        "expected entry {position}: {err}"
    );
    let o = kiln_on(s, catalog, &["audit", "--json"]);
    assert_exit(&o, 1);
    assert_eq!(json(&o)["broken"]["position"], position);
}

#[test]
fn audit_finds_edited_removed_and_reordered_entries_on_disk() {
    let s = Scratch::new();
    let fresh = |name: &str| {
        let dir = s.path().join(name);
        filled(&s, dir.to_str().unwrap(), 6);
        assert_exit(&kiln_on(&s, dir.to_str().unwrap(), &["audit"]), 0);
        dir
    };
    let entry = |dir: &Path, n: usize| dir.join("log").join(format!("{n:012}.json"));

    let edited = fresh("edited");
    let e = std::fs::read_to_string(entry(&edited, 4)).unwrap();
    std::fs::write(entry(&edited, 4), e.replace("1.0.0+4", "1.0.0+7")).unwrap();
    audit_breaks_at(&s, edited.to_str().unwrap(), 4);

    let removed = fresh("removed");
    std::fs::remove_file(entry(&removed, 3)).unwrap();
    audit_breaks_at(&s, removed.to_str().unwrap(), 3);

    // Entries cut from the end leave a chain that holds: only a pinned
    // head (printed by an earlier audit) finds them missing.
    let truncated = fresh("truncated");
    let o = kiln_on(&s, truncated.to_str().unwrap(), &["audit", "--json"]);
    let head = json(&o)["head"].as_str().unwrap().to_string();
    assert!(head.starts_with("6:sha256:"), "{head}");
    assert!(text(&o).1.contains("no `--key` given"), "{}", text(&o).1);
    std::fs::remove_file(entry(&truncated, 6)).unwrap();
    assert_exit(&kiln_on(&s, truncated.to_str().unwrap(), &["audit"]), 0);
    let o = kiln_on(
        &s,
        truncated.to_str().unwrap(),
        &["audit", "--expect-head", &head],
    );
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("broken at entry 6: missing"),
        "{}",
        text(&o).1
    );

    let reordered = fresh("reordered");
    let (a, b) = (entry(&reordered, 2), entry(&reordered, 5));
    let (ta, tb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    std::fs::write(&a, tb).unwrap();
    std::fs::write(&b, ta).unwrap();
    audit_breaks_at(&s, reordered.to_str().unwrap(), 2);
}

#[test]
fn audit_finds_tampering_on_postgres() {
    if !pg_ready() {
        return;
    }
    let pg = Postgres::start();
    let s = Scratch::new();
    filled(&s, &pg.url, 5);
    assert_exit(&kiln_on(&s, &pg.url, &["audit"]), 0);
    // Someone with the database's superuser bypasses the trigger.
    pg.sql("ALTER TABLE kiln_catalog_log DISABLE TRIGGER USER");
    pg.sql(
        "UPDATE kiln_catalog_log SET entry = replace(entry, '1.0.0+3', '1.0.0+9') WHERE seq = 3",
    );
    audit_breaks_at(&s, &pg.url, 3);
    pg.sql(
        "UPDATE kiln_catalog_log SET entry = replace(entry, '1.0.0+9', '1.0.0+3') WHERE seq = 3",
    );
    assert_exit(&kiln_on(&s, &pg.url, &["audit"]), 0);
    pg.sql("DELETE FROM kiln_catalog_log WHERE seq = 2");
    audit_breaks_at(&s, &pg.url, 2);
}

/// Real OCI builds through the catalog: registered and promoted by the
/// build (the `:dev` tag follows), `--skip-unchanged` skipping and
/// rebuilding on each kind of change, and `verify` refusing a revoked
/// version.
#[cfg(feature = "oci")]
mod oci_builds {
    use super::*;
    use crate::oci::{busybox_rootfs, Registry};

    fn ready() -> bool {
        crate::require(
            "catalog OCI",
            &["runc", "docker-registry", "skopeo", "busybox", "openssl"],
            true,
        )
    }

    fn skopeo_digest(reference: &str) -> String {
        let o = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{reference}"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo inspect {reference}: {}",
            text(&o).1
        );
        text(&o).0.trim().to_string()
    }

    /// The last line of `--json` output: the summary.
    fn summary(o: &std::process::Output) -> serde_json::Value {
        serde_json::from_str(text(o).0.lines().last().unwrap()).unwrap()
    }

    #[test]
    fn builds_register_promote_skip_unchanged_and_revoked_images_fail_verify() {
        if !ready() {
            return;
        }
        let reg = Registry::start();
        let s = Scratch::new();
        busybox_rootfs(&s, &[]);
        let build = |template: &Path, extra: &[&str]| {
            s.kiln()
                .args(["build", "--json"])
                .args(extra)
                .arg(template)
                .env("KILN_PASSWORD", "pw")
                .env("KILN_ACTOR", "ci")
                .output()
                .unwrap()
        };
        s.keygen("cosign", "pw");

        let base_template = |content: &str| {
            s.write(
                "base.toml",
                &format!(
                    "[image]\nname = \"base\"\nversion = \"1.0.0\"\n[source.oci.b]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{}/base:latest\"]\n[[build]]\nsources = [\"oci.b\"]\n[[build.provisioner]]\ntype = \"shell\"\ninline = [\"echo {content} > /etc/base-version\"]\n",
                    reg.addr
                ),
            )
        };
        let base = base_template("one");
        assert_exit(&build(&base, &[]), 0);

        s.write("setup.sh", "#!/bin/sh\necho \"$MOTD\" > /etc/motd\n");
        let app = s.write(
            "app.toml",
            &format!(
                "[image]\nname = \"app\"\nversion = \"1.0.0\"\n[variables.motd]\ntype = \"string\"\ndefault = \"hello\"\n[source.oci.a]\nfrom = \"registry:{0}/base:latest\"\nto = [\"registry:{0}/app:1\"]\n[[build]]\nsources = [\"oci.a\"]\n[[build.provisioner]]\ntype = \"shell\"\nscript = \"setup.sh\"\nenv = {{ MOTD = \"${{var.motd}}\" }}\n[build.sign]\nkey = \"cosign.key\"\n[build.register]\nchannels = [\"dev\"]\n",
                reg.addr
            ),
        );
        let o = build(&app, &[]);
        assert_exit(&o, 0);
        assert!(
            text(&o)
                .0
                .contains("registered app 1.0.0+1 in the catalog; promoted to dev"),
            "{}",
            text(&o).0
        );
        let digest = summary(&o)["jobs"][0]["artifacts"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        // The channel is a tag on the version's digest.
        assert_eq!(skopeo_digest(&format!("{}/app:dev", reg.addr)), digest);
        let o = s
            .kiln()
            .args(["images", "show", "app", "dev", "--json"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let v = json(&o);
        assert_eq!(v["version"], "1.0.0+1");
        let a = &v["artifacts"][0];
        assert_eq!(a["digest"], digest.as_str());
        assert_eq!(a["parent"], "base 1.0.0+1", "the base is a kiln image");
        assert!(a["signer"].as_str().unwrap().starts_with("sha256:"));
        // The manifest names the version it was registered as.
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(a["manifest"].as_str().unwrap()).unwrap())
                .unwrap();
        assert_eq!(m["catalog"]["version"], "1.0.0+1");
        assert_eq!(m["fingerprint"], a["fingerprint"]);

        let verify = || {
            s.kiln()
                .args(["verify", "--key", "cosign.pub"])
                .arg(format!("registry:{}/app:1", reg.addr))
                .output()
                .unwrap()
        };
        let o = verify();
        assert_exit(&o, 0);
        assert!(
            text(&o).0.contains("catalog: app 1.0.0+1 (active)"),
            "{}",
            text(&o).0
        );

        // Nothing changed: skipped, nothing built.
        let o = build(&app, &["--skip-unchanged"]);
        assert_exit(&o, 0);
        assert!(
            text(&o)
                .0
                .contains("skipped: nothing due since app 1.0.0+1 (inputs and base unchanged"),
            "{}",
            text(&o).0
        );
        assert!(!text(&o).0.contains("job_started"), "{}", text(&o).0);

        // Each kind of change rebuilds: a provisioner script, a variable, the base.
        let next = |o: &std::process::Output, n: u32| {
            assert_exit(o, 0);
            assert!(
                text(o).0.contains(&format!("registered app 1.0.0+{n}")),
                "{}",
                text(o).0
            );
        };
        s.write(
            "setup.sh",
            "#!/bin/sh\necho \"$MOTD\" > /etc/motd\nchmod 644 /etc/motd\n",
        );
        next(&build(&app, &["--skip-unchanged"]), 2);
        next(&build(&app, &["--skip-unchanged", "--var", "motd=hi"]), 3);
        assert!(
            text(&build(&app, &["--skip-unchanged", "--var", "motd=hi"]))
                .0
                .contains("skipped")
        );
        base_template("two");
        assert_exit(&build(&base, &[]), 0);
        let o = build(&app, &["--skip-unchanged", "--var", "motd=hi"]);
        next(&o, 4);

        // Revoked: verify refuses the image, naming why.
        let o = s
            .kiln()
            .args(["images", "revoke", "app", "1.0.0+4", "--reason", "bad base"])
            .output()
            .unwrap();
        assert_exit(&o, 0);
        let o = verify();
        assert_exit(&o, 1);
        assert!(
            text(&o).1.contains("1.0.0+4") && text(&o).1.contains("revoked"),
            "{}",
            text(&o).1
        );
        assert!(text(&o).1.contains("bad base"), "{}", text(&o).1);
        assert_exit(&s.kiln().arg("audit").output().unwrap(), 0);
    }
}

/// A promotion decides on the catalog under its lock: while a `prod`
/// promotion gated by "only from staging" is between its decision and
/// its entries (held there by the debug build's `KILN_TEST_PROMOTE_PAUSE`),
/// a rollback that takes the version out of `staging` waits for the lock,
/// so the logged decision was made on the state it is logged against.
/// Every change is recorded and the chain verifies.
#[test]
fn promote_decides_under_the_lock_while_a_rollback_races_it() {
    use std::time::{Duration, Instant};
    let s = Scratch::new();
    let catalog = s.path().join("catalog");
    let catalog = catalog.to_str().unwrap();
    let policy = s.write(
        "gate.rego",
        "package kiln.promote\n\n\
         deny_unstaged contains \"promoted to prod without being in staging\" if {\n\
         \tinput.channel == \"prod\"\n\
         \tnot \"staging\" in input.image.channels\n}\n",
    );
    let gated = |name: &str, byte: char| {
        let path = manifest(&s, name, byte);
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        doc["policy"] = serde_json::json!({
            "files": [{ "path": policy.to_str().unwrap() }],
            "entrypoint": "data.kiln.promote",
        });
        s.write(name, &doc.to_string())
    };
    let (m1, m2) = (gated("m1.json", 'a'), gated("m2.json", 'b'));
    for m in [&m1, &m2] {
        let o = kiln_on(
            &s,
            catalog,
            &[
                "images",
                "register",
                m.to_str().unwrap(),
                "--channel",
                "staging",
            ],
        );
        assert_exit(&o, 0);
    }
    // Not from staging: denied (the gate works).
    let o = kiln_on(
        &s,
        catalog,
        &["images", "promote", "web", "1.0.0+1", "prod"],
    );
    assert_exit(&o, 1);

    let pause = s.path().join("pause");
    std::fs::create_dir(&pause).unwrap();
    let promote = s
        .kiln()
        .args([
            "--catalog",
            catalog,
            "images",
            "promote",
            "web",
            "1.0.0+2",
            "prod",
        ])
        .env("KILN_ACTOR", "promoter")
        .env("KILN_TEST_PROMOTE_PAUSE", &pause)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !pause.join("reached").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the promotion never reached its pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The promotion decided (1.0.0+2 is in staging). Now take it out.
    let mut rollback = s
        .kiln()
        .args(["--catalog", catalog, "images", "rollback", "web", "staging"])
        .env("KILN_ACTOR", "roller")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Until it is done, or waits on the catalog's lock (a blocked flock
    // in /proc/locks, on the lock file's inode).
    let ino = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(Path::new(catalog).join("lock"))
            .unwrap()
            .ino()
    };
    let start = Instant::now();
    loop {
        if rollback.try_wait().unwrap().is_some() {
            break;
        }
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        if locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&format!(":{ino} ")))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the rollback neither finished nor waited for the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(pause.join("go"), "").unwrap();
    let promoted = promote.wait_with_output().unwrap();
    assert_exit(&promoted, 0);
    assert_exit(&rollback.wait_with_output().unwrap(), 0);

    let o = kiln_on(&s, catalog, &["audit", "--json"]);
    assert_exit(&o, 0);
    let audit = json(&o);
    assert_eq!(audit["verified"], true, "{audit}");
    let log = audit["log"].as_array().unwrap();
    let actions: Vec<String> = log
        .iter()
        .map(|e| {
            let c = &e["change"];
            format!(
                "{} {}",
                c["action"].as_str().unwrap(),
                c["channel"].as_str().unwrap_or_default()
            )
        })
        .collect();
    let at = |what: &str| {
        actions
            .iter()
            .rposition(|a| a == what)
            .unwrap_or_else(|| panic!("no `{what}` in {actions:?}"))
    };
    // Everything recorded: 2 registrations (each gated into staging),
    // the denied promotion, the allowed one, and the rollback.
    assert_eq!(
        actions.iter().filter(|a| a.starts_with("policy")).count(),
        4,
        "{actions:?}"
    );
    assert!(
        at("policy prod") < at("promote prod") && at("promote prod") < at("rollback staging"),
        "the rollback is logged before the promotion it would have changed the decision of: {actions:?}"
    );
}
