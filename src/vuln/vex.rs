//! OpenVEX documents (https://github.com/openvex/spec) that mark findings
//! `not_affected` or `fixed`. kiln asks two things OpenVEX leaves open:
//! every statement is attributed (the document's `author`, or the
//! statement's own `kiln:author`) and expires (`kiln:expires`, RFC 3339
//! UTC, on the statement or the whole document). An expired statement is
//! ignored, and said so.
//!
//! A VEX file is either the OpenVEX document itself or a DSSE envelope
//! around it (payload type `application/vnd.openvex+json`, or an in-toto
//! statement whose `predicateType` is OpenVEX's, as `cosign attest-blob
//! --type openvex` makes; also inside a Sigstore bundle's
//! `dsseEnvelope`). With trusted keys ([`VexKey`], `--vex-key`) every file
//! must be an envelope one of them signed; without, a plain document is
//! taken as given (the caller warns) and an envelope is refused, since
//! kiln would not check what it claims.

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;
use sigstore::crypto::CosignVerificationKey;

use crate::sign::dsse;

/// The payload type of a DSSE envelope whose body is an OpenVEX document.
pub const OPENVEX_PAYLOAD_TYPE: &str = "application/vnd.openvex+json";
/// The payload type of an in-toto statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// OpenVEX's namespace: a statement's `predicateType` starts with it.
const OPENVEX_NS: &str = "https://openvex.dev/ns";

/// A public key VEX documents may be signed with.
#[derive(Clone)]
pub struct VexKey {
    /// `sha256:` of the PEM ([`crate::sign::key_id`]).
    pub key_id: String,
    /// Where it was given, for messages.
    pub path: String,
    key: CosignVerificationKey,
}

impl VexKey {
    /// A cosign-format (PEM) public key file.
    pub fn load(path: &Path) -> Result<VexKey, String> {
        let pem = fs_err::read_to_string(path).map_err(|e| e.to_string())?;
        let key = crate::sign::load_public_key(path).map_err(|e| e.to_string())?;
        Ok(VexKey {
            key_id: crate::sign::key_id(&pem),
            path: path.display().to_string(),
            key,
        })
    }
}

/// One VEX file as read: what it was, who signed it, its statements.
#[derive(Debug, Clone)]
pub struct Document {
    pub file: String,
    /// `sha256:` of the file's bytes.
    pub digest: String,
    /// The key id of the `--vex-key` that verified it (`None`: unsigned,
    /// taken as given).
    pub signed_by: Option<String>,
    pub statements: Vec<Statement>,
}

/// One statement, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// `FILE#N` (1-based), for messages.
    pub at: String,
    /// The vulnerability name and its aliases.
    pub vulnerabilities: Vec<String>,
    /// Product and subcomponent `@id`s (package URLs).
    pub products: Vec<String>,
    /// `not_affected`, `affected`, `fixed` or `under_investigation`.
    pub status: String,
    pub justification: Option<String>,
    pub author: String,
    /// RFC 3339, as written.
    pub expires: String,
    pub expired: bool,
    /// The key id of the `--vex-key` its document was verified with.
    pub signed_by: Option<String>,
}

impl Statement {
    /// Whether it covers vulnerability `ids` (id and aliases) in the
    /// package `purl`. A product purl without `@version` covers every
    /// version; qualifiers (`?arch=…`) are ignored and percent-escapes
    /// (`%3A` for an epoch's colon) decoded on both sides.
    pub fn covers(&self, ids: &[&str], purl: &str) -> bool {
        let bare = |p: &str| {
            let p = p.split(['?', '#']).next().unwrap_or(p);
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        };
        let purl = bare(purl);
        let name_only = purl.split('@').next().unwrap_or(&purl).to_string();
        self.vulnerabilities
            .iter()
            .any(|v| ids.contains(&v.as_str()))
            && self.products.iter().any(|p| {
                let p = bare(p);
                p == purl || (!p.contains('@') && p == name_only)
            })
    }

    /// Whether it takes the finding out of the count.
    pub fn suppresses(&self) -> bool {
        !self.expired && matches!(self.status.as_str(), "not_affected" | "fixed")
    }
}

const STATUSES: &[&str] = &["not_affected", "affected", "fixed", "under_investigation"];

/// Reads one VEX file (a document or a signed envelope, see the module
/// doc); `keys` are the trusted keys (empty: none configured), `now`
/// decides what has expired.
pub fn load(path: &Path, now: SystemTime, keys: &[VexKey]) -> Result<Document, String> {
    let bytes = fs_err::read(path).map_err(|e| e.to_string())?;
    let file = path.display().to_string();
    let outer: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{file}:{}:{}: not JSON: {e}", e.line(), e.column()))?;
    let envelope = if outer.get("dsseEnvelope").is_some() {
        Some(&outer["dsseEnvelope"])
    } else if outer.get("payloadType").is_some() && outer.get("signatures").is_some() {
        Some(&outer)
    } else {
        None
    };
    let (doc, signed_by) = match envelope {
        None if keys.is_empty() => (outer, None),
        None => {
            return Err(format!(
                "{file}: the VEX document is not signed, and with `--vex-key` every VEX must be (sign it with `kiln vex sign`)"
            ))
        }
        Some(_) if keys.is_empty() => {
            return Err(format!(
                "{file}: a signed VEX (DSSE envelope): give the public key it is signed with (`--vex-key PUB`), kiln does not take a signature it cannot check"
            ))
        }
        Some(env) => {
            let (doc, key) = open_envelope(env, &file, keys)?;
            (doc, Some(key))
        }
    };
    let mut statements = parse(&doc, &file, now)?;
    for s in &mut statements {
        s.signed_by = signed_by.clone();
    }
    Ok(Document {
        file,
        digest: crate::manifest::sha256_hex(&bytes),
        signed_by,
        statements,
    })
}

/// Verifies an envelope with the trusted keys and returns the OpenVEX
/// document inside and the key id that verified it.
fn open_envelope(env: &Value, file: &str, keys: &[VexKey]) -> Result<(Value, String), String> {
    let env: dsse::Envelope = serde_json::from_value(env.clone())
        .map_err(|e| format!("{file}: not a DSSE envelope: {e}"))?;
    let kind = env.payload_type.as_str();
    if kind != OPENVEX_PAYLOAD_TYPE && kind != INTOTO_PAYLOAD_TYPE {
        return Err(format!(
            "{file}: the envelope's payload type `{kind}` is neither `{OPENVEX_PAYLOAD_TYPE}` nor `{INTOTO_PAYLOAD_TYPE}`"
        ));
    }
    let mut verified = None;
    for k in keys {
        if let Ok(body) = dsse::verify(&env, kind, &k.key) {
            verified = Some((body, k.key_id.clone()));
            break;
        }
    }
    let Some((body, key_id)) = verified else {
        let ids: Vec<String> = keys
            .iter()
            .map(|k| format!("{} ({})", k.key_id, k.path))
            .collect();
        return Err(format!(
            "{file}: the VEX signature does not verify with any `--vex-key` ({}): refused (wrong key, or the document was changed after signing)",
            ids.join(", ")
        ));
    };
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("{file}: the signed payload is not JSON: {e}"))?;
    if kind == OPENVEX_PAYLOAD_TYPE {
        return Ok((payload, key_id));
    }
    let statement_type = payload["_type"].as_str().unwrap_or_default();
    if !statement_type.starts_with("https://in-toto.io/Statement/") {
        return Err(format!(
            "{file}: the signed payload is not an in-toto statement (`_type` {:?})",
            payload["_type"]
        ));
    }
    let predicate_type = payload["predicateType"].as_str().unwrap_or_default();
    if !predicate_type.starts_with(OPENVEX_NS) {
        return Err(format!(
            "{file}: the signed statement's predicateType `{predicate_type}` is not OpenVEX ({OPENVEX_NS}/…)"
        ));
    }
    Ok((payload["predicate"].clone(), key_id))
}

pub fn parse(doc: &Value, file: &str, now: SystemTime) -> Result<Vec<Statement>, String> {
    if !doc["@context"]
        .as_str()
        .is_some_and(|c| c.starts_with("https://openvex.dev/ns"))
    {
        return Err(format!(
            "{file}: not an OpenVEX document (`@context` must be https://openvex.dev/ns/…)"
        ));
    }
    let Some(list) = doc["statements"].as_array() else {
        return Err(format!("{file}: no `statements`"));
    };
    let mut out = vec![];
    for (i, s) in list.iter().enumerate() {
        let at = format!("{file}#{}", i + 1);
        let author = s["kiln:author"]
            .as_str()
            .or(doc["author"].as_str())
            .filter(|a| !a.trim().is_empty())
            .ok_or_else(|| {
                format!("{at}: the statement is not attributed (no document `author`, no `kiln:author`)")
            })?;
        let expires = s["kiln:expires"]
            .as_str()
            .or(doc["kiln:expires"].as_str())
            .ok_or_else(|| {
                format!("{at}: the statement has no expiry (`kiln:expires`, RFC 3339 UTC, on the statement or the document)")
            })?;
        let until = humantime::parse_rfc3339_weak(expires).map_err(|e| {
            format!("{at}: `kiln:expires` `{expires}` is not an RFC 3339 UTC time: {e}")
        })?;
        let status = s["status"].as_str().unwrap_or_default();
        if !STATUSES.contains(&status) {
            return Err(format!(
                "{at}: status `{status}` is not one of {}",
                STATUSES.join(", ")
            ));
        }
        let v = &s["vulnerability"];
        let mut vulnerabilities: Vec<String> =
            v["name"].as_str().map(String::from).into_iter().collect();
        vulnerabilities.extend(
            v["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(String::from)),
        );
        if vulnerabilities.is_empty() {
            return Err(format!("{at}: no `vulnerability.name`"));
        }
        let mut products = vec![];
        for p in s["products"].as_array().into_iter().flatten() {
            products.extend(p["@id"].as_str().map(String::from));
            for sc in p["subcomponents"].as_array().into_iter().flatten() {
                products.extend(sc["@id"].as_str().map(String::from));
            }
        }
        if products.is_empty() {
            return Err(format!("{at}: no `products` with an `@id`"));
        }
        out.push(Statement {
            at,
            vulnerabilities,
            products,
            status: status.to_string(),
            justification: s["justification"].as_str().map(String::from),
            author: author.to_string(),
            expires: expires.to_string(),
            expired: until <= now,
            signed_by: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(statement: Value) -> Value {
        json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": "https://example.com/vex/1",
            "author": "Security Team <sec@example.com>",
            "timestamp": "2026-01-01T00:00:00Z",
            "version": 1,
            "statements": [statement],
        })
    }

    #[test]
    fn a_statement_covers_its_package_and_expires() {
        let now = humantime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let d = doc(json!({
            "vulnerability": { "name": "CVE-2024-1" },
            "products": [{ "@id": "pkg:oci/web", "subcomponents": [{ "@id": "pkg:deb/debian/zlib1g" }] }],
            "status": "not_affected",
            "justification": "vulnerable_code_not_in_execute_path",
            "kiln:expires": "2027-01-01T00:00:00Z",
        }));
        let s = &parse(&d, "v.json", now).unwrap()[0];
        assert!(s.covers(
            &["CVE-2024-1"],
            "pkg:deb/debian/zlib1g@1:1.2.13-1?arch=amd64&distro=debian-12"
        ));
        assert!(!s.covers(&["CVE-2024-2"], "pkg:deb/debian/zlib1g@1"));
        assert!(!s.covers(&["CVE-2024-1"], "pkg:deb/debian/zlib1g-dev@1"));
        let mut d2 = d.clone();
        d2["statements"][0]["products"] = json!([{ "@id": "pkg:deb/debian/zlib1g@1:1.2.13-1" }]);
        let s2 = &parse(&d2, "v.json", now).unwrap()[0];
        assert!(s2.covers(
            &["CVE-2024-1"],
            "pkg:deb/debian/zlib1g@1%3A1.2.13-1?arch=amd64"
        ));
        assert!(!s2.covers(&["CVE-2024-1"], "pkg:deb/debian/zlib1g@1%3A1.2.13-2"));
        assert!(s.suppresses());
        assert_eq!(s.author, "Security Team <sec@example.com>");
        let later = humantime::parse_rfc3339("2027-01-02T00:00:00Z").unwrap();
        let s = &parse(&d, "v.json", later).unwrap()[0];
        assert!(s.expired && !s.suppresses());
    }

    #[test]
    fn unattributed_or_unbounded_statements_are_refused() {
        let now = SystemTime::now();
        let st = json!({ "vulnerability": { "name": "CVE-1" }, "products": [{ "@id": "pkg:deb/debian/a" }], "status": "not_affected" });
        let e = parse(&doc(st.clone()), "v.json", now).unwrap_err();
        assert!(e.contains("v.json#1") && e.contains("no expiry"), "{e}");
        let mut d = doc(st);
        d["kiln:expires"] = "2099-01-01T00:00:00Z".into();
        d["author"] = "".into();
        let e = parse(&d, "v.json", now).unwrap_err();
        assert!(e.contains("not attributed"), "{e}");
        d["author"] = "me".into();
        d["statements"][0]["status"] = "maybe".into();
        let e = parse(&d, "v.json", now).unwrap_err();
        assert!(e.contains("`maybe`"), "{e}");
    }

    /// Signed documents: honoured with the right key (the statements
    /// carry its id), refused with a wrong key, after a change of the
    /// payload, unsigned while a key is configured, or signed while none
    /// is; the in-toto statement form is read too.
    #[tokio::test]
    async fn signed_vex_is_verified_before_its_statements_count() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        crate::sign::keygen(&dir.join("good"), "pw").unwrap();
        crate::sign::keygen(&dir.join("other"), "pw").unwrap();
        std::env::set_var("KILN_PASSWORD", "pw");
        let key = crate::sign::load_signing_key("good.key", dir).unwrap();
        let good = VexKey::load(&dir.join("good.pub")).unwrap();
        let other = VexKey::load(&dir.join("other.pub")).unwrap();
        let mut d = doc(json!({
            "vulnerability": { "name": "CVE-2024-1" },
            "products": [{ "@id": "pkg:deb/debian/zlib1g" }],
            "status": "not_affected",
            "justification": "component_not_present",
            "kiln:expires": "2099-01-01T00:00:00Z",
        }));
        let body = serde_json::to_vec(&d).unwrap();
        let env = dsse::sign(OPENVEX_PAYLOAD_TYPE, &body, &key).await.unwrap();
        let write = |name: &str, v: &Value| {
            let p = dir.join(name);
            std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
            p
        };
        let signed = write("signed.json", &serde_json::to_value(&env).unwrap());
        let now = SystemTime::now();

        let ok = load(&signed, now, &[other.clone(), good.clone()]).unwrap();
        assert_eq!(ok.signed_by.as_deref(), Some(good.key_id.as_str()));
        assert_eq!(ok.statements[0].signed_by, ok.signed_by);
        assert!(ok.statements[0].suppresses());

        let e = load(&signed, now, std::slice::from_ref(&other)).unwrap_err();
        assert!(e.contains("does not verify with any `--vex-key`"), "{e}");

        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        d["statements"][0]["vulnerability"]["name"] = "CVE-2024-2".into();
        let mut tampered = serde_json::to_value(&env).unwrap();
        tampered["payload"] = b64.encode(serde_json::to_vec(&d).unwrap()).into();
        let t = write("tampered.json", &tampered);
        let e = load(&t, now, std::slice::from_ref(&good)).unwrap_err();
        assert!(e.contains("changed after signing"), "{e}");

        let plain = write("plain.json", &d);
        let e = load(&plain, now, std::slice::from_ref(&good)).unwrap_err();
        assert!(e.contains("is not signed"), "{e}");
        assert!(load(&plain, now, &[]).unwrap().signed_by.is_none());
        let e = load(&signed, now, &[]).unwrap_err();
        assert!(e.contains("--vex-key PUB"), "{e}");

        // The in-toto form (cosign attest-blob --type openvex), also
        // inside a Sigstore bundle.
        let st = json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{ "name": "vex", "digest": { "sha256": "00" } }],
            "predicateType": "https://openvex.dev/ns/v0.2.0",
            "predicate": d,
        });
        let env = dsse::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&st).unwrap(), &key)
            .await
            .unwrap();
        let bundle = write(
            "bundle.json",
            &json!({ "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": env }),
        );
        let ok = load(&bundle, now, std::slice::from_ref(&good)).unwrap();
        assert_eq!(ok.statements[0].vulnerabilities, ["CVE-2024-2"]);
        let mut st2 = st.clone();
        st2["predicateType"] = "https://slsa.dev/provenance/v1".into();
        let env = dsse::sign(
            INTOTO_PAYLOAD_TYPE,
            &serde_json::to_vec(&st2).unwrap(),
            &key,
        )
        .await
        .unwrap();
        let p = write("slsa.json", &serde_json::to_value(&env).unwrap());
        let e = load(&p, now, std::slice::from_ref(&good)).unwrap_err();
        assert!(e.contains("is not OpenVEX"), "{e}");
    }
}
