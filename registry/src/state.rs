//! The state every request handler shares: configuration, storage and the
//! authenticator, behind one `Arc`.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::storage::Storage;

#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub authenticator: Authenticator,
    /// The web UI's sessions client and job status.
    pub ui: crate::ui::UiState,
    /// The pull-through cache's upstreams (`proxy`).
    pub mirror: crate::proxy::Mirror,
    /// Webhooks (`notifications`), when an endpoint is enabled.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// Cheap to clone; derefs to [`App`].
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}
