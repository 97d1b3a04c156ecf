//! Reading secret values from the runner's secret store (environment variables or a KDL file).

use std::collections::BTreeMap;
use std::path::PathBuf;

use kdl::{KdlDocument, KdlValue};

use super::model::{SecretStoreConfig, SystemConfig};

/// A secret store that cannot be read.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum SecretError {
    /// The secrets file cannot be read.
    #[error("cannot read secrets file `{}`: {source}", path.display())]
    #[diagnostic(code(buildit::secrets::unreadable))]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The secrets file is not a list of `NAME "value"` nodes.
    #[error("invalid secrets file `{}`: {message}", path.display())]
    #[diagnostic(
        code(buildit::secrets::invalid),
        help("write one `NAME \"value\"` node per secret")
    )]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a value).
        message: String,
    },
}

impl SystemConfig {
    /// The values of the secrets named in `names` that the store has; missing ones are left out (a stage that
    /// needs one fails with a clear reason).
    pub fn load_secrets<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<BTreeMap<String, String>, SecretError> {
        let names: Vec<&str> = names.into_iter().collect();
        let mut values = BTreeMap::new();
        match &self.secrets {
            SecretStoreConfig::Env { prefix } => {
                for name in names {
                    if let Some(value) = env(&format!("{prefix}{name}")) {
                        values.insert(name.to_owned(), value);
                    }
                }
            }
            SecretStoreConfig::File { path } => {
                if names.is_empty() {
                    return Ok(values);
                }
                let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
                    path: path.clone(),
                    source,
                })?;
                // Parse errors would quote the file; report only where, never what.
                let document = KdlDocument::parse(&text).map_err(|error| SecretError::Invalid {
                    path: path.clone(),
                    message: format!(
                        "not valid KDL ({})",
                        crate::diagnostic::plural(error.diagnostics.len(), "problem")
                    ),
                })?;
                for node in document.nodes() {
                    let name = node.name().value();
                    let value = match node.entries() {
                        [entry] if entry.name().is_none() => match entry.value() {
                            KdlValue::String(value) => value.clone(),
                            _ => {
                                return Err(SecretError::Invalid {
                                    path: path.clone(),
                                    message: format!("secret `{name}` must be a string"),
                                });
                            }
                        },
                        _ => {
                            return Err(SecretError::Invalid {
                                path: path.clone(),
                                message: format!("secret `{name}` must have exactly one value"),
                            });
                        }
                    };
                    if names.contains(&name) {
                        values.insert(name.to_owned(), value);
                    }
                }
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn env_store_reads_prefixed_variables() {
        let config = SystemConfig::defaults(Path::new("."));
        let env = |name: &str| (name == "BUILDIT_SECRET_TOKEN").then(|| "t0ken".to_owned());
        let values = config
            .load_secrets(["TOKEN", "OTHER"], env)
            .ok()
            .unwrap_or_default();
        assert_eq!(values.get("TOKEN").map(String::as_str), Some("t0ken"));
        assert!(!values.contains_key("OTHER"));
    }

    #[test]
    fn file_store_reads_named_values_and_never_echoes_them_in_errors() {
        let dir = std::env::temp_dir().join(format!("buildit-secrets-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("secrets.kdl");
        let _ = std::fs::write(&file, "TOKEN \"abc123\"\nOTHER \"x\"\n");
        let mut config = SystemConfig::defaults(Path::new("."));
        config.secrets = SecretStoreConfig::File { path: file.clone() };
        let values = config
            .load_secrets(["TOKEN"], |_| None)
            .ok()
            .unwrap_or_default();
        assert_eq!(values.get("TOKEN").map(String::as_str), Some("abc123"));
        assert!(!values.contains_key("OTHER"));
        let _ = std::fs::write(&file, "TOKEN \"hunter22\" \"extra\"\n");
        let error = config
            .load_secrets(["TOKEN"], |_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("exactly one value") && !error.contains("hunter22"),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
