//! The CLI of access tokens, groups and effective permissions:
//! `authd token create|list|revoke`, `authd group add|del|list|member add|del`
//! and `authd user show`. Changes are made as the actor `cli`, with the
//! powers of an admin, and reach a running server within the grants
//! cache's lifetime (2 s).

use clap::Subcommand;

use super::{ACTOR, open_db, print_grants, print_json};
use crate::access_tokens::{AccessTokenView, Expiry, TokenScope};
use crate::config::Config;
use crate::db::{access_tokens as token_db, groups, users};
use crate::grant_cache::PermissionsView;
use crate::minting;
use crate::names::parse_group_name;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make an access token for OWNER (a user or a robot) and print it
    /// (shown once). It works as OWNER's password, for its scopes only.
    Create {
        owner: String,
        /// A name to recognise it by, unique per owner.
        name: String,
        /// PATTERN=ACTIONS (`ci/*=pull,push`), or `registry:catalog`;
        /// repeatable. No wider than OWNER's grants.
        #[arg(long = "scope", required = true, value_name = "SCOPE")]
        scopes: Vec<String>,
        /// `90d`, `12h`, `30m` or `never` (if allowed by
        /// access_tokens.allow_never); default access_tokens.default_ttl_days.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
        /// Let the token open the admin API (OWNER must be an admin).
        #[arg(long)]
        admin: bool,
    },
    /// List access tokens (of OWNER, or all).
    List {
        owner: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an access token by id (and the logins made with it).
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group; grant to it with the subject @NAME.
    Add { name: String },
    /// Delete a group and its grants.
    Del { name: String },
    /// List groups and their members.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add or remove members.
    #[command(subcommand)]
    Member(MemberCommand),
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add USER to GROUP.
    Add { group: String, user: String },
    /// Remove USER from GROUP.
    Del { group: String, user: String },
}

pub async fn token(cmd: TokenCommand, config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    match cmd {
        TokenCommand::Create {
            owner,
            name,
            scopes,
            expires,
            admin,
        } => {
            let owner = users::get_existing(&db, &owner).await?;
            let expiry = match expires {
                Some(text) => Expiry::parse(&text, config.access_tokens.allow_never)?,
                None => Expiry::After(config.access_tokens.default_ttl_days as i64 * 86_400),
            };
            let request = minting::Request {
                name,
                scopes: scopes
                    .iter()
                    .map(|s| TokenScope::parse_cli(s))
                    .collect::<Result<_, _>>()?,
                expiry,
                admin,
            };
            let (token, stored) = minting::create(&db, &owner, &request, true, ACTOR).await?;
            eprintln!(
                "created access token {} {:?} for {:?}, expires {}; it is shown only now:",
                stored.id,
                stored.name,
                stored.owner,
                AccessTokenView::from(&stored)
                    .expires_at
                    .unwrap_or_else(|| "never".into())
            );
            println!("{token}");
        }
        TokenCommand::List { owner, json } => {
            let list = token_db::list(&db, owner.as_deref()).await?;
            let views: Vec<AccessTokenView> = list.iter().map(AccessTokenView::from).collect();
            if json {
                print_json(&views)?;
            } else {
                println!(
                    "{:<32} {:<20} {:<20} {:<20} {:<20} SCOPES",
                    "ID", "OWNER", "NAME", "EXPIRES", "LAST USED"
                );
                for t in views {
                    let scopes: Vec<String> = t
                        .scopes
                        .iter()
                        .map(|s| format!("{}={}", s.pattern, s.actions.join(",")))
                        .collect();
                    println!(
                        "{:<32} {:<20} {:<20} {:<20} {:<20} {}{}",
                        t.id,
                        t.owner,
                        t.name,
                        t.expires_at.as_deref().unwrap_or("never"),
                        t.last_used_at.as_deref().unwrap_or("-"),
                        scopes.join(" "),
                        if t.admin { " +admin" } else { "" }
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            token_db::delete(&db, &id, None, ACTOR).await?;
            println!("revoked access token {id}");
        }
    }
    db.close().await;
    Ok(())
}

pub async fn group(cmd: GroupCommand, config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    match cmd {
        GroupCommand::Add { name } => {
            let name = parse_group_name(&name)?;
            groups::create(&db, name, ACTOR).await?;
            println!("created group {name:?}");
        }
        GroupCommand::Del { name } => {
            let name = parse_group_name(&name)?;
            groups::delete(&db, name, ACTOR).await?;
            println!("deleted group {name:?} and its grants");
        }
        GroupCommand::List { json } => {
            let list = groups::list(&db).await?;
            if json {
                print_json(&list)?;
            } else {
                println!("{:<24} MEMBERS", "GROUP");
                for g in list {
                    println!("{:<24} {}", g.name, g.members.join(" "));
                }
            }
        }
        GroupCommand::Member(MemberCommand::Add { group, user }) => {
            let group = parse_group_name(&group)?;
            let added = groups::add_member(&db, group, &user, ACTOR).await?;
            println!(
                "{user:?} {} a member of {group:?}",
                if added { "is now" } else { "already was" }
            );
        }
        GroupCommand::Member(MemberCommand::Del { group, user }) => {
            let group = parse_group_name(&group)?;
            groups::remove_member(&db, group, &user, ACTOR).await?;
            println!("removed {user:?} from {group:?}");
        }
    }
    db.close().await;
    Ok(())
}

/// `authd user show NAME`: the user, its groups and every grant that
/// applies to it.
pub async fn show_user(name: &str, json: bool, config: &Config) -> anyhow::Result<()> {
    let db = open_db(config).await?;
    let view = PermissionsView::load(&db, name).await?;
    db.close().await;
    if json {
        return print_json(&view);
    }
    println!(
        "user {:?}: admin={} robot={} disabled={}",
        view.name, view.admin, view.robot, view.disabled
    );
    println!("groups: {}", view.groups.join(" "));
    print_grants(&view.grants);
    Ok(())
}
