//! The two ids a source is addressed by: a git commit (40 hex digits) and an archive's sha256 (64 hex digits).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a text is not a commit id or an archive digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum IdError {
    /// The text has the wrong number of characters (a short commit id, a truncated digest).
    #[error(
        "{what} `{shown}` has {length} characters; expected exactly {expected} hexadecimal digits"
    )]
    #[diagnostic(
        code(buildit::source::invalid_id),
        help("give the full id: abbreviated ids are ambiguous and branch or tag names can move")
    )]
    Length {
        /// `commit` or `archive digest`.
        what: &'static str,
        /// The text, shortened when long.
        shown: String,
        /// How many characters it has.
        length: usize,
        /// How many it needs.
        expected: usize,
    },
    /// The text has a character that is not a hexadecimal digit.
    #[error(
        "{what} `{shown}` has `{character}` at position {position}; only the hexadecimal digits 0-9 and a-f are allowed"
    )]
    #[diagnostic(code(buildit::source::invalid_id))]
    NotHex {
        /// `commit` or `archive digest`.
        what: &'static str,
        /// The text, shortened when long.
        shown: String,
        /// The first character that is not a digit.
        character: char,
        /// Its position, counted from 1.
        position: usize,
    },
}

/// Checks that `text` is exactly `expected` hexadecimal digits; returns it in lower case.
fn parse_hex(text: &str, what: &'static str, expected: usize) -> Result<String, IdError> {
    let shown = || {
        // The text comes from a user or a request: never echo more than a line of it.
        let mut shown: String = text.chars().take(80).collect();
        if text.chars().nth(80).is_some() {
            shown.push('…');
        }
        shown
    };
    if let Some((index, character)) = text
        .chars()
        .enumerate()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(IdError::NotHex {
            what,
            shown: shown(),
            character,
            position: index + 1,
        });
    }
    if text.len() != expected {
        return Err(IdError::Length {
            what,
            shown: shown(),
            length: text.len(),
            expected,
        });
    }
    Ok(text.to_ascii_lowercase())
}

/// A git commit, by its full 40-digit id (SHA-1 object format), lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CommitId(String);

impl CommitId {
    /// The id of `text`, which must be exactly 40 hexadecimal digits (either case).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        parse_hex(text, "commit", 40).map(Self)
    }

    /// The id, 40 lower-case hexadecimal digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CommitId {
    type Error = IdError;

    fn try_from(text: String) -> Result<Self, IdError> {
        Self::parse(&text)
    }
}

impl From<CommitId> for String {
    fn from(id: CommitId) -> Self {
        id.0
    }
}

/// An uploaded archive, by the sha256 of its bytes: 64 lower-case hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ArchiveDigest(String);

impl ArchiveDigest {
    /// The digest of `text`, which must be exactly 64 hexadecimal digits (either case).
    pub fn parse(text: &str) -> Result<Self, IdError> {
        parse_hex(text, "archive digest", 64).map(Self)
    }

    /// The digest, 64 lower-case hexadecimal digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digest of a finished sha256.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Self {
        Self(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
    }
}

impl fmt::Display for ArchiveDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ArchiveDigest {
    type Error = IdError;

    fn try_from(text: String) -> Result<Self, IdError> {
        Self::parse(&text)
    }
}

impl From<ArchiveDigest> for String {
    fn from(digest: ArchiveDigest) -> Self {
        digest.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_exactly_forty_hex_digits() {
        let full = "0123456789abcdefABCDEF0123456789abcdef01";
        assert_eq!(
            CommitId::parse(full).map(|c| c.to_string()).ok().as_deref(),
            Some("0123456789abcdefabcdef0123456789abcdef01")
        );
        let short = CommitId::parse("0123abc").map_err(|e| e.to_string());
        assert_eq!(
            short.err().as_deref(),
            Some("commit `0123abc` has 7 characters; expected exactly 40 hexadecimal digits")
        );
        let named = CommitId::parse("main").map_err(|e| e.to_string());
        assert_eq!(
            named.err().as_deref(),
            Some(
                "commit `main` has `m` at position 1; only the hexadecimal digits 0-9 and a-f are allowed"
            )
        );
        let option = format!("--upload-pack=x{}", "0".repeat(25));
        assert!(matches!(
            CommitId::parse(&option),
            Err(IdError::NotHex { character: '-', .. })
        ));
        assert!(matches!(
            CommitId::parse(""),
            Err(IdError::Length { length: 0, .. })
        ));
        let long = "a".repeat(200);
        let message = CommitId::parse(&long).map_err(|e| e.to_string());
        assert!(
            message.as_ref().is_err_and(|m| m.len() < 200),
            "{message:?}"
        );
    }

    #[test]
    fn digests_are_sixty_four_hex_digits_and_round_trip_through_serde() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let digest = ArchiveDigest::parse(hex);
        assert_eq!(digest.as_ref().map(ArchiveDigest::as_str).ok(), Some(hex));
        assert!(ArchiveDigest::parse(&hex[..40]).is_err());
        let json = serde_json::to_string(&digest.ok());
        assert_eq!(json.as_deref().ok(), Some(&*format!("\"{hex}\"")));
        let bad: Result<CommitId, _> = serde_json::from_str("\"HEAD\"");
        assert!(bad.is_err());
    }
}
