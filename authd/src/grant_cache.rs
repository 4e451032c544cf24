//! The grants that apply to a principal, read from the database and kept
//! for a short time: the grant lookup is the most frequent query of the
//! token endpoint.

use std::fmt;
use std::sync::Arc;

use crate::db::Db;
use crate::error::Error;
use crate::grants::Grant;

/// How long grants read from the database are reused. Changes made through
/// this process's API apply at once; changes made by the CLI or another
/// replica within this time — short next to a token's lifetime, which
/// already outlives any revocation.
pub const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The grants that apply to a principal, cached for [`CACHE_TTL`]: the
/// grant lookup is the most frequent query of the token endpoint.
pub struct GrantCache {
    cache: moka::sync::Cache<Option<String>, Arc<Vec<Grant>>>,
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
    /// The grants of `user` (with `*` and `anonymous`), or of anonymous
    /// requests when `None`.
    pub async fn for_principal(
        &self,
        db: &Db,
        user: Option<&str>,
    ) -> Result<Arc<Vec<Grant>>, Error> {
        let key = user.map(str::to_owned);
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit);
        }
        let grants = Arc::new(crate::db::grants::for_principal(db, user).await?);
        self.cache.insert(key, grants.clone());
        Ok(grants)
    }

    /// Forgets everything; called after any change to grants or users.
    pub fn invalidate(&self) {
        self.cache.invalidate_all();
    }
}
