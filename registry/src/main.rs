//! `registry serve|gc|fsck|delete-repository`: parse the command line, load
//! the configuration (the same file and `REGISTRY_*` environment for every
//! command), run. Everything else lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use registry::config::StorageDriver;
use registry::config::{Config, parse_duration};
use registry::oci::RepoName;
use registry::storage::Storage;
use registry::storage::gc::GcOptions;

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
    /// Collect unreferenced blobs (and optionally untagged manifests and old
    /// uploads) while the registry keeps serving.
    #[command(alias = "garbage-collect")]
    Gc {
        #[command(flatten)]
        config: ConfigArgs,
        /// Report what would be deleted without deleting anything.
        #[arg(long, short = 'd')]
        dry_run: bool,
        /// Content younger than this is kept (protects pushes in progress).
        #[arg(long, default_value = "1h", value_parser = duration)]
        grace: Duration,
        /// Also delete manifests that no tag reaches.
        #[arg(long, short = 'm')]
        delete_untagged: bool,
        /// Delete uploads started longer ago than this (e.g. 24h).
        #[arg(long, value_parser = duration, default_value = "168h")]
        uploads_older_than: Duration,
    },
    /// Verify every blob's digest and every link.
    Fsck {
        #[command(flatten)]
        config: ConfigArgs,
        /// Move corrupt blobs aside and drop dangling links.
        #[arg(long)]
        repair: bool,
    },
    /// Delete a repository: its manifests, tags, blob links and uploads
    /// (blob data is left to `gc`).
    DeleteRepository {
        /// The repository name, e.g. team/app.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration such as 30m, 1h or 168h"))
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
    fn load(&self) -> anyhow::Result<Config> {
        let path = self
            .config
            .clone()
            .or_else(|| self.positional.clone())
            .or_else(|| std::env::var_os("REGISTRY_CONFIGURATION_PATH").map(PathBuf::from));
        Ok(Config::load(path.as_deref(), std::env::vars())?)
    }

    /// The configuration and its storage, for the offline commands.
    fn storage(&self) -> anyhow::Result<(Config, Arc<Storage>)> {
        let config = self.load()?;
        registry::init_logging(&config);
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        if let StorageDriver::Filesystem { root } = &config.storage
            && !root.is_dir()
        {
            anyhow::bail!("storage root {} does not exist", root.display());
        }
        let storage = Arc::new(registry::storage::open(&config)?);
        Ok((config, storage))
    }
}

fn main() -> ExitCode {
    match try_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("registry: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let config = args.load()?;
            registry::init_logging(&config);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(registry::run(config))?;
        }
        Command::Gc {
            config,
            dry_run,
            grace,
            delete_untagged,
            uploads_older_than,
        } => {
            let (settings, storage) = config.storage()?;
            let opts = GcOptions {
                dry_run,
                grace,
                delete_untagged,
                upload_max_age: Some(uploads_older_than),
                empty_upload_max_age: Some(settings.upload_limits.empty_age),
                uploads_only: false,
                expire_tags: settings.proxy_ttls(),
            };
            let report = storage.gc(&opts)?;
            println!("{report}");
        }
        Command::Fsck { config, repair } => {
            let (_, storage) = config.storage()?;
            let report = storage.fsck(repair)?;
            println!("{report}");
            if !report.is_clean() {
                return Ok(ExitCode::from(1));
            }
        }
        Command::DeleteRepository { name, config } => {
            let (_, storage) = config.storage()?;
            let name = RepoName::parse(&name)?;
            if storage.delete_repository(&name)? {
                println!("deleted repository {name}; run `registry gc` to free its blobs");
            } else {
                anyhow::bail!("no repository {name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
