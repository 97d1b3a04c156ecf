//! Secret masking: every secret value, each line of a multi-line secret, and their base64 and URL-encoded forms
//! become `***` before any subscriber sees a line.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// URL encoding as strict libraries write it: letters, digits and `-._~` stay.
const URL_STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// URL encoding that keeps `/` (a path, or a library that leaves it).
const URL_KEEPING_SLASH: &AsciiSet = &URL_STRICT.remove(b'/');

/// What a secret is replaced with.
pub const MASK: &str = "***";
/// Shorter pieces are not masked on their own: masking `a` or `on` would destroy every log without hiding much.
pub const MIN_MASKED_LEN: usize = 4;

/// Why a secret value cannot be masked safely, never quoting it; `None` when it can. Logs are split into lines
/// before masking, so each line of a multi-line secret must be long enough on its own (blank lines hide
/// nothing and are fine). An empty value is refused too: it is almost always a store entry set by mistake, and
/// a stage would go on without the credential it asked for.
pub fn unmaskable(value: &str) -> Option<String> {
    if value.is_empty() {
        return Some("is empty".to_owned());
    }
    if value.len() < MIN_MASKED_LEN {
        return Some(format!(
            "is {} byte{} long; values shorter than {MIN_MASKED_LEN} bytes cannot be masked in logs",
            value.len(),
            if value.len() == 1 { "" } else { "s" }
        ));
    }
    if value.contains('\n') {
        let short = value
            .split('\n')
            .map(|line| line.trim_end_matches('\r'))
            .filter(|line| !line.trim().is_empty())
            .find(|line| line.len() < MIN_MASKED_LEN);
        if let Some(line) = short {
            return Some(format!(
                "has a line of {} byte{}; each line of a secret is masked on its own, and lines shorter than {MIN_MASKED_LEN} bytes cannot be",
                line.len(),
                if line.len() == 1 { "" } else { "s" }
            ));
        }
    }
    None
}

/// Replaces secrets in log lines.
#[derive(Debug, Clone, Default)]
pub struct SecretMasker {
    /// Longest first, so that a secret is masked whole before any of its lines.
    needles: Vec<String>,
}

impl SecretMasker {
    /// A masker for these secret values.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for secret in secrets {
            let mut pieces: Vec<&str> = vec![secret];
            if secret.contains('\n') {
                pieces.extend(secret.lines().map(|line| line.trim_end_matches('\r')));
            }
            for piece in pieces {
                if piece.len() < MIN_MASKED_LEN {
                    continue;
                }
                needles.push(piece.to_owned());
                needles.extend(base64_forms(piece.as_bytes()));
                // URL encodings as libraries write them: strict, keeping `/`, and with `+` for spaces.
                for set in [URL_STRICT, URL_KEEPING_SLASH] {
                    let encoded = utf8_percent_encode(piece, set).to_string();
                    needles.push(encoded.replace("%20", "+"));
                    needles.push(encoded);
                }
                // `set -x` traces show values shell-quoted: `it'\''s` for `it's`.
                if piece.contains('\'') {
                    needles.push(piece.replace('\'', r"'\''"));
                }
            }
        }
        needles.retain(|needle| needle.len() >= MIN_MASKED_LEN);
        needles.retain(|needle| needle != MASK);
        needles.sort_by_key(|needle| std::cmp::Reverse(needle.len()));
        needles.dedup();
        Self { needles }
    }

    /// The longest text that is masked: a line cut must keep this much together.
    pub fn longest(&self) -> usize {
        self.needles.first().map_or(0, String::len)
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The line with every secret form replaced by `***`.
    pub fn mask(&self, line: &str) -> String {
        let mut out = line.to_owned();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), MASK);
            }
        }
        out
    }
}

/// The parts of the base64 encoding of `secret` that do not depend on what precedes it, for each of the three
/// alignments it can have inside a longer encoded text, in the standard and URL-safe alphabets.
fn base64_forms(secret: &[u8]) -> Vec<String> {
    let mut forms = Vec::new();
    for offset in 0..3usize {
        let mut data = vec![0u8; offset];
        data.extend_from_slice(secret);
        // Character i covers bits [6i, 6i + 6); keep those made only of the secret's bits.
        let start = (offset * 8).div_ceil(6);
        let end = (data.len() * 8) / 6;
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&data);
            if let Some(stable) = encoded.get(start..end) {
                forms.push(stable.to_owned());
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_their_lines() {
        let masker = SecretMasker::new(["hunter2!", "line-one\nab\nline-three"]);
        assert_eq!(masker.mask("password: hunter2!"), "password: ***");
        assert_eq!(masker.mask("key line-one"), "key ***");
        assert_eq!(
            masker.mask("ab stays"),
            "ab stays",
            "pieces under 4 bytes are not masked alone"
        );
        assert_eq!(masker.mask("x line-three y"), "x *** y");
    }

    #[test]
    fn masks_base64_in_every_alignment() {
        let secret = "s3cr3t-token-value";
        let masker = SecretMasker::new([secret]);
        for prefix in ["", "a", "ab", "abc"] {
            let encoded = STANDARD_NO_PAD.encode(format!("{prefix}{secret} and more"));
            let masked = masker.mask(&encoded);
            assert!(
                masked.contains(MASK),
                "prefix {prefix:?}: {encoded} -> {masked}"
            );
            assert!(
                !masked.contains(&STANDARD_NO_PAD.encode(secret)[..8]),
                "{masked}"
            );
        }
    }

    #[test]
    fn masks_url_encoded_forms() {
        let masker = SecretMasker::new(["p@ss word/1"]);
        assert_eq!(
            masker.mask("https://x/?p=p%40ss%20word%2F1&q=1"),
            "https://x/?p=***&q=1"
        );
        assert_eq!(masker.mask("quote: p%40ss%20word/1"), "quote: ***");
        assert_eq!(masker.mask("form: p=p%40ss+word%2F1"), "form: p=***");
    }

    #[test]
    fn masks_shell_traces() {
        let masker = SecretMasker::new(["it's-a-secret"]);
        assert_eq!(masker.mask(r"+ echo 'it'\''s-a-secret'"), "+ echo '***'");
    }

    #[test]
    fn short_secrets_are_not_masked_alone() {
        assert!(SecretMasker::new(["abc", ""]).is_empty());
    }
}
