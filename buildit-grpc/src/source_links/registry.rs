//! The live one-time links: each maps a fresh random token to one stored archive until it is used or expires.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use buildit_core::source::{ArchiveDigest, ArchiveLinks};

/// How long a link may wait for its download once issued: a pod's init container asks for it within seconds of
/// the pod's creation, unless the pod waits for a node or an image. The Kubernetes executor waits up to about
/// 17.5 minutes for the holder pod that downloads it (by default: 5 minutes unschedulable, 30 s to pull the
/// image, a 2-minute margin, 10 minutes for the fetch): a link must outlive that wait, or a pod that started late
/// would find it expired.
pub const LINK_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// The most links alive at once: past it no link is given (the executor then copies the source in itself), so
/// that links issued and never used cannot grow without bound.
pub const MAX_LIVE_LINKS: usize = 10_000;

/// Random bytes in a token: 256 bits, hex-encoded in the URL.
const TOKEN_BYTES: usize = 32;

/// Issues one-time links to stored archives and hands each archive out once, to the first request that
/// presents its link's token before the link expires.
pub struct SourceLinks {
    /// What links start with, without a trailing slash (`http://buildit.buildit.svc:7778`).
    base_url: String,
    lifetime: Duration,
    live: Mutex<HashMap<String, Link>>,
}

/// What one token gives.
#[derive(Debug)]
struct Link {
    archive: PathBuf,
    digest: ArchiveDigest,
    expires: Instant,
}

/// The archive a token gave, now that its link is used up.
#[derive(Debug)]
pub(crate) struct Granted {
    /// The file to serve.
    pub(crate) archive: PathBuf,
    /// Its digest: what logs name the download by (never the token).
    pub(crate) digest: ArchiveDigest,
}

/// Why a token gives nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Never issued, already used, or expired and pruned since.
    Unknown,
    /// Issued, unused, but past its lifetime (it is removed now).
    Expired,
}

impl SourceLinks {
    /// Links of the form `{base_url}/sources/{token}` (a trailing `/` of `base_url` is dropped), each usable for
    /// `lifetime` after it is issued.
    pub fn new(base_url: &str, lifetime: Duration) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            lifetime,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// What links start with (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// How long a link stays usable.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// How many links are issued and not used yet (expired ones included until they are pruned).
    pub fn live(&self) -> usize {
        self.entries().len()
    }

    /// Uses up the link of `token`: the archive it was issued for, unless it is unknown, used or expired. The
    /// token is only ever a key of the map: no path is built from it.
    pub(crate) fn take(&self, token: &str) -> Result<Granted, Refusal> {
        let link = self.entries().remove(token).ok_or(Refusal::Unknown)?;
        if Instant::now() >= link.expires {
            return Err(Refusal::Expired);
        }
        Ok(Granted {
            archive: link.archive,
            digest: link.digest,
        })
    }

    /// The map, even if a thread panicked while holding it: every change to it is a single insert or removal,
    /// so it is never left half-changed.
    fn entries(&self) -> MutexGuard<'_, HashMap<String, Link>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ArchiveLinks for SourceLinks {
    /// A new link for every call, even for the same archive: each pod downloads with its own token. `None` when
    /// `archive` is not a file, when [`MAX_LIVE_LINKS`] links are alive, or when the system gives no random
    /// bytes.
    fn link(&self, archive: &Path, digest: &ArchiveDigest) -> Option<String> {
        if !archive.is_file() {
            return None;
        }
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).ok()?;
        let token = hex(&bytes);
        let now = Instant::now();
        let mut live = self.entries();
        live.retain(|_, link| link.expires > now);
        if live.len() >= MAX_LIVE_LINKS {
            drop(live);
            tracing::warn!(
                archive = %digest,
                limit = MAX_LIVE_LINKS,
                "no source link issued: too many links are unused"
            );
            return None;
        }
        live.insert(
            token.clone(),
            Link {
                archive: archive.to_path_buf(),
                digest: digest.clone(),
                expires: now + self.lifetime,
            },
        );
        drop(live);
        tracing::info!(archive = %digest, "source link issued");
        Some(format!("{}/sources/{token}", self.base_url))
    }
}

/// Without the tokens: a store that holds the links is printed in debug output and logs.
impl fmt::Debug for SourceLinks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceLinks")
            .field("base_url", &self.base_url)
            .field("lifetime", &self.lifetime)
            .field("live", &self.live())
            .finish()
    }
}

/// `bytes` as lower-case hexadecimal digits.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

#[cfg(test)]
#[expect(
    clippy::expect_used,
    reason = "a test fails loudly when what it sets up is not there"
)]
mod tests {
    use super::*;

    fn digest() -> ArchiveDigest {
        ArchiveDigest::parse(&"07".repeat(32)).expect("a digest")
    }

    /// The token of a link this registry issued.
    fn token_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or_default()
    }

    #[test]
    fn each_link_has_a_fresh_token_that_gives_its_archive_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, b"tar").expect("archive");
        let links = SourceLinks::new("http://buildit.example:7778/", LINK_LIFETIME);
        let first = links.link(&archive, &digest()).expect("a link");
        let second = links.link(&archive, &digest()).expect("a link");
        assert_ne!(first, second);
        assert!(
            first.starts_with("http://buildit.example:7778/sources/"),
            "{first}"
        );
        let token = token_of(&first);
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
        assert_eq!(links.live(), 2);
        let granted = links.take(token).expect("the first use");
        assert_eq!(granted.archive, archive);
        assert_eq!(granted.digest, digest());
        assert_eq!(links.take(token).err(), Some(Refusal::Unknown));
        assert_eq!(links.live(), 1);
    }

    #[test]
    fn a_missing_file_gets_no_link() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let links = SourceLinks::new("http://buildit.example:7778", LINK_LIFETIME);
        assert_eq!(links.link(&dir.path().join("gone.tar"), &digest()), None);
        assert_eq!(links.link(dir.path(), &digest()), None, "a directory");
        assert_eq!(links.live(), 0);
    }

    #[test]
    fn an_expired_link_is_refused_and_pruned_when_links_are_added() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, b"tar").expect("archive");
        let links = SourceLinks::new("http://x", Duration::from_millis(50));
        let expired = links.link(&archive, &digest()).expect("a link");
        let pruned = links.link(&archive, &digest()).expect("a link");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(links.take(token_of(&expired)).err(), Some(Refusal::Expired));
        assert_eq!(links.live(), 1, "taking removes the expired link");
        links.link(&archive, &digest()).expect("a link");
        assert_eq!(links.live(), 1, "adding pruned the other expired one");
        assert_eq!(links.take(token_of(&pruned)).err(), Some(Refusal::Unknown));
    }

    #[test]
    fn no_more_than_the_limit_of_unused_links_is_alive() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, b"tar").expect("archive");
        let links = SourceLinks::new("http://x", LINK_LIFETIME);
        let mut last = String::new();
        for _ in 0..MAX_LIVE_LINKS {
            last = links
                .link(&archive, &digest())
                .expect("a link under the limit");
        }
        assert_eq!(links.link(&archive, &digest()), None);
        // A used link makes room for one more.
        links.take(token_of(&last)).expect("the last link");
        assert!(links.link(&archive, &digest()).is_some());
        assert_eq!(links.live(), MAX_LIVE_LINKS);
    }

    #[test]
    fn debug_output_shows_no_token() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, b"tar").expect("archive");
        let links = SourceLinks::new("http://x", LINK_LIFETIME);
        let url = links.link(&archive, &digest()).expect("a link");
        let shown = format!("{links:?}");
        assert!(!shown.contains(token_of(&url)), "{shown}");
        assert!(shown.contains("live: 1"), "{shown}");
    }

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
