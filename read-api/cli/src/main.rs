//! The `factline` binary: parses the command line, reads the settings, runs the command and
//! exits with its code; an error is one line on stderr.

use std::process::ExitCode;

use clap::Parser;
use factline_cli::config::Settings;
use factline_cli::{run, Cli};
use factline_service::env::Env;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&Env::from_process(), &cli.overrides) {
        Ok(settings) => settings,
        Err(error) => return fail(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("factline: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli, settings)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => fail(&error),
    }
}

fn fail(error: &factline_cli::error::CliError) -> ExitCode {
    eprintln!("factline: {error}");
    ExitCode::from(error.exit_code())
}
