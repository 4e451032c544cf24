//! The command line: `serve`, and the admin commands that work directly on
//! the database and key directory the server uses (found through the same
//! `--config` file and `AUTHD_*` variables): `user`, `grant`,
//! `import-htpasswd`, `audit`, `keys` and `migrate-db`; `token` and `group` are in [`access`].
//!
//! Passwords are read from stdin (`--password-stdin`) or prompted for on
//! the terminal, never taken from the command line, where other users of
//! the machine could see them in the process list.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod access;

use crate::config::Config;
use crate::db::users::{self, Changes, UserView};
use crate::db::{Db, Location};
use crate::error::Error;
use crate::grants::{GrantView, parse_grant};
use crate::keys::KeyStore;
use crate::names::check_user_name;

/// Actor recorded in the audit log for CLI changes.
const ACTOR: &str = "cli";
/// Subject of exported certificates.
const CERT_COMMON_NAME: &str = "authd token signer";

#[derive(Debug, Parser)]
#[command(
    name = "authd",
    version,
    about = "Token auth service for the container registry"
)]
pub struct Cli {
    /// YAML configuration file (see authd/config.example.yml).
    #[arg(long, global = true, env = "AUTHD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the token endpoint, JWKS and admin API (the default).
    Serve,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage grants.
    #[command(subcommand)]
    Grant(GrantCommand),
    /// Manage access tokens (for CI jobs and robots).
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Manage groups (grant subjects @NAME).
    #[command(subcommand)]
    Group(access::GroupCommand),
    /// Import users from an htpasswd file ("-" for stdin).
    ImportHtpasswd {
        file: PathBuf,
        /// Import the valid lines of a file that has invalid ones.
        #[arg(long)]
        skip_invalid: bool,
        /// Replace the passwords of existing users (never of admins);
        /// without it existing users are skipped and reported.
        #[arg(long)]
        overwrite: bool,
    },
    /// Show the audit log, newest first.
    Audit(AuditArgs),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a whole database (users, groups, grants, access and refresh
    /// tokens, audit log) into another, empty one: SQLite to PostgreSQL
    /// or back. The signing keys stay in the key directory.
    MigrateDb {
        /// The database to read: a SQLite path or a postgres:// URL.
        #[arg(long, value_name = "PATH|URL")]
        from: String,
        /// The empty database to fill (created and migrated if needed).
        #[arg(long, value_name = "PATH|URL")]
        to: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Add {
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
        /// A robot: no password, it logs in with its access tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        robot: bool,
    },
    /// Show a user, its groups and every grant that applies to it.
    Show {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a user, its grants and refresh tokens.
    Del { name: String },
    /// Set a user's password (ends its refresh tokens).
    Passwd {
        name: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a user's admin or disabled flag.
    Set {
        name: String,
        #[arg(long)]
        admin: Option<bool>,
        #[arg(long)]
        disabled: Option<bool>,
    },
}

#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// Grant SUBJECT (a user, "anonymous" or "*") ACTIONS (pull,push,delete
    /// or *) on repositories matching PATTERN (a glob; ${user} is the user's
    /// name), or the catalog with PATTERN registry:catalog.
    Add {
        subject: String,
        pattern: String,
        actions: Option<String>,
    },
    /// Delete a grant by id.
    Del { id: i64 },
    /// List grants.
    List {
        #[arg(long)]
        subject: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Entries about this user or made by them.
    #[arg(long)]
    user: Option<String>,
    /// An action (user.create) or a family of them (login).
    #[arg(long)]
    action: Option<String>,
    /// From this time on (RFC 3339, e.g. 2026-01-02T03:04:05Z).
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Up to this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Only entries older than this id (the next page).
    #[arg(long)]
    before: Option<i64>,
    /// At most this many entries (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=crate::db::audit::MAX_LIMIT))]
    limit: i64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn parse_time(text: &str) -> Result<i64, String> {
    crate::util::parse_rfc3339(text)
        .ok_or_else(|| "expected an RFC 3339 time such as 2026-01-02T03:04:05Z".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key; the old one stays published until its tokens
    /// have expired. A running server picks the new key up within seconds.
    Rotate,
    /// Write PEM certificates of the published keys, for distribution's
    /// auth.token.rootcertbundle.
    ExportCert {
        /// Output file (default: stdout).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the published keys.
    List,
}

/// Runs a parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let (config, warnings) = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authd: configuration: {e}");
            return ExitCode::from(2);
        }
    };
    service::log::init(&config.log.level, config.log.formatter);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authd: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    match runtime.block_on(execute(command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => crate::run(config).await,
        Command::User(cmd) => user(cmd, &config).await,
        Command::Grant(cmd) => grant(cmd, &config).await,
        Command::Token(cmd) => access::token(cmd, &config).await,
        Command::Group(cmd) => access::group(cmd, &config).await,
        Command::ImportHtpasswd {
            file,
            skip_invalid,
            overwrite,
        } => {
            let options = crate::htpasswd::Options {
                skip_invalid,
                overwrite,
            };
            import_htpasswd(&file, options, &config).await
        }
        Command::Audit(args) => audit(args, &config).await,
        Command::Keys(cmd) => keys(&cmd, &config),
        Command::MigrateDb { from, to } => migrate_db(&from, &to).await,
    }
}

async fn migrate_db(from: &str, to: &str) -> anyhow::Result<()> {
    let (from, to) = (Location::parse(from), Location::parse(to));
    if let Location::Sqlite(p) = &from
        && !p.is_file()
    {
        anyhow::bail!("{}: no such database file", p.display());
    }
    anyhow::ensure!(from != to, "--from and --to are the same database");
    let source = Db::open(&from).await?;
    let target = Db::open(&to).await?;
    let copied = crate::db::copy::copy_all(&source, &target).await?;
    source.close().await;
    target.close().await;
    println!("copied {from} to {to}: {}", serde_json::to_string(&copied)?);
    Ok(())
}

async fn open_db(config: &Config) -> anyhow::Result<Db> {
    Db::open(&config.database_location()).await
}

/// Reads a new password: the first line of stdin, or twice from the
/// terminal.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let line = line.strip_suffix('\n').unwrap_or(&line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        return Ok(line.to_owned());
    }
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("no terminal to prompt for the password on: use --password-stdin");
    }
    let first = rpassword::prompt_password("New password: ")?;
    let second = rpassword::prompt_password("Repeat it: ")?;
    if first != second {
        anyhow::bail!("the passwords differ");
    }
    Ok(first)
}

fn hash_new_password(config: &Config, password: &str) -> anyhow::Result<String> {
    crate::password::check_new_password(password, config.password.min_length)?;
    Ok(crate::password::Hasher::new(config.password.argon2)?.hash(password.as_bytes())?)
}

/// Grants as the table of `grant list` and `user show`.
fn print_grants(grants: &[GrantView]) {
    println!(
        "{:<6} {:<24} {:<11} {:<40} ACTIONS",
        "ID", "SUBJECT", "TYPE", "PATTERN"
    );
    for g in grants {
        println!(
            "{:<6} {:<24} {:<11} {:<40} {}",
            g.id,
            g.subject,
            g.resource_type,
            g.pattern,
            g.actions.join(",")
        );
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    match cmd {
        UserCommand::Add {
            name,
            admin,
            robot: true,
            ..
        } => {
            check_user_name(&name)?;
            users::create_robot(&db, &name, admin, ACTOR).await?;
            println!("created robot {name:?}; make it tokens with `authd token create`");
        }
        UserCommand::Show { name, json } => {
            db.close().await;
            return access::show_user(&name, json, config).await;
        }
        UserCommand::Add {
            name,
            admin,
            password_stdin,
            robot: false,
        } => {
            check_user_name(&name)?;
            // Refuse a taken name before asking for a password.
            if users::get(&db, &name).await?.is_some() {
                anyhow::bail!("user {name:?} already exists");
            }
            let password = read_password(password_stdin)?;
            let hash = hash_new_password(config, &password)?;
            users::create(&db, &name, &hash, admin, false, ACTOR).await?;
            println!(
                "created user {name:?}{}",
                if admin { " (admin)" } else { "" }
            );
        }
        UserCommand::Del { name } => {
            users::delete(&db, &name, ACTOR).await?;
            println!("deleted user {name:?}");
        }
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            users::get_existing(&db, &name).await?;
            let password = read_password(password_stdin)?;
            let hash = hash_new_password(config, &password)?;
            let changes = Changes {
                password_hash: Some(hash),
                ..Changes::default()
            };
            users::update(&db, &name, &changes, ACTOR).await?;
            println!("password of {name:?} changed; its refresh tokens are revoked");
        }
        UserCommand::List { json } => {
            let list = users::list(&db).await?;
            let views: Vec<UserView> = list.iter().map(UserView::from).collect();
            if json {
                print_json(&views)?;
            } else {
                println!(
                    "{:<32} {:<6} {:<9} {:<13} CREATED",
                    "NAME", "ADMIN", "DISABLED", "HASH"
                );
                for u in views {
                    println!(
                        "{:<32} {:<6} {:<9} {:<13} {}",
                        u.name, u.admin, u.disabled, u.password_format, u.created_at
                    );
                }
            }
        }
        UserCommand::Set {
            name,
            admin,
            disabled,
        } => {
            let changes = Changes {
                password_hash: None,
                admin,
                disabled,
            };
            let u = users::update(&db, &name, &changes, ACTOR).await?;
            println!(
                "user {name:?}: admin={} disabled={}",
                u.is_admin, u.disabled
            );
        }
    }
    db.close().await;
    Ok(())
}

async fn grant(cmd: GrantCommand, config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    match cmd {
        GrantCommand::Add {
            subject,
            pattern,
            actions,
        } => {
            let actions: Vec<String> = actions.into_iter().collect();
            let (target, set) = parse_grant(&subject, None, &pattern, &actions)?;
            let (g, created) =
                crate::db::grants::upsert(&db, &subject, &target, set, ACTOR).await?;
            let v = GrantView::from(&g);
            println!(
                "{} grant {}: {} {}:{} {}",
                if created { "created" } else { "updated" },
                v.id,
                v.subject,
                v.resource_type,
                v.pattern,
                v.actions.join(",")
            );
        }
        GrantCommand::Del { id } => {
            crate::db::grants::delete(&db, id, ACTOR).await?;
            println!("deleted grant {id}");
        }
        GrantCommand::List { subject, json } => {
            let list = crate::db::grants::list(&db, subject.as_deref()).await?;
            let views: Vec<GrantView> = list.iter().map(GrantView::from).collect();
            if json {
                print_json(&views)?;
            } else {
                print_grants(&views);
            }
        }
    }
    db.close().await;
    Ok(())
}

async fn audit(args: AuditArgs, config: &Config) -> anyhow::Result<()> {
    let filter = crate::db::audit::Filter {
        user: args.user,
        action: args.action,
        since: args.since,
        until: args.until,
        before: args.before,
        limit: args.limit,
    };
    let db = open_db(config).await?;
    let entries = crate::db::audit::query(&db, &filter).await;
    db.close().await;
    let entries = entries?;
    if args.json {
        return print_json(&entries);
    }
    println!(
        "{:<8} {:<20} {:<24} {:<18} {:<24} DETAIL",
        "ID", "AT", "ACTOR", "ACTION", "TARGET"
    );
    for e in entries {
        println!(
            "{:<8} {:<20} {:<24} {:<18} {:<24} {}",
            e.id,
            crate::util::rfc3339(e.at),
            e.actor,
            e.action,
            e.target,
            e.detail
        );
    }
    Ok(())
}

async fn import_htpasswd(
    file: &Path,
    options: crate::htpasswd::Options,
    config: &Config,
) -> anyhow::Result<()> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?
    };
    let db = open_db(config).await?;
    let result = crate::htpasswd::import(&db, &text, options, ACTOR).await;
    db.close().await;
    match result {
        Ok(report) => {
            for e in &report.errors {
                eprintln!("{}:{}: skipped: {}", file.display(), e.line, e.message);
            }
            for s in &report.counts.skipped {
                let why = match s.reason {
                    "admin" => "an admin, never changed by an import",
                    _ => "exists (replace with --overwrite)",
                };
                eprintln!("user {:?} skipped: {why}", s.name);
            }
            println!(
                "imported {}, updated {}, unchanged {}, rejected {}, skipped {}",
                report.counts.imported,
                report.counts.updated,
                report.counts.unchanged,
                report.rejected,
                report.counts.skipped.len()
            );
            Ok(())
        }
        Err(Error::BadRequest {
            message, details, ..
        }) => {
            let lines = details
                .as_ref()
                .and_then(|d| d.get("lines"))
                .and_then(|l| l.as_array())
                .cloned()
                .unwrap_or_default();
            for l in lines {
                eprintln!(
                    "{}:{}: {}",
                    file.display(),
                    l["line"],
                    l["message"].as_str().unwrap_or_default()
                );
            }
            anyhow::bail!("{message}")
        }
        Err(e) => Err(e.into()),
    }
}

fn keys(cmd: &KeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = KeyStore::open(config)?;
    match cmd {
        KeysCommand::Rotate => {
            let (key, removed) = store.rotate()?;
            for r in removed {
                println!("deleted expired key {r}");
            }
            println!("new signing key {} ({:?})", key.kid, key.algorithm());
        }
        KeysCommand::ExportCert { out } => {
            let pem = store.certificates_pem(CERT_COMMON_NAME)?;
            match out {
                Some(path) => {
                    std::fs::write(path, &pem)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
                    eprintln!("wrote {}", path.display());
                }
                None => std::io::stdout().write_all(pem.as_bytes())?,
            }
        }
        KeysCommand::List => {
            let set = store.current();
            for (i, k) in set.keys.iter().enumerate() {
                println!(
                    "{} {:?} {}{}",
                    k.kid,
                    k.algorithm(),
                    k.file_name,
                    if i == 0 { " (signing)" } else { " (retired)" }
                );
            }
        }
    }
    Ok(())
}
