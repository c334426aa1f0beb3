//! `kiln keygen`: a cosign-compatible key pair (`PREFIX.key`, encrypted
//! with `KILN_PASSWORD` or a prompted password, and `PREFIX.pub`).

use std::path::PathBuf;

use clap::Args;

use super::Exit;

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Write PREFIX.key and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    pub out: PathBuf,
}

pub fn exec(args: KeygenArgs) -> Exit {
    let pw = match crate::sign::password("the new private key") {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    match crate::sign::keygen(&args.out, &pw) {
        Ok((key, public)) => {
            println!(
                "private key: {}\npublic key: {}",
                key.display(),
                public.display()
            );
            Exit::Success
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Failure
        }
    }
}
