//! The runtime snapshot: a validated config plus the parts built from it
//! (passdbs, router, TLS configs with their certificates).  Sessions take the snapshot current when they start
//! and keep it; a reload builds a new one and swaps it in atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::route::health::Health;
use crate::route::Router;
use crate::tls::TlsSet;

pub struct Runtime {
    pub config: Config,
    /// Passdbs with the auth cache (new and empty after a reload),
    /// brute-force protection and the hashing pool.
    pub auth: Authenticator,
    pub router: Router,
    /// TLS acceptors and connectors; certificates are read here, so a
    /// reload serves new connections with the new certificates.
    pub tls: TlsSet,
}

impl Runtime {
    /// Build every runtime part; any failure leaves the caller's current
    /// runtime untouched.
    pub fn build(config: Config) -> anyhow::Result<Runtime> {
        Runtime::build_with(config, Arc::new(Health::default()))
    }

    /// [`Runtime::build`], keeping a running backend health table (health
    /// and draining survive a reload).
    pub fn build_with(config: Config, health: Arc<Health>) -> anyhow::Result<Runtime> {
        let auth = Authenticator::from_config(&config).context("building passdbs")?;
        let tls = TlsSet::from_config(&config).context("building TLS")?;
        // Last: it syncs the shared health table, which must stay as it is
        // if anything before fails.
        let router = Router::with_health(&config, health);
        Ok(Runtime {
            config,
            auth,
            router,
            tls,
        })
    }
}

/// The current runtime, swappable as a whole.
pub struct Current {
    path: PathBuf,
    runtime: ArcSwap<Runtime>,
}

impl Current {
    pub fn new(path: &Path, runtime: Runtime) -> Current {
        Current {
            path: path.to_owned(),
            runtime: ArcSwap::from_pointee(runtime),
        }
    }

    /// The snapshot for a new session.
    pub fn load(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Read, validate and build the config file again, without touching
    /// the running config (see [`Current::install`]).
    pub fn prepare(&self) -> anyhow::Result<Runtime> {
        let config = Config::load(&self.path)?;
        let health = self.load().router.health().clone();
        Runtime::build_with(config, health)
    }

    /// Swap `runtime` in: new sessions get it from now on.
    pub fn install(&self, runtime: Runtime) -> Arc<Runtime> {
        let runtime = Arc::new(runtime);
        self.runtime.store(runtime.clone());
        runtime
    }

    /// [`Current::prepare`] then [`Current::install`].  On any error the
    /// running config stays in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        self.install(self.prepare()?);
        Ok(())
    }
}
