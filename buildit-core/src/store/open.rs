//! Choosing and opening a backend from a location: a SQLite file or a PostgreSQL URL.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use super::api::Store;
use super::model::StoreError;
use crate::config::Variable;
use crate::system::StoreConfig;

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// A SQLite database file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl StoreLocation {
    /// Reads `postgres://...` / `postgresql://...`, or `sqlite:PATH` / `sqlite://PATH`.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(url.to_owned()));
        }
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|path| !path.is_empty())
        {
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::Unsupported(redact(url)))
    }

    /// The location a system configuration's `store` names; `env` resolves `{env.NAME}` in a PostgreSQL URL.
    pub fn from_config(
        config: &StoreConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, StoreError> {
        match config {
            StoreConfig::Sqlite { path } => Ok(Self::Sqlite(path.clone())),
            StoreConfig::Postgres { url } => {
                let missing = std::cell::RefCell::new(None);
                let rendered = url.render(
                    |variable| match variable {
                        Variable::Env(name) => {
                            let value = env(name);
                            if value.is_none() {
                                missing.borrow_mut().get_or_insert_with(|| name.clone());
                            }
                            value.map(Cow::Owned)
                        }
                        _ => None,
                    },
                    false,
                );
                if let Some(name) = missing.into_inner() {
                    return Err(StoreError::Open {
                        location: redact(url.as_str()),
                        message: format!("the URL uses `{{env.{name}}}`, which is not set"),
                    });
                }
                Ok(Self::Postgres(rendered))
            }
        }
    }

    /// For messages: the path, or the URL with any password hidden.
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(path) => path.display().to_string(),
            Self::Postgres(url) => redact(url),
        }
    }
}

/// `scheme://user:secret@host/db` -> `scheme://user:***@host/db`; also hides `password=` query values.
pub(crate) fn redact(url: &str) -> String {
    let mut text = url.to_owned();
    if let Some(scheme_end) = text.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = text[rest_start..]
            .find(['/', '?'])
            .map_or(text.len(), |end| rest_start + end);
        if let Some(at) = text[rest_start..authority_end].rfind('@') {
            let userinfo = &text[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                text.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(start) = text.find("password=") {
        let value_start = start + "password=".len();
        let value_end = text[value_start..]
            .find('&')
            .map_or(text.len(), |end| value_start + end);
        text.replace_range(value_start..value_end, "***");
    }
    text
}

/// Opens (and migrates) the store at `location`.
pub async fn open_store(location: &StoreLocation) -> Result<Arc<dyn Store>, StoreError> {
    match location {
        #[cfg(feature = "sqlite")]
        StoreLocation::Sqlite(path) => Ok(Arc::new(super::SqliteStore::open(path).await?)),
        #[cfg(feature = "postgres")]
        StoreLocation::Postgres(url) => Ok(Arc::new(super::PostgresStore::connect(url).await?)),
        #[cfg(not(all(feature = "sqlite", feature = "postgres")))]
        other => Err(StoreError::Unsupported(format!(
            "{} (this build of BuildIt has no such backend)",
            other.display()
        ))),
    }
}
