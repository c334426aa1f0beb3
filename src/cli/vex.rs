//! `kiln vex sign FILE --key KEY [--out OUT]`: checks an OpenVEX document
//! the way `kiln rescan` reads it (every statement attributed and with a
//! `kiln:expires`) and signs it with a cosign-format key into a DSSE
//! envelope (payload type `application/vnd.openvex+json`), which
//! `kiln rescan --vex OUT --vex-key PUB` verifies before its statements
//! count (docs/rescan.md).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::{Args, Subcommand};

use super::Exit;
use crate::vuln::vex;

#[derive(Args, Debug)]
pub struct VexArgs {
    #[command(subcommand)]
    pub command: VexCommand,
}

#[derive(Subcommand, Debug)]
pub enum VexCommand {
    /// Sign an OpenVEX document into a DSSE envelope for `kiln rescan --vex-key`.
    Sign {
        /// The OpenVEX document (JSON).
        file: PathBuf,
        /// The cosign private key (password in KILN_PASSWORD, or asked);
        /// default: the key in KILN_SIGNING_KEY.
        #[arg(long, value_name = "KEY")]
        key: Option<PathBuf>,
        /// Where to write the envelope (default: FILE with `.dsse.json`).
        #[arg(long, value_name = "OUT")]
        out: Option<PathBuf>,
    },
}

pub async fn exec(args: VexArgs) -> Exit {
    match args.command {
        VexCommand::Sign { file, key, out } => sign(&file, key.as_deref(), out).await,
    }
}

async fn sign(file: &Path, key: Option<&Path>, out: Option<PathBuf>) -> Exit {
    let bytes = match fs_err::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let name = file.display().to_string();
    let doc: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {name}:{}:{}: not JSON: {e}", e.line(), e.column());
            return Exit::BadInput;
        }
    };
    if doc.get("payloadType").is_some() {
        eprintln!("error: {name} is a DSSE envelope already: sign the OpenVEX document itself");
        return Exit::BadInput;
    }
    let statements = match vex::parse(&doc, &name, SystemTime::now()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    for s in statements.iter().filter(|s| s.expired) {
        eprintln!(
            "warning: statement {} expired at {}: `kiln rescan` will ignore it",
            s.at, s.expires
        );
    }
    if key.is_none() && std::env::var("KILN_SIGNING_KEY").map_or(true, |k| k.is_empty()) {
        eprintln!("error: give the signing key with `--key KEY` (or set KILN_SIGNING_KEY)");
        return Exit::BadInput;
    }
    let spec = key.map(|k| k.display().to_string()).unwrap_or_default();
    let signing = match crate::sign::load_signing_key(&spec, Path::new(".")) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    // The document's own bytes are signed, exactly as written.
    let env = match crate::sign::dsse::sign(vex::OPENVEX_PAYLOAD_TYPE, &bytes, &signing).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Failure;
        }
    };
    let out = out.unwrap_or_else(|| file.with_extension("dsse.json"));
    let mut text = serde_json::to_vec(&env).expect("an envelope serializes");
    text.push(b'\n');
    if let Err(e) = fs_err::write(&out, text) {
        eprintln!("error: {e}");
        return Exit::Failure;
    }
    println!(
        "signed {} statement(s) of `{name}` with key {} into `{}`",
        statements.len(),
        signing.key_id(),
        out.display()
    );
    Exit::Success
}
