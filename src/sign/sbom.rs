//! SBOMs as in-toto attestations: an in-toto Statement v1 whose predicate
//! is the whole SPDX 2.3 document (`https://spdx.dev/Document`) or
//! CycloneDX 1.6 document (`https://cyclonedx.org/bom`), its subject the
//! artifact's digest — what `cosign attest --type spdxjson|cyclonedx`
//! makes. Signed into DSSE envelopes like the provenance.

use serde_json::json;

use super::provenance::{sha256_map, STATEMENT_TYPE};

pub const SPDX_PREDICATE_TYPE: &str = "https://spdx.dev/Document";
pub const CYCLONEDX_PREDICATE_TYPE: &str = "https://cyclonedx.org/bom";

/// The statement of `document` about the artifact `name` with `digest`.
pub fn statement(
    name: &str,
    digest: &str,
    predicate_type: &str,
    document: &serde_json::Value,
) -> serde_json::Value {
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": name, "digest": sha256_map(Some(digest)) }],
        "predicateType": predicate_type,
        "predicate": document,
    })
}

/// The document `statement` attests, when it is of `predicate_type` and
/// about `digest` (`sha256:<hex>`); otherwise what it is instead.
pub fn predicate_of<'a>(
    statement: &'a serde_json::Value,
    digest: &str,
    predicate_type: &str,
) -> Result<&'a serde_json::Value, String> {
    if statement["predicateType"] != predicate_type {
        return Err(format!(
            "its predicate type is {}, not `{predicate_type}`",
            statement["predicateType"]
        ));
    }
    let subject = statement["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap_or_default();
    if format!("sha256:{subject}") != digest {
        return Err(format!("it is about sha256:{subject}, not {digest}"));
    }
    Ok(&statement["predicate"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_the_predicate() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let doc = json!({ "spdxVersion": "SPDX-2.3" });
        let s = statement("oci-layout:/o", &d, SPDX_PREDICATE_TYPE, &doc);
        assert_eq!(s["subject"][0]["digest"]["sha256"], "ab".repeat(32));
        assert_eq!(s["predicate"], doc);
        assert_eq!(s["predicateType"], SPDX_PREDICATE_TYPE);
        assert_eq!(predicate_of(&s, &d, SPDX_PREDICATE_TYPE), Ok(&doc));
        let other = format!("sha256:{}", "cd".repeat(32));
        let err = predicate_of(&s, &other, SPDX_PREDICATE_TYPE).unwrap_err();
        assert!(
            err.contains(&other) && err.contains(&"ab".repeat(32)),
            "{err}"
        );
        let err = predicate_of(&s, &d, CYCLONEDX_PREDICATE_TYPE).unwrap_err();
        assert!(err.contains(CYCLONEDX_PREDICATE_TYPE), "{err}");
    }
}
