//! The application state shared by every request: configuration, database,
//! signing keys and the password checker, behind one `Arc`.

use std::ops::Deref;
use std::sync::Arc;

use crate::config::Config;
use crate::db::{Db, users};
use crate::grant_cache::GrantCache;
use crate::keys::KeyStore;
use crate::login::Authenticator;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub db: Db,
    pub keys: KeyStore,
    pub auth: Authenticator,
    pub grants: GrantCache,
}

/// Cheap to clone; handlers get it through `State`.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

impl AppState {
    /// Opens the database (creating and migrating it), the signing keys
    /// (generating one if needed) and, when there are no users yet, creates
    /// the first admin. Returns the state and the admin's password when it
    /// was generated here (and so must be shown once).
    pub async fn init(config: Config) -> anyhow::Result<(AppState, Option<String>)> {
        // The metrics recorder before any background task registers a
        // series: one registered earlier would be lost.
        service::metrics::handle();
        crate::util::create_private_dir(&config.data_dir)?;
        let db = Db::open(&config.database_location()).await?;
        let keys = KeyStore::open(&config)?;
        let auth = Authenticator::new(&config, &db)?;
        let (password, generated) = match &config.admin.password {
            Some(p) => (p.clone(), false),
            None => (crate::password::random_password(), true),
        };
        let hasher = crate::password::Hasher::new(config.password.argon2)?;
        let created =
            users::create_first_admin(&db, &config.admin.user, || hasher.hash(password.as_bytes()))
                .await?;
        if created {
            tracing::info!(user = %config.admin.user, "created the first admin user");
        }
        let outside_rule: Vec<String> = users::list(&db)
            .await?
            .into_iter()
            .map(|u| u.name)
            .filter(|n| !crate::names::is_valid_user_name(n))
            .collect();
        if !outside_rule.is_empty() {
            tracing::warn!(
                users = ?outside_rule,
                "user names that are not lowercase repository path components: they still \
                 log in, but no ${{user}} grant matches a repository of theirs; recreate them \
                 under a valid name"
            );
        }
        let app = App {
            config,
            db,
            keys,
            auth,
            grants: GrantCache::default(),
        };
        Ok((
            AppState(Arc::new(app)),
            (created && generated).then_some(password),
        ))
    }
}
