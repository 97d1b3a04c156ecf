//! Choosing and opening a backend from a location: a SQLite file or a PostgreSQL URL.

use std::path::PathBuf;
use std::sync::Arc;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::api::Store;
use super::model::StoreError;
use crate::config::{TemplatePart, Variable};
use crate::system::StoreConfig;

/// What a value inside a URL keeps as it is: letters, digits and `-._~` (RFC 3986's unreserved characters).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
                let mut rendered = String::new();
                for part in url.parts() {
                    match part {
                        TemplatePart::Literal(text) => rendered.push_str(text),
                        TemplatePart::Variable {
                            variable: Variable::Env(name),
                            ..
                        } => {
                            let Some(value) = env(name) else {
                                return Err(StoreError::Open {
                                    location: redact(url.as_str()),
                                    message: format!(
                                        "the URL uses `{{env.{name}}}`, which is not set"
                                    ),
                                });
                            };
                            // Inside the URL (after `scheme://`), a value is encoded so that a password
                            // with `&`, `@`, `/` or `%` stays one value; a whole URL is taken as it is.
                            if rendered.contains("://") {
                                rendered.extend(utf8_percent_encode(&value, UNRESERVED));
                            } else {
                                rendered.push_str(&value);
                            }
                        }
                        TemplatePart::Variable { range, .. } => {
                            rendered.push_str(&url.as_str()[range.clone()]);
                        }
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Template;

    #[test]
    fn secrets_from_the_environment_stay_one_value_and_out_of_messages() {
        let config = StoreConfig::Postgres {
            url: match crate::parse_system(
                "store \"postgres\" url=\"postgres://ci@db:5432/buildit?password={env.PW}\"\n",
                "system.kdl",
            ) {
                Ok(system) => match system.store {
                    StoreConfig::Postgres { url } => url,
                    StoreConfig::Sqlite { .. } => Template::literal(""),
                },
                Err(error) => panic!("{error}"),
            },
        };
        let location = StoreLocation::from_config(&config, |_| Some("p&ss=Top/Secret%".to_owned()));
        let Ok(StoreLocation::Postgres(url)) = location else {
            panic!("{location:?}")
        };
        assert_eq!(
            url,
            "postgres://ci@db:5432/buildit?password=p%26ss%3DTop%2FSecret%25"
        );
        let shown = StoreLocation::Postgres(url).display();
        assert!(!shown.contains("Top"), "{shown}");
        assert_eq!(
            redact("postgres://ci:hunter2@db/x?sslmode=require"),
            "postgres://ci:***@db/x?sslmode=require"
        );
        assert!(matches!(
            StoreLocation::from_config(&config, |_| None),
            Err(StoreError::Open { .. })
        ));
    }
}
