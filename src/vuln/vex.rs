//! OpenVEX documents (https://github.com/openvex/spec) that mark findings
//! `not_affected` or `fixed`. kiln asks two things OpenVEX leaves open:
//! every statement is attributed (the document's `author`, or the
//! statement's own `kiln:author`) and expires (`kiln:expires`, RFC 3339
//! UTC, on the statement or the whole document). An expired statement is
//! ignored, and said so. VEX files are trusted as given: they are not
//! signed (a DSSE-signed VEX is not supported yet).

use std::path::Path;
use std::time::SystemTime;

use serde_json::Value;

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

/// Reads one OpenVEX document; `now` decides what has expired.
pub fn load(path: &Path, now: SystemTime) -> Result<Vec<Statement>, String> {
    let text = fs_err::read_to_string(path).map_err(|e| e.to_string())?;
    let file = path.display().to_string();
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{file}:{}:{}: not JSON: {e}", e.line(), e.column()))?;
    parse(&doc, &file, now)
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
}
