//! `kiln completions SHELL` and `kiln man`: generated from the clap definition.

use clap::{Args, CommandFactory};

use super::{Cli, Exit};

#[derive(Args, Debug)]
pub struct CompletionArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

pub fn completions(args: CompletionArgs) -> Exit {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "kiln",
        &mut std::io::stdout(),
    );
    Exit::Success
}

pub fn man() -> Exit {
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: cannot write the man page: {e}");
            Exit::Failure
        }
    }
}
