//! `shieldctl` binary: parses the command line and runs it (see the library).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use shieldctl::Cli;
use shieldctl::output::{self, Format, Output};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::report_error(&format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let format = if cli.json {
        Format::Json
    } else {
        Format::Human
    };
    let mut out = Output::stdout(format);
    runtime.block_on(shieldctl::run(cli, &mut out))?;
    Ok(())
}
