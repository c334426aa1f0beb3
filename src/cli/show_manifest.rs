//! `kiln show-manifest`: a build manifest as a security reviewer reads it —
//! what was built, from which template (and git commit), which
//! provisioners ran what (commands with secrets masked, scripts and files
//! by digest), for how long and how they ended, who signed it. With
//! `--key`, only the signed bytes (`X.dsse.json`) are shown, after their
//! signature verified. [`render`] is shared with `kiln audit`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::Exit;

#[derive(Args, Debug)]
pub struct ShowManifestArgs {
    /// Verify the manifest's signature (`X.dsse.json`) with this public key
    /// first, and show what was signed.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Print the manifest's JSON instead (pretty-printed).
    #[arg(long)]
    pub json: bool,
    /// The build manifest (`X.json`) or its envelope (`X.dsse.json`).
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,
}

pub fn exec(args: ShowManifestArgs) -> Exit {
    let (doc, note) = match load(&args.manifest, args.key.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON serializes")
        );
        return Exit::Success;
    }
    println!("build manifest {} ({note})", args.manifest.display());
    for line in render(&doc) {
        println!("  {line}");
    }
    Exit::Success
}

/// The manifest, from the signed envelope when a key is given.
pub(super) fn load(path: &Path, key: Option<&Path>) -> Result<(serde_json::Value, String), String> {
    let name = path.to_string_lossy();
    let stem = name
        .strip_suffix(".dsse.json")
        .or_else(|| name.strip_suffix(".json"))
        .ok_or_else(|| format!("`{name}`: not a build manifest (`X.json` or `X.dsse.json`)"))?;
    let (envelope, plain) = (
        PathBuf::from(format!("{stem}.dsse.json")),
        PathBuf::from(format!("{stem}.json")),
    );
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read `{}`: {e}", p.display()));
    let (bytes, note) = match key {
        Some(k) => {
            let key = crate::sign::load_public_key(k).map_err(|e| e.to_string())?;
            let body = crate::sign::dsse::verify_bytes(
                &read(&envelope)?,
                crate::sign::provenance::MANIFEST_PAYLOAD_TYPE,
                &key,
            )
            .map_err(|e| format!("`{}`: {e}", envelope.display()))?;
            if plain.is_file() && read(&plain)? != body {
                return Err(format!(
                    "`{}` differs from what was signed in `{}`",
                    plain.display(),
                    envelope.display()
                ));
            }
            (body, format!("signature verified with `{}`", k.display()))
        }
        None => (
            read(&plain)?,
            "signature not checked: give `--key PUB`".into(),
        ),
    };
    let doc = serde_json::from_slice(&bytes).map_err(|e| format!("`{name}`: not JSON: {e}"))?;
    Ok((doc, note))
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("-")
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(16)]
}

/// The lines a reviewer reads (no leading indentation).
pub(crate) fn render(m: &serde_json::Value) -> Vec<String> {
    let mut out = vec![];
    out.push(format!(
        "image:       {} {} (build {}, job {})",
        s(&m["image"]["name"]),
        s(&m["image"]["version"]),
        s(&m["build_id"]),
        s(&m["job"])
    ));
    out.push(format!(
        "ran:         {} → {} with kiln {}",
        s(&m["started"]),
        s(&m["finished"]),
        s(&m["kiln_version"])
    ));
    out.push(format!(
        "template:    {} ({})",
        s(&m["template"]["path"]),
        s(&m["template"]["digest"])
    ));
    let src = &m["template"]["source"];
    if src.is_object() {
        out.push(format!(
            "             git {} at {}{}{}",
            src["repository"].as_str().unwrap_or("(no origin)"),
            s(&src["commit"]),
            match src["path"].as_str() {
                Some(p) => format!(", file {p}"),
                None => String::new(),
            },
            match src["dirty"].as_bool() {
                Some(true) => " — DIRTY: uncommitted changes were built",
                Some(false) => " (clean)",
                None => "",
            }
        ));
    } else {
        out.push("             not in a git work tree".into());
    }
    out.push(format!("base:        {}", s(&m["base"])));
    out.push(format!(
        "artifact:    {} {} ({})",
        s(&m["artifact"]["kind"]),
        s(&m["artifact"]["id"]),
        s(&m["artifact"]["digest"])
    ));
    out.push(format!(
        "signed by:   {}",
        match m["signer"]["key_id"].as_str() {
            Some(k) => format!("key {k}"),
            None => "nobody (the build had no [build.sign])".into(),
        }
    ));
    for sig in m["signatures"].as_array().into_iter().flatten() {
        out.push(format!("signature:   {}", s(sig)));
    }
    if let Some(f) = m["provenance"]["file"].as_str() {
        out.push(format!("provenance:  {f}"));
    }
    let provisioners = m["provisioners"].as_array().cloned().unwrap_or_default();
    out.push(format!("provisioners ({}):", provisioners.len()));
    for p in &provisioners {
        out.push(format!(
            "  #{} {}: {}{}",
            p["index"],
            s(&p["type"]),
            p["status"].as_str().unwrap_or("status not recorded"),
            match p["duration_ms"].as_u64() {
                Some(ms) => format!(
                    " in {:.1}s ({} → {})",
                    ms as f64 / 1000.0,
                    s(&p["started"]),
                    s(&p["finished"])
                ),
                None => String::new(),
            }
        ));
        for c in p["commands"].as_array().into_iter().flatten() {
            out.push(format!("      $ {}", s(c)));
        }
        for sc in p["scripts"].as_array().into_iter().flatten() {
            out.push(format!(
                "      script {} ({})",
                s(&sc["path"]),
                s(&sc["digest"])
            ));
        }
        for src in p["sources"].as_array().into_iter().flatten() {
            out.push(format!(
                "      source {} ({}){}",
                s(&src["path"]),
                s(&src["digest"]),
                match p["settings"]["destination"].as_str() {
                    Some(d) => format!(" → {d}"),
                    None => String::new(),
                }
            ));
        }
        if let Some(env) = p["settings"]["env"].as_object() {
            let vars: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), String::from)))
                .collect();
            out.push(format!("      env {}", vars.join(" ")));
        }
        if let Some(profile) = p["settings"]["profile"].as_str() {
            out.push(format!("      profile {profile}"));
        }
        out.push(format!(
            "      settings digest {} (secrets masked before hashing)",
            short(s(&p["settings_digest"]))
        ));
    }
    for r in m["hardening"].as_array().into_iter().flatten() {
        if let Ok(r) = serde_json::from_value::<
            crate::provisioner::hardening::report::ComplianceReport,
        >(r.clone())
        {
            out.push(format!("compliance: {}", r.headline()));
        }
    }
    out.extend(tests(&m["tests"]));
    let sbom = &m["sbom"];
    if !sbom.is_null() {
        let signed = if sbom["spdx"]["attestation"].is_null() {
            "unsigned"
        } else {
            "signed"
        };
        out.push(format!(
            "sbom:        {} packages ({}), SPDX {} and CycloneDX {}, {signed}; `kiln sbom` prints them",
            sbom["packages"],
            sbom["databases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            short(s(&sbom["spdx"]["digest"])),
            short(s(&sbom["cyclonedx"]["digest"])),
        ));
    }
    out.push(format!("fingerprint: {}", s(&m["fingerprint"])));
    out
}

/// `[[build.test]]` results: the verdict, the counts, where the signed
/// attestation is, and each test not passed with what it observed.
fn tests(t: &serde_json::Value) -> Vec<String> {
    use crate::imagetest::{Outcome, TestReport};
    let Ok(r) = serde_json::from_value::<TestReport>(t.clone()) else {
        return vec![];
    };
    let count = |o| r.tests.iter().filter(|t| t.outcome == o).count();
    let mut out = vec![format!(
        "tests: {} ({} passed, {} warned, {} failed) in a fresh instance of {}{}",
        r.result(),
        count(Outcome::Pass),
        count(Outcome::Skip),
        count(Outcome::Fail),
        short(r.digest.as_deref().unwrap_or("?")),
        match t["attestation"]["file"].as_str() {
            Some(f) => format!("; signed attestation `{f}`"),
            None => "; no signed attestation".into(),
        }
    )];
    for line in r.render().lines() {
        if !line.starts_with("pass") {
            out.push(format!("  {}", line.trim_end()));
        }
    }
    out
}
