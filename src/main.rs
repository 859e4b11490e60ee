//! `image-converting-server`: parses flags, loads the configuration, installs logging
//! and hands over to [`ics::cli::run`].

use std::process::ExitCode;

use clap::Parser;

use ics::cli::{self, Cli};
use ics::config::Config;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { cli::exit::USAGE } else { cli::exit::OK });
        }
    };
    let config = match Config::load_files(cli.config.as_deref(), cli.env_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::from(cli::exit::FATAL);
        }
    };
    ics::logging::init(&config.log);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    ics::memory::return_large_frees_to_the_os();
    cli::run(cli, config)
}
