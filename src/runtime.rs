//! The runtime snapshot: a validated config plus the parts built from it
//! (passdbs, router).  Sessions take the snapshot current when they start
//! and keep it; a reload builds a new one and swaps it in atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::auth::PassDbChain;
use crate::config::Config;
use crate::route::Router;

pub struct Runtime {
    pub config: Config,
    pub passdbs: PassDbChain,
    pub router: Router,
}

impl Runtime {
    /// Build every runtime part; any failure leaves the caller's current
    /// runtime untouched.
    pub fn build(config: Config) -> anyhow::Result<Runtime> {
        let passdbs = PassDbChain::from_config(&config).context("building passdbs")?;
        let router = Router::from_config(&config);
        Ok(Runtime {
            config,
            passdbs,
            router,
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

    /// Read, validate and build the config file again, then swap.  On any
    /// error the running config stays in force.
    pub fn reload(&self) -> anyhow::Result<()> {
        let config = Config::load(&self.path)?;
        let runtime = Runtime::build(config)?;
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }
}
