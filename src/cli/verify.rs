//! `kiln verify`: checks an artifact's signatures against a public key.
//! OCI images in a registry are verified now (cosign's format); disk
//! images, AMIs and manifest files are not supported yet.

use std::path::PathBuf;

use clap::Args;

use super::Exit;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// The public key (PEM) signatures must verify with.
    #[arg(long, value_name = "PUB")]
    pub key: Option<PathBuf>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// `registry:REF` or `REF` of an OCI image.
    #[arg(value_name = "ARTIFACT")]
    pub artifact: String,
}

pub async fn exec(args: VerifyArgs) -> Exit {
    let report = |ok: bool, detail: serde_json::Value, text: String| {
        if args.json {
            println!(
                "{}",
                serde_json::json!({ "artifact": args.artifact, "verified": ok, "detail": detail })
            );
        } else if ok {
            println!("{text}");
        } else {
            eprintln!("error: {text}");
        }
        if ok {
            Exit::Success
        } else {
            Exit::Failure
        }
    };
    let Some(key_path) = &args.key else {
        eprintln!("error: give the public key with `--key PUB` (trusted keys from the catalog are not supported yet)");
        return Exit::BadInput;
    };
    let key = match crate::sign::load_public_key(key_path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let reference = args
        .artifact
        .strip_prefix("registry:")
        .unwrap_or(&args.artifact);
    if !reference.contains('/') || std::path::Path::new(reference).exists() {
        return report(false, serde_json::Value::Null, format!("`{}`: verifying files, AMIs and manifests is not supported yet; give an OCI image reference", args.artifact));
    }
    #[cfg(feature = "oci")]
    {
        let image: oci_client::Reference = match reference.parse() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: `{reference}` is not an image reference: {e}");
                return Exit::BadInput;
            }
        };
        match crate::sign::cosign::verify(&image, &key).await {
            Ok(v) => {
                let text = format!(
                    "verified {} ({}): {} valid signature(s) by {}",
                    v.reference,
                    v.digest,
                    v.signatures,
                    key_path.display()
                );
                report(true, serde_json::to_value(&v).expect("serializable"), text)
            }
            Err(e) => report(
                false,
                serde_json::Value::String(e.to_string()),
                e.to_string(),
            ),
        }
    }
    #[cfg(not(feature = "oci"))]
    {
        let _ = key;
        report(
            false,
            serde_json::Value::Null,
            "this kiln was compiled without the `oci` feature".into(),
        )
    }
}
