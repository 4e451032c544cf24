//! The grants that apply to a principal — its own, its groups', `*` and
//! `anonymous` — read from the database and kept for a short time: the
//! grant lookup is the most frequent query of the token endpoint. Also the
//! view of a user's effective permissions built from them.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::db::users::User;
use crate::db::{self, Db};
use crate::error::Error;
use crate::grants::{Entitlements, GrantView};

/// How long grants read from the database are reused. Changes made through
/// this process's API apply at once; changes made by the CLI or another
/// replica within this time — short next to a token's lifetime, which
/// already outlives any revocation.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads the entitlements of `user` (its groups, and the grants of the
/// user, its groups, `*` and `anonymous`), or of anonymous requests when
/// `None`, from the database.
pub async fn load(db: &Db, user: Option<&str>) -> Result<Entitlements, Error> {
    let groups = match user {
        Some(name) => db::groups::subjects_of(db, name).await?,
        None => Vec::new(),
    };
    let grants = db::grants::for_principal(db, user, &groups).await?;
    Ok(Entitlements { groups, grants })
}

/// [`load`], cached for [`CACHE_TTL`].
pub struct GrantCache {
    cache: moka::sync::Cache<Option<String>, Arc<Entitlements>>,
}

impl fmt::Debug for GrantCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantCache").finish_non_exhaustive()
    }
}

impl Default for GrantCache {
    fn default() -> GrantCache {
        GrantCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }
}

impl GrantCache {
    /// The entitlements of `user`, or of anonymous requests when `None`.
    pub async fn for_principal(
        &self,
        db: &Db,
        user: Option<&str>,
    ) -> Result<Arc<Entitlements>, Error> {
        let key = user.map(str::to_owned);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let entitlements = Arc::new(load(db, user).await?);
        self.cache.insert(key, entitlements.clone());
        Ok(entitlements)
    }

    /// Forgets everything; called after any change to grants, groups or
    /// users.
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }
}

/// A user's effective permissions, as `authd user show` and
/// `GET /api/v1/users/{name}/permissions` show them.
#[derive(Debug, Serialize)]
pub struct PermissionsView {
    pub name: String,
    pub admin: bool,
    pub robot: bool,
    pub disabled: bool,
    pub groups: Vec<String>,
    pub grants: Vec<GrantView>,
}

impl PermissionsView {
    /// Reads the permissions of user `name`; a 404 when there is none.
    pub async fn load(db: &Db, name: &str) -> Result<PermissionsView, Error> {
        let user = db::users::get_existing(db, name).await?;
        let entitlements = load(db, Some(&user.name)).await?;
        Ok(PermissionsView::new(&user, &entitlements))
    }

    fn new(user: &User, entitlements: &Entitlements) -> PermissionsView {
        PermissionsView {
            name: user.name.clone(),
            admin: user.is_admin,
            robot: user.is_robot,
            disabled: user.disabled,
            groups: entitlements.groups.clone(),
            grants: entitlements.grants.iter().map(GrantView::from).collect(),
        }
    }
}
