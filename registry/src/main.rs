//! `registry serve [CONFIG]`: parse the command line, load the
//! configuration, run. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "registry",
    version,
    about = "OCI distribution registry, a drop-in for registry:2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API.
    Serve(ConfigArgs),
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// Configuration file (distribution's format), as `registry serve FILE`.
    #[arg(value_name = "CONFIG")]
    positional: Option<PathBuf>,
    /// Configuration file; also REGISTRY_CONFIGURATION_PATH.
    #[arg(long, short, value_name = "FILE", conflicts_with = "positional")]
    config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<registry::config::Config> {
        let path = self
            .config
            .clone()
            .or_else(|| self.positional.clone())
            .or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from));
        Ok(registry::config::Config::load(
            path.as_deref(),
            std::env::vars(),
        )?)
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("registry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.load()?;
            registry::init_logging(&config);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(registry::run(config))
        }
    }
}
