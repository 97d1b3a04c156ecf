//! Splitting raw output into lines: partial lines kept across reads, overlong lines cut with a marker, invalid
//! UTF-8 replaced, the last partial line flushed at exit.

use std::sync::Arc;

use super::mask::SecretMasker;

/// Longest line kept whole; longer ones are cut into pieces of this size, each marked.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Appended to each piece of a cut line.
pub const CUT_MARKER: &str = " [line cut at 64 KiB]";

/// Turns chunks of bytes into lines, for one stream, masking secrets before any line is cut or handed out.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
    masker: Option<Arc<SecretMasker>>,
}

impl LineSplitter {
    /// A splitter with nothing pending and nothing to mask.
    pub fn new() -> Self {
        Self::default()
    }

    /// A splitter that masks `masker`'s secrets in every line.
    pub fn with_masker(masker: Arc<SecretMasker>) -> Self {
        Self {
            pending: Vec::new(),
            masker: (!masker.is_empty()).then_some(masker),
        }
    }

    /// Feeds a chunk; returns the lines it completes (without `\n` or `\r\n`).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = chunk;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.pending.extend_from_slice(&rest[..newline]);
            rest = &rest[newline + 1..];
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let text = self.mask(String::from_utf8_lossy(&line).into_owned());
            cut_into(&text, &mut lines);
        }
        self.pending.extend_from_slice(rest);
        // A line without an end yet must not grow without bound. It is cut at 64 KiB, after masking a window
        // longer by the longest secret, so that no secret straddles the cut.
        let holdback = self.masker.as_ref().map_or(0, |m| m.longest());
        while self.pending.len() > MAX_LINE_BYTES + holdback {
            let window: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES + holdback).collect();
            let masked = self.mask(String::from_utf8_lossy(&window).into_owned());
            let cut = floor_char_boundary(&masked, MAX_LINE_BYTES);
            lines.push(format!("{}{CUT_MARKER}", &masked[..cut]));
            let mut rest = masked.as_bytes()[cut..].to_vec();
            rest.append(&mut self.pending);
            self.pending = rest;
        }
        lines
    }

    /// The partial last line, if any (call once the stream has ended).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.pending);
        Some(self.mask(String::from_utf8_lossy(&line).into_owned()))
    }

    fn mask(&self, text: String) -> String {
        match &self.masker {
            Some(masker) => masker.mask(&text),
            None => text,
        }
    }
}

/// Cuts a (masked) line into pieces of at most 64 KiB, at character boundaries, marking all but the last.
fn cut_into(text: &str, lines: &mut Vec<String>) {
    let mut rest = text;
    while rest.len() > MAX_LINE_BYTES {
        let cut = floor_char_boundary(rest, MAX_LINE_BYTES);
        lines.push(format!("{}{CUT_MARKER}", &rest[..cut]));
        rest = &rest[cut..];
    }
    lines.push(rest.to_owned());
}

/// The largest character boundary of `text` at or below `index` (at least one character, so cuts progress).
fn floor_char_boundary(text: &str, index: usize) -> usize {
    if index >= text.len() {
        return text.len();
    }
    let mut cut = index;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    if cut == 0 {
        text.char_indices().nth(1).map_or(text.len(), |(i, _)| i)
    } else {
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_partial_lines_across_chunks() {
        let mut splitter = LineSplitter::new();
        assert_eq!(splitter.push(b"hel"), Vec::<String>::new());
        assert_eq!(splitter.push(b"lo\nwor"), ["hello"]);
        assert_eq!(splitter.push(b"ld\r\n\n"), ["world", ""]);
        assert_eq!(splitter.push(b"tail"), Vec::<String>::new());
        assert_eq!(splitter.finish().as_deref(), Some("tail"));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn cuts_at_character_boundaries_and_never_through_a_secret() {
        let mut splitter = LineSplitter::new();
        let euros = "€".repeat(30_000) + "\n";
        let lines = splitter.push(euros.as_bytes());
        assert!(
            lines.iter().all(|line| !line.contains('\u{fffd}')),
            "no character is split"
        );
        let masker = Arc::new(SecretMasker::new(["supersecretvalue"]));
        let mut masked = LineSplitter::with_masker(masker);
        let mut line = "x".repeat(MAX_LINE_BYTES - 6).into_bytes();
        line.extend_from_slice(b"supersecretvalue tail\n");
        let lines = masked.push(&line);
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("supers") && !l.contains("ecretvalue")),
            "{:?}",
            lines
                .iter()
                .map(|l| &l[l.len().saturating_sub(40)..])
                .collect::<Vec<_>>()
        );
        // Also in a line that has no end yet.
        let mut runaway = "y".repeat(MAX_LINE_BYTES - 4).into_bytes();
        runaway.extend_from_slice(b"supersecretvalue");
        runaway.extend(std::iter::repeat_n(b'z', 40_000));
        let mut lines = masked.push(&runaway);
        lines.extend(masked.finish());
        let joined = lines.concat();
        assert!(
            !joined.contains("supers") && !joined.contains("ecretvalue") && joined.contains("***")
        );
    }

    #[test]
    fn replaces_invalid_utf8() {
        let mut splitter = LineSplitter::new();
        assert_eq!(splitter.push(b"a\xffb\n"), ["a\u{fffd}b"]);
    }

    #[test]
    fn cuts_overlong_lines_with_a_marker() {
        let mut splitter = LineSplitter::new();
        let mut long = vec![b'x'; MAX_LINE_BYTES * 2 + 10];
        long.push(b'\n');
        let lines = splitter.push(&long);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with(CUT_MARKER));
        assert_eq!(lines[2], "x".repeat(10));
        // Without a newline, a runaway line is still cut as it grows.
        let lines = splitter.push(&vec![b'y'; MAX_LINE_BYTES + 1]);
        assert_eq!(lines.len(), 1);
        assert_eq!(splitter.finish().as_deref(), Some("y"));
    }
}
