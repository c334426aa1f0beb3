//! Independent verifiers kiln did not write, for the evidence tests:
//! openssl (cosign signatures: simple-signing payloads and blobs),
//! securesystemslib (DSSE envelopes), sigstore-js `@sigstore/verify` 3.x
//! (blobs and DSSE, public-key mode) and the in-toto attestation project's
//! bindings (strict statement schema). The Python and Node drivers are in
//! `tests/checkers/`; scripts/ci/install-deps.sh installs what they use.
//! Every check is also run against a wrong key and a flipped byte, which
//! must fail: a checker that accepts everything proves nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::repo;

/// Where install-deps.sh puts the npm packages.
const NODE_MODULES: &str = "/opt/kiln-node/node_modules";

/// Whether every checker is installed (fails under CI=true, else skips).
pub fn ready() -> bool {
    if !crate::require(
        "independent verifiers",
        &["openssl", "python3", "node"],
        false,
    ) {
        return false;
    }
    let mut missing = vec![];
    for module in ["in_toto_attestation", "securesystemslib"] {
        let ok = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing.push(format!("python module {module}"));
        }
    }
    if !Path::new(NODE_MODULES)
        .join("@sigstore/verify/package.json")
        .is_file()
    {
        missing.push(format!("npm @sigstore/verify@3 in {NODE_MODULES}"));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "independent verifier tests need {} (scripts/ci/install-deps.sh)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn script(name: &str) -> PathBuf {
    repo().join("tests/checkers").join(name)
}

fn run(c: &mut Command) -> Output {
    c.output().expect("checker runs")
}

fn ok(o: &Output) -> bool {
    o.status.success()
}

fn say(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// in-toto-attestation: strict parse + validate() of a statement file.
pub fn intoto(statement: &Path) -> Output {
    run(Command::new("python3")
        .arg(script("intoto_check.py"))
        .arg(statement))
}

/// securesystemslib: the DSSE envelope verifies with `public`; its
/// payload is written to `payload_out`.
pub fn dsse(public: &Path, envelope: &Path, payload_type: &str, payload_out: &Path) -> Output {
    run(Command::new("python3")
        .arg(script("dsse_verify.py"))
        .arg(public)
        .arg(envelope)
        .arg(payload_type)
        .arg(payload_out))
}

/// securesystemslib as the producer: a fresh key signs `payload` under
/// `payload_type` into `envelope_out`; its public key goes to
/// `public_out` (PEM).
pub fn dsse_sign(
    payload: &Path,
    payload_type: &str,
    envelope_out: &Path,
    public_out: &Path,
) -> Output {
    run(Command::new("python3")
        .arg(script("dsse_sign.py"))
        .arg(payload)
        .arg(payload_type)
        .arg(envelope_out)
        .arg(public_out))
}

/// sigstore-js: a blob signature (base64 file) or a DSSE envelope.
pub fn sigstore(public: &Path, mode: &str, target: &Path, sig: Option<&Path>) -> Output {
    let mut c = Command::new("node");
    c.env("NODE_PATH", NODE_MODULES)
        .arg(script("sigstore_verify.js"))
        .arg(public)
        .arg(mode)
        .arg(target);
    if let Some(s) = sig {
        c.arg(s);
    }
    run(&mut c)
}

/// openssl: an ECDSA signature (DER, base64 in `sig_b64`) over `file`.
pub fn openssl(public: &Path, file: &Path, sig_b64: &Path, scratch: &Path) -> Output {
    use base64::Engine as _;
    let b64 = std::fs::read_to_string(sig_b64).unwrap();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap_or_default();
    let der_path = scratch.join(format!("{}.der", uuid::Uuid::new_v4().simple()));
    std::fs::write(&der_path, der).unwrap();
    let o = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(&der_path)
        .arg(file));
    let _ = std::fs::remove_file(der_path);
    o
}

/// A copy of `file` with one byte flipped (at `at`, clamped), in `dir`.
pub fn flipped(file: &Path, at: usize, dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(file).unwrap();
    let i = at.min(bytes.len() - 1);
    bytes[i] ^= 0x01;
    let name = file.file_name().unwrap().to_string_lossy();
    let out = dir.join(format!("flipped-{i}-{name}"));
    std::fs::write(&out, bytes).unwrap();
    out
}

/// A DSSE envelope with one byte of its signature flipped (still valid
/// JSON and base64: tampering a checker must catch, not a parse error).
pub fn envelope_with_flipped_sig(envelope: &Path, dir: &Path) -> PathBuf {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let mut sig = b64
        .decode(env["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    let i = sig.len() - 5;
    sig[i] ^= 0x01;
    env["signatures"][0]["sig"] = b64.encode(sig).into();
    let out = dir.join(format!(
        "sigflip-{}",
        envelope.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&out, serde_json::to_vec(&env).unwrap()).unwrap();
    out
}

/// A DSSE envelope whose payload has one byte flipped (re-encoded).
pub fn envelope_with_flipped_payload(envelope: &Path, dir: &Path) -> PathBuf {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut env: serde_json::Value =
        serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
    let mut payload = b64.decode(env["payload"].as_str().unwrap()).unwrap();
    let i = payload.len() / 2;
    payload[i] ^= 0x01;
    env["payload"] = b64.encode(payload).into();
    let out = dir.join(format!(
        "payloadflip-{}",
        envelope.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&out, serde_json::to_vec(&env).unwrap()).unwrap();
    out
}

/// Every independent check of a DSSE envelope: securesystemslib and
/// sigstore-js accept it with `public`, refuse it with `wrong`, with a
/// flipped signature byte and with a flipped payload byte. Returns the
/// payload securesystemslib verified.
#[track_caller]
pub fn assert_envelope(
    public: &Path,
    wrong: &Path,
    envelope: &Path,
    payload_type: &str,
    dir: &Path,
) -> Vec<u8> {
    let payload = dir.join(format!("payload-{}", uuid::Uuid::new_v4().simple()));
    let o = dsse(public, envelope, payload_type, &payload);
    assert!(
        ok(&o),
        "securesystemslib refused {}: {}",
        envelope.display(),
        say(&o)
    );
    let o = sigstore(public, "dsse", envelope, None);
    assert!(
        ok(&o),
        "sigstore-js refused {}: {}",
        envelope.display(),
        say(&o)
    );
    let sink = dir.join("sink");
    let o = dsse(wrong, envelope, payload_type, &sink);
    assert!(
        !ok(&o),
        "securesystemslib accepted a wrong key: {}",
        say(&o)
    );
    let o = sigstore(wrong, "dsse", envelope, None);
    assert!(!ok(&o), "sigstore-js accepted a wrong key: {}", say(&o));
    for tampered in [
        envelope_with_flipped_sig(envelope, dir),
        envelope_with_flipped_payload(envelope, dir),
    ] {
        let o = dsse(public, &tampered, payload_type, &sink);
        assert!(
            !ok(&o),
            "securesystemslib accepted {}: {}",
            tampered.display(),
            say(&o)
        );
        let o = sigstore(public, "dsse", &tampered, None);
        assert!(
            !ok(&o),
            "sigstore-js accepted {}: {}",
            tampered.display(),
            say(&o)
        );
    }
    std::fs::read(payload).unwrap()
}

/// The statement passes in-toto-attestation's strict parse and
/// validation; a copy with a field the schema does not know fails it
/// (the checker is strict, not lenient).
#[track_caller]
pub fn assert_statement(statement: &[u8], dir: &Path) -> serde_json::Value {
    let path = dir.join(format!("statement-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, statement).unwrap();
    let o = intoto(&path);
    assert!(
        ok(&o),
        "in-toto-attestation refused the statement: {}",
        say(&o)
    );
    let mut doc: serde_json::Value = serde_json::from_slice(statement).unwrap();
    doc["subject"][0]["files"] = serde_json::json!({});
    let bad = dir.join("statement-unknown-field.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(
        !ok(&intoto(&bad)),
        "in-toto-attestation accepted an unknown field"
    );
    serde_json::from_slice(statement).unwrap()
}

/// A blob signature (`sig`: base64 DER) over `file`: openssl and
/// sigstore-js accept it with `public`, refuse it with `wrong` and for the
/// file with one byte flipped.
#[track_caller]
pub fn assert_blob(public: &Path, wrong: &Path, file: &Path, sig: &Path, dir: &Path) {
    let o = openssl(public, file, sig, dir);
    assert!(ok(&o), "openssl refused {}: {}", file.display(), say(&o));
    let o = sigstore(public, "blob", file, Some(sig));
    assert!(
        ok(&o),
        "sigstore-js refused {}: {}",
        file.display(),
        say(&o)
    );
    let o = openssl(wrong, file, sig, dir);
    assert!(!ok(&o), "openssl accepted a wrong key: {}", say(&o));
    let o = sigstore(wrong, "blob", file, Some(sig));
    assert!(!ok(&o), "sigstore-js accepted a wrong key: {}", say(&o));
    let at = std::fs::metadata(file).unwrap().len() / 2;
    flip_in_place(file, at);
    let openssl_flipped = openssl(public, file, sig, dir);
    let sigstore_flipped = sigstore(public, "blob", file, Some(sig));
    flip_in_place(file, at);
    assert!(
        !ok(&openssl_flipped),
        "openssl accepted a flipped byte: {}",
        say(&openssl_flipped)
    );
    assert!(
        !ok(&sigstore_flipped),
        "sigstore-js accepted a flipped byte: {}",
        say(&sigstore_flipped)
    );
}

/// Flips the lowest bit of the byte at `at` (twice restores the file),
/// without reading a large file whole.
pub fn flip_in_place(file: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0x01;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

/// The in-toto statement in the DSSE `envelope` kiln wrote under
/// `scratch`: checked by every independent verifier (with `cosign.pub`,
/// refused with `other.pub`) when `checkers` are installed, else only
/// decoded (the caller has already failed under `CI=true` then).
#[track_caller]
pub fn checked_statement(scratch: &Path, envelope: &Path, checkers: bool) -> serde_json::Value {
    if !checkers {
        use base64::Engine;
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(envelope).unwrap()).unwrap();
        let b = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        return serde_json::from_slice(&b).unwrap();
    }
    let work = scratch.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let payload = assert_envelope(
        &scratch.join("cosign.pub"),
        &scratch.join("other.pub"),
        envelope,
        "application/vnd.in-toto+json",
        &work,
    );
    assert_statement(&payload, &work)
}
