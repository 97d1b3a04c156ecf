//! Splitting raw output into lines: partial lines kept across reads, overlong lines cut with a marker, invalid
//! UTF-8 replaced, the last partial line flushed at exit.

/// Longest line kept whole; longer ones are cut into pieces of this size, each marked.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Appended to each piece of a cut line.
pub const CUT_MARKER: &str = " [line cut at 64 KiB]";

/// Turns chunks of bytes into lines, for one stream.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// A splitter with nothing pending.
    pub fn new() -> Self {
        Self::default()
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
            self.cut_into(line, &mut lines);
        }
        self.pending.extend_from_slice(rest);
        // A line without an end yet must not grow without bound.
        while self.pending.len() > MAX_LINE_BYTES {
            let piece: Vec<u8> = self.pending.drain(..MAX_LINE_BYTES).collect();
            lines.push(format!("{}{CUT_MARKER}", String::from_utf8_lossy(&piece)));
        }
        lines
    }

    /// The partial last line, if any (call once the stream has ended).
    pub fn finish(&mut self) -> Option<String> {
        if self.pending.is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.pending);
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    fn cut_into(&self, line: Vec<u8>, lines: &mut Vec<String>) {
        if line.len() <= MAX_LINE_BYTES {
            lines.push(String::from_utf8_lossy(&line).into_owned());
            return;
        }
        let mut pieces = line.chunks(MAX_LINE_BYTES).peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_some() {
                lines.push(format!("{}{CUT_MARKER}", String::from_utf8_lossy(piece)));
            } else {
                lines.push(String::from_utf8_lossy(piece).into_owned());
            }
        }
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
