//! The policy in force, and its reloading from the file.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use govbus_core::Catalog;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{Policy, PolicyError};

/// The policy in force, shared by the request handlers and the reloader.
#[derive(Debug, Clone, Default)]
pub struct PolicyStore {
    current: Arc<RwLock<Arc<Policy>>>,
}

impl PolicyStore {
    pub fn new(policy: Policy) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(policy))),
        }
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn replace(&self, policy: Policy) {
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
    }

    /// Watches `path` and swaps in each new version that validates.
    pub async fn watch(
        self,
        path: PathBuf,
        catalog: Arc<Catalog>,
        every: Duration,
        stop: CancellationToken,
    ) {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let mut seen: Option<SystemTime> = modified(&path);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let now = modified(&path);
            if now == seen {
                continue;
            }
            seen = now;
            match Policy::load(&path, &catalog) {
                Ok(policy) => {
                    info!(
                        path = %path.display(),
                        grants = policy.grant_count(),
                        subscriptions = policy.subscription_count(),
                        "policy reloaded"
                    );
                    self.replace(policy);
                }
                Err(e) => {
                    error!(error = %e, "policy file rejected; the last good policy stays in force")
                }
            }
        }
    }
}

/// Loads the configured policy, or the empty (deny-all) one.
pub fn initial(path: Option<&Path>, catalog: &Catalog) -> Result<Policy, PolicyError> {
    match path {
        Some(path) => Policy::load(path, catalog),
        None => {
            warn!("no policy_file configured: every request will be denied");
            Ok(Policy::default())
        }
    }
}
