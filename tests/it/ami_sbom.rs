//! `[build.sbom]` on AMIs end to end: the real `kiln` binary against moto
//! for the AWS calls and, for the instance, the test double of
//! `ami_ssh.rs` (read its header): a real Debian `sshd` on loopback that
//! kiln reaches with `communicator = "ssh"`, and a cloud-init stand-in
//! installing each run's key. Through that sshd the "instance" is this
//! host, a real Debian with a real dpkg database, so the SBOM's package
//! set is checked against `dpkg-query` on the same host; the documents
//! against `pyspdxtools` and cyclonedx-python-lib, the attestations
//! against securesystemslib and in-toto-attestation, and the subject's
//! digest against the recipe of docs/sbom.md run with the AWS CLI and jq
//! against moto's own `describe-images`.
//!
//! moto's SSM answers every command with empty output: a build reading an
//! AMI over SSM there must fail, saying so, instead of writing an empty
//! bill (`an_ssm_instance_that_returns_no_output_fails_the_sbom_clearly`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::ami::COPY_REGION;
use crate::ami_ssh::{kiln_booting, Sshd, CIDR4};
use crate::aws::{self, Moto, REGION};
use crate::sbom_check::{assert_valid, cdx_set, printed_sbom, read_json, spdx_set};
use crate::{assert_exit, text, Scratch};

/// The subject digest as docs/sbom.md says anyone can recompute it: the
/// AWS CLI's `describe-images` (here against moto), jq, sha256sum.
fn recomputed_identity_digest(endpoint: &str, region: &str, ami: &str) -> String {
    let script = format!(
        "set -euo pipefail\naws --endpoint-url {endpoint} ec2 describe-images --region {region} --image-ids {ami} \\\n    --query 'Images[0].BlockDeviceMappings[].Ebs.SnapshotId' --output json |\n  jq -cj --arg r {region} --arg i {ami} \\\n    '{{image_id: $i, region: $r, snapshot_ids: (map(select(. != null)) | sort)}}' |\n  sha256sum"
    );
    let o = Command::new("bash")
        .args(["-c", &script])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", text(&o).0, text(&o).1);
    let hex = text(&o).0.split_whitespace().next().unwrap().to_string();
    assert_eq!(hex.len(), 64, "{hex}");
    hex
}

/// The AMI a manifest is about: (region, image id).
fn ami_of(manifest: &serde_json::Value) -> (String, String) {
    let id = manifest["artifact"]["id"].as_str().unwrap();
    let (r, a) = id.split_once(':').unwrap();
    (r.to_string(), a.to_string())
}

/// An AMI built over SSH with `[build.sbom]`, signed, copied to a second
/// region: the SBOM instance is launched from the new AMI (not the build
/// instance) and terminated; both documents validate and list exactly
/// what `dpkg-query` lists on the same host; each region's manifest has
/// documents naming its own AMI, with the identity digest docs/sbom.md's
/// recipe recomputes from moto; the attestations verify and parse; `kiln
/// sbom --key` prints each; nothing is left.
#[tokio::test]
async fn an_ami_sbom_is_read_in_a_fresh_instance_of_it_and_matches_dpkg_query() {
    if !crate::sbom_check::validators_ready()
        || !crate::require(
            "AMI SBOM",
            &["dpkg-query", "aws", "jq", "sha256sum", "bash"],
            false,
        )
    {
        return;
    }
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    s.keygen("cosign", "pw");
    let extra = format!(
        "ssh_source_cidrs = [\"{CIDR4}\"]\ncopy_to = [\"{COPY_REGION}\"]\nencrypted = false"
    );
    let steps = "[[build.provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\n\n[build.sbom]\nenabled = true\n\n[build.sign]\nkey = \"cosign.key\"\n";
    s.write(
        "t.toml",
        &crate::ami_ssh::template(&moto.endpoint(), &extra, steps),
    );
    // The build instance, then the SBOM's own instance of the new AMI.
    let (out, booted) = kiln_booting(&s, &sshd, &moto, 2, |c| {
        c.arg("--json").env("KILN_PASSWORD", "pw");
    })
    .await;
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(out.status.success(), "{all}\nsshd:\n{}", sshd.log());
    assert_ne!(booted[0].key_line, booted[1].key_line, "a key pair per run");
    assert!(all.contains("\"step\":\"sbom\""), "an sbom step ran: {all}");
    assert!(!all.contains("SBOM for ami artifacts"), "{all}");

    let summary = crate::json_summary(&out);
    let manifests: Vec<PathBuf> = summary["jobs"][0]["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| PathBuf::from(a["manifest"].as_str().unwrap()))
        .collect();
    assert_eq!(manifests.len(), 2, "the AMI and its copy: {summary}");
    let built = read_json(&manifests[0]);
    let (region, ami) = ami_of(&built);
    assert_eq!(region, REGION);

    // The SBOM instance: launched from the new AMI, after the read
    // terminated (moto keeps terminated instances listed).
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let desc = ec2.describe_instances().send().await.unwrap();
    let of_ami: Vec<_> = desc
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.image_id() == Some(ami.as_str()))
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.state()
                    .and_then(|s| s.name())
                    .map(|n| n.as_str().to_string()),
            )
        })
        .collect();
    assert_eq!(of_ami.len(), 1, "one instance of {ami}: {of_ami:?}");
    assert_eq!(of_ami[0].1.as_deref(), Some("terminated"));
    assert!(
        all.contains(&format!(
            "test instance {} running from {ami} in {REGION}",
            of_ami[0].0
        )) && all.contains(&format!(
            "reading the package databases of `{REGION}:{ami}`"
        )),
        "{all}"
    );
    crate::ami_ssh::assert_nothing_left(&moto.endpoint()).await;

    // The package set: what dpkg-query (not kiln) reads from the same
    // host's database, name and version, in both documents.
    let rec = &built["sbom"];
    let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
    let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
    assert_valid(&spdx_file, &cdx_file);
    let expected = crate::sbom_check::dpkg_query_packages(Path::new("/"));
    assert!(expected.len() > 50, "{expected:?}");
    let (spdx, cdx) = (read_json(&spdx_file), read_json(&cdx_file));
    let in_spdx = spdx_set(&spdx);
    assert_eq!(
        expected.difference(&in_spdx).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in dpkg-query, not (with that version) in the SPDX document"
    );
    assert_eq!(in_spdx.len(), expected.len(), "SPDX vs dpkg-query");
    assert_eq!(cdx_set(&cdx), expected, "CycloneDX vs dpkg-query");
    assert_eq!(rec["packages"], expected.len());
    assert_eq!(rec["databases"][0], "/var/lib/dpkg/status");
    eprintln!(
        "MEASURED: AMI SBOM {} packages, the same as dpkg-query on the host",
        expected.len()
    );

    // Each region's AMI: its own manifest, its own subject — the name and
    // the identity digest anyone recomputes from describe-images.
    let copy = read_json(&manifests[1]);
    let (copy_region, copy_ami) = ami_of(&copy);
    assert_eq!(copy_region, COPY_REGION);
    assert_ne!(copy_ami, ami);
    assert_eq!(copy["sbom"]["packages"], expected.len());
    let checkers = crate::checkers::ready();
    if checkers {
        s.keygen("other", "x");
    }
    for (manifest_file, m) in [(&manifests[0], &built), (&manifests[1], &copy)] {
        let (region, ami) = ami_of(m);
        let name = format!("ami:{region}/{ami}");
        let hex = recomputed_identity_digest(&moto.endpoint(), &region, &ami);
        let rec = &m["sbom"];
        assert_eq!(rec["subject"]["name"], name.as_str());
        assert_eq!(rec["subject"]["digest"], format!("sha256:{hex}").as_str());
        assert_eq!(rec["subject"]["identity"]["image_id"], ami.as_str());
        let spdx_file = PathBuf::from(rec["spdx"]["file"].as_str().unwrap());
        let cdx_file = PathBuf::from(rec["cyclonedx"]["file"].as_str().unwrap());
        let (spdx, cdx) = (read_json(&spdx_file), read_json(&cdx_file));
        assert_eq!(spdx["name"], name.as_str());
        assert_eq!(spdx["documentDescribes"][0], "SPDXRef-Artifact");
        assert_eq!(spdx["packages"][0]["name"], name.as_str());
        assert_eq!(spdx["packages"][0]["primaryPackagePurpose"], "OTHER");
        assert_eq!(
            spdx["packages"][0]["checksums"][0]["checksumValue"],
            hex.as_str()
        );
        assert_eq!(cdx["metadata"]["component"]["name"], name.as_str());
        assert_eq!(cdx["metadata"]["component"]["type"], "platform");
        assert_eq!(
            cdx["metadata"]["component"]["hashes"][0]["content"],
            hex.as_str()
        );
        if manifest_file == &manifests[1] {
            assert_valid(&spdx_file, &cdx_file);
        }

        // The signed statements: subject the AMI, the document the
        // predicate; checked by securesystemslib and in-toto-attestation.
        for (format, doc, ty) in [
            ("spdx", &spdx, "https://spdx.dev/Document"),
            ("cyclonedx", &cdx, "https://cyclonedx.org/bom"),
        ] {
            let att = &rec[format]["attestation"];
            assert_eq!(att["predicateType"], ty);
            assert!(att["attached"].is_null(), "an AMI has nowhere else: {att}");
            let envelope = PathBuf::from(att["file"].as_str().unwrap());
            assert_eq!(envelope.parent(), manifest_file.parent());
            let st = crate::checkers::checked_statement(s.path(), &envelope, checkers);
            assert_eq!(st["subject"][0]["name"], name.as_str());
            assert_eq!(st["subject"][0]["digest"]["sha256"], hex.as_str());
            assert_eq!(&st["predicate"], doc);

            // `kiln sbom --key`: the manifest's signature, the
            // attestation and the subject checked, then the document.
            let o = crate::ami::kiln(&s)
                .args(["sbom", "--format", format, "--key", "cosign.pub"])
                .arg(manifest_file)
                .output()
                .unwrap();
            assert_eq!(&printed_sbom(&o), doc);
            let out = text(&o).0;

            // `kiln sbom AMI`: the catalog names the manifest; the same
            // bytes, by the documents' name for the AMI and by its id.
            for arg in [name.as_str(), ami.as_str()] {
                let o = crate::ami::kiln(&s)
                    .args(["sbom", "--format", format, "--key", "cosign.pub", arg])
                    .output()
                    .unwrap();
                assert_exit(&o, 0);
                assert_eq!(text(&o).0, out, "{format} of {arg}");
                assert!(text(&o).1.contains("in the catalog"), "{}", text(&o).1);
            }
        }
    }
    // An AMI the catalog does not know: pass its manifest.
    let o = crate::ami::kiln(&s)
        .args(["sbom", "--key", "cosign.pub", "ami-0123456789abcdef0"])
        .output()
        .unwrap();
    assert_exit(&o, 1);
    let err = text(&o).1;
    assert!(
        err.contains("`ami-0123456789abcdef0` is not in the catalog")
            && err.contains("STATE/manifests/"),
        "{err}"
    );

    // The SBOM digests are in what the build signed: the manifest's DSSE.
    let signed = manifests[0].with_extension("dsse.json");
    let env = read_json(&signed);
    let payload = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(payload, std::fs::read(&manifests[0]).unwrap());
    let signed_manifest: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    let spdx_bytes = std::fs::read(rec["spdx"]["file"].as_str().unwrap()).unwrap();
    let spdx_digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&spdx_bytes)))
    };
    assert_eq!(
        signed_manifest["sbom"]["spdx"]["digest"],
        spdx_digest.as_str()
    );
}

/// With `[[build.test]]`s the packages are read in the tests' instance of
/// the AMI, after the checks: no third instance.
#[tokio::test]
async fn with_tests_the_ami_is_read_in_the_test_instance() {
    if !crate::require("AMI SBOM", &["dpkg-query"], false) {
        return;
    }
    let Some(sshd) = Sshd::start() else { return };
    let Some(moto) = Moto::start() else { return };
    let s = Scratch::new();
    let extra = format!("ssh_source_cidrs = [\"{CIDR4}\"]");
    let steps = "[[build.test]]\ntype = \"command\"\nrun = \"test -s /var/lib/dpkg/status\"\n\n[build.sbom]\nenabled = true\n";
    s.write(
        "t.toml",
        &crate::ami_ssh::template(&moto.endpoint(), &extra, steps),
    );
    let (out, _) = kiln_booting(&s, &sshd, &moto, 2, |c| {
        c.arg("--json");
    })
    .await;
    let (o, e) = text(&out);
    let all = format!("{o}{e}");
    assert!(out.status.success(), "{all}\nsshd:\n{}", sshd.log());
    assert!(
        all.contains("in the test instance")
            && all.matches("reading the package databases").count() == 1,
        "{all}"
    );
    let summary = crate::json_summary(&out);
    let manifest = read_json(Path::new(
        summary["jobs"][0]["artifacts"][0]["manifest"]
            .as_str()
            .unwrap(),
    ));
    assert_eq!(manifest["tests"]["tests"][0]["outcome"], "pass");
    let expected = crate::sbom_check::dpkg_query_packages(Path::new("/"));
    assert_eq!(manifest["sbom"]["packages"], expected.len());
    let ec2 = aws::ec2(&moto.endpoint(), REGION);
    let desc = ec2.describe_instances().send().await.unwrap();
    let n = desc
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .count();
    assert_eq!(n, 2, "the build instance and the test instance only");
    crate::ami_ssh::assert_nothing_left(&moto.endpoint()).await;
}

/// moto's SSM runs nothing and returns empty output: the sbom step (its
/// own instance, and the tests' instance when there are tests) fails the
/// build saying the instance returned nothing, no SBOM or manifest is
/// written, and the half-made AMI and every instance are gone.
#[tokio::test]
async fn an_ssm_instance_that_returns_no_output_fails_the_sbom_clearly() {
    let Some(moto) = Moto::start() else { return };
    for tests in ["", "\n[[build.test]]\ntype = \"command\"\nrun = \"true\"\n"] {
        let s = Scratch::new();
        let steps = format!("[[build.provisioner]]\ntype = \"shell\"\ninline = [\"true\"]\n{tests}\n[build.sbom]\nenabled = true\n");
        s.write(
            "t.toml",
            &crate::ami::template(&moto.endpoint(), &steps, "encrypted = false"),
        );
        let out = tokio::task::spawn_blocking({
            let s_path = s.path().to_path_buf();
            let mut c = crate::ami::kiln(&s);
            c.args(["build", "t.toml"]).current_dir(s_path);
            move || c.output().unwrap()
        })
        .await
        .unwrap();
        let (o, e) = text(&out);
        let all = format!("{o}{e}");
        assert_exit(&out, 1);
        assert!(
            all.contains("the instance returned no package database")
                && all.contains("gave no output"),
            "{all}"
        );
        if !tests.is_empty() {
            assert!(all.contains("in the test instance"), "{all}");
        }
        let manifests = s.path().join("state/manifests");
        let written: Vec<_> = walk(&manifests);
        assert!(written.is_empty(), "nothing recorded: {written:?}");
        crate::ami::assert_nothing_left(&moto.endpoint()).await;
        let images = aws::own_images(&aws::ec2(&moto.endpoint(), REGION)).await;
        assert!(
            images.iter().all(|i| i.state != "available"),
            "the AMI is deregistered: {:?}",
            images.iter().map(|i| (&i.id, &i.state)).collect::<Vec<_>>()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
