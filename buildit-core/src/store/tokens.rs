//! API tokens: making a new one, the hash the store keeps instead of it, and which tenant names are valid.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::model::StoreError;

/// What every token starts with: a token found in a log or a paste is recognisable (and scanners can look for it).
pub const TOKEN_PREFIX: &str = "bit_";

/// Random bytes in a token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;

/// The longest tenant name.
const MAX_TENANT_LEN: usize = 64;

/// How often a token's `last_used_at_ms` is updated at most (ms): a lookup is otherwise a read only.
pub(crate) const LAST_USED_EVERY_MS: i64 = 60_000;

/// A new token: `bit_` and 32 random bytes from the operating system, base64url without padding (47 characters).
///
/// # Panics
///
/// When the operating system gives no random bytes (no `getrandom` system call and no `/dev/urandom`): a
/// token made of anything less would be guessable.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    #[expect(
        clippy::expect_used,
        reason = "without the OS's randomness no safe token can be made; nothing a user controls fails here"
    )]
    getrandom::fill(&mut bytes).expect("the operating system gives no random bytes");
    let mut token = String::with_capacity(TOKEN_PREFIX.len() + 43);
    token.push_str(TOKEN_PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut token);
    token
}

/// The SHA-256 of `token`, lowercase hex: what the store keeps and looks tokens up by. A token has 256 random
/// bits, so a plain (unsalted, fast) hash is enough: there is no dictionary to try.
pub fn hash_token(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

/// The SHA-256 of `bytes`, lowercase hex (a token's hash, a registered pipeline's digest).
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `name` can name a tenant: 1 to 64 characters of `a-z`, `0-9`, `-` and `_` (it appears in URLs, logs
/// and labels without quoting).
pub fn check_tenant_name(name: &str) -> Result<(), StoreError> {
    let valid = (1..=MAX_TENANT_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|byte| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidTenant(name.to_owned()))
    }
}

/// Whether a token last used at `last_used_at_ms` should have that updated to `now_ms`.
pub(crate) fn last_use_is_stale(last_used_at_ms: Option<i64>, now_ms: i64) -> bool {
    last_used_at_ms.is_none_or(|last| now_ms.saturating_sub(last) >= LAST_USED_EVERY_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_base64url() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        for token in [&a, &b] {
            let body = token.strip_prefix(TOKEN_PREFIX).unwrap_or_default();
            assert_eq!(body.len(), 43, "{token}");
            assert!(
                body.bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'),
                "{token}"
            );
            assert_eq!(
                URL_SAFE_NO_PAD.decode(body).map(|raw| raw.len()).ok(),
                Some(32)
            );
        }
    }

    #[test]
    fn hashes_are_sha256_hex() {
        // The SHA-256 test vector of "abc" (FIPS 180-2).
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(hash_token("bit_a"), hash_token("bit_b"));
    }

    #[test]
    fn tenant_names() {
        for good in ["default", "acme", "a", "team-1_x", &"a".repeat(64)] {
            assert!(check_tenant_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Acme", "a b", "a/b", "ä", "a.b", &"a".repeat(65)] {
            assert!(
                matches!(check_tenant_name(bad), Err(StoreError::InvalidTenant(name)) if name == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn last_use_is_written_at_most_once_a_minute() {
        assert!(last_use_is_stale(None, 0));
        assert!(!last_use_is_stale(Some(1_000), 60_999));
        assert!(last_use_is_stale(Some(1_000), 61_000));
    }
}
