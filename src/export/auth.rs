//! Credentials read from files, shared by the exporters: a bearer token or
//! a basic-auth password, re-read at most once a minute (mounted secrets
//! rotate).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A secret (bearer token, password) read from a file, trimmed.
pub struct Token {
    path: PathBuf,
    cached: RwLock<(Instant, String)>,
}

impl Token {
    /// Reads the file now: a missing or unreadable file is a start-up error.
    pub fn new(path: &Path) -> Result<Token, String> {
        Ok(Token {
            path: path.to_path_buf(),
            cached: RwLock::new((Instant::now(), Token::load(path)?)),
        })
    }

    fn load(path: &Path) -> Result<String, String> {
        crate::fsread::read_string(path, crate::fsread::SECRET_MAX, "credentials file")
            .map(|s| s.trim().to_string())
    }
    /// The secret, from an async task: the file is re-read (when the cached
    /// copy is older than a minute) on a blocking thread.
    pub async fn current(self: &Arc<Self>) -> String {
        {
            let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if c.0.elapsed() < Duration::from_secs(60) {
                return c.1.clone();
            }
        }
        let me = self.clone();
        match tokio::task::spawn_blocking(move || me.get()).await {
            Ok(t) => t,
            Err(_) => self
                .cached
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .clone(),
        }
    }

    /// The secret, re-read when the cached one is older than a minute
    /// (blocking file I/O: not on an async worker).
    pub fn get(&self) -> String {
        {
            let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
            if c.0.elapsed() < Duration::from_secs(60) {
                return c.1.clone();
            }
        }
        let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
        match Token::load(&self.path) {
            Ok(t) => *c = (Instant::now(), t),
            Err(e) => {
                tracing::warn!(error = %e, "keeping the previously read credentials");
                c.0 = Instant::now();
            }
        }
        c.1.clone()
    }
}
