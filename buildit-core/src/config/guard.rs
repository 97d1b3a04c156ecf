//! A cheap scan before the KDL parser runs, refusing input that would make it slow or overflow its stack.
//!
//! The `kdl` crate's v2 parser re-parses a child block commented out with `/-` once per alternative it tries,
//! so each slash-dashed block nested in another doubles the work (kdl-rs issue 177: `a /-{` repeated 22 times,
//! 132 bytes, takes over a minute). Deep nesting of any kind recurses once per level. This scan tracks braces
//! outside strings and comments and reports both shapes as precise syntax errors before parsing starts.

use miette::SourceSpan;

use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Most child blocks nested in one another. BuildIt files need three.
pub(crate) const MAX_NESTING: usize = 32;
/// Most `/-` commented-out child blocks nested in one another: each level doubles the parser's work.
pub(crate) const MAX_SLASHDASHED_NESTING: usize = 2;

/// Scans `text` and reports the first shape the parser cannot handle in bounded time.
pub(crate) fn check_parser_limits(text: &str) -> Option<ConfigDiagnostic> {
    let bytes = text.as_bytes();
    // For every open brace: whether it was commented out with `/-`.
    let mut open: Vec<bool> = Vec::new();
    let mut slashdashed_open = 0usize;
    let mut pending_slashdash = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = find_from(bytes, i, b"\n").unwrap_or(bytes.len());
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                match skip_block_comment(bytes, i) {
                    Ok(end) => i = end,
                    Err(too_deep) => {
                        return Some(
                            ConfigDiagnostic::error(
                                DiagnosticCode::Syntax,
                                format!("`/* */` comments are nested more than {MAX_NESTING} deep"),
                                SourceSpan::from(too_deep..too_deep + 2),
                                "this comment is too deep",
                            )
                            .with_help("KDL block comments nest: every `/*` needs its own `*/`"),
                        );
                    }
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'-') => {
                if pending_slashdash {
                    // `/- /- x`: the parser's time grows exponentially with chains of these.
                    return Some(
                        ConfigDiagnostic::error(
                            DiagnosticCode::Syntax,
                            "`/-` must be followed by a node, a value or a block, not another `/-`",
                            SourceSpan::from(i..i + 2),
                            "second `/-`",
                        )
                        .with_help("remove the extra `/-`"),
                    );
                }
                pending_slashdash = true;
                i += 2;
                continue;
            }
            b'"' => {
                i = skip_string(bytes, i);
                pending_slashdash = false;
                continue;
            }
            b'{' => {
                open.push(pending_slashdash);
                if pending_slashdash {
                    slashdashed_open += 1;
                }
                pending_slashdash = false;
                if open.len() > MAX_NESTING {
                    return Some(
                        ConfigDiagnostic::error(
                            DiagnosticCode::Syntax,
                            format!("child blocks are nested more than {MAX_NESTING} deep"),
                            SourceSpan::from(i..i + 1),
                            "this block is too deep",
                        )
                        .with_help("BuildIt files need only a few levels of `{ }`; check for unclosed braces"),
                    );
                }
                if slashdashed_open > MAX_SLASHDASHED_NESTING {
                    return Some(
                        ConfigDiagnostic::error(
                            DiagnosticCode::Syntax,
                            format!(
                                "child blocks commented out with `/-` are nested more than {MAX_SLASHDASHED_NESTING} deep"
                            ),
                            SourceSpan::from(i..i + 1),
                            "commented-out block inside commented-out blocks",
                        )
                        .with_help(
                            "delete the inner commented-out block or comment it with `/* */`; KDL parsers take time exponential in this nesting (and check for unclosed braces)",
                        ),
                    );
                }
            }
            b'}' => {
                if open.pop() == Some(true) {
                    slashdashed_open -= 1;
                }
                pending_slashdash = false;
            }
            // Whitespace, newlines and line continuations keep a pending `/-` alive.
            b' ' | b'\t' | b'\n' | b'\r' | b'\\' => {}
            b'#' | b'r' => {
                pending_slashdash = false;
                if let Some((hashes, quote)) = raw_string_hashes(bytes, i) {
                    i = skip_raw_string(bytes, quote, hashes);
                    continue;
                }
            }
            _ => pending_slashdash = false,
        }
        i += 1;
    }
    None
}

fn find_from(bytes: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    bytes[from..]
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|position| from + position)
}

/// Skips a (nesting) `/* */` comment starting at `start`; returns the index after it, or the offset of an opening
/// `/*` nested too deep (the parser recurses once per level).
fn skip_block_comment(bytes: &[u8], start: usize) -> Result<usize, usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(i);
                }
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => i += 1,
        }
    }
    Ok(bytes.len())
}

/// Skips a quoted (or `"""` multi-line) string starting at the quote `start`; returns the index after it.
fn skip_string(bytes: &[u8], start: usize) -> usize {
    let triple = bytes[start..].starts_with(b"\"\"\"");
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' if !triple => return i + 1,
            b'"' if bytes[i..].starts_with(b"\"\"\"") => return i + 3,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// For a raw string (`#"..."#` in KDL v2, `r#"..."#` in v1) starting at `start`: the number of `#` and the index
/// of its opening quote.
fn raw_string_hashes(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let mut i = start;
    if bytes[i] == b'r' {
        // Only a token start counts: `bar"` is not a raw string.
        let token_start = start == 0
            || matches!(
                bytes[start - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'=' | b'(' | b')' | b'{' | b';'
            );
        if !token_start {
            return None;
        }
        i += 1;
    }
    let hashes = bytes[i..].iter().take_while(|&&b| b == b'#').count();
    let quote = i + hashes;
    (bytes.get(quote) == Some(&b'"') && (hashes > 0 || bytes[start] == b'r'))
        .then_some((hashes, quote))
}

/// Skips a raw string whose opening quote is at `quote`; it ends at `"` followed by `hashes` times `#`.
fn skip_raw_string(bytes: &[u8], quote: usize, hashes: usize) -> usize {
    let triple = bytes[quote..].starts_with(b"\"\"\"");
    let mut i = quote + if triple { 3 } else { 1 };
    let closing_quotes = if triple { 3 } else { 1 };
    while i < bytes.len() {
        if bytes[i..].starts_with(&b"\"\"\""[..closing_quotes])
            && bytes[i + closing_quotes..]
                .iter()
                .take(hashes)
                .filter(|&&b| b == b'#')
                .count()
                == hashes
        {
            return i + closing_quotes + hashes;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nested_slashdashed_blocks() {
        let text = "a /-{\n".repeat(22);
        let diagnostic = check_parser_limits(&text);
        assert_eq!(
            diagnostic.as_ref().map(|d| d.code),
            Some(DiagnosticCode::Syntax)
        );
        // The third `{` is the first one over the limit.
        assert_eq!(
            diagnostic
                .and_then(|d| d.primary_span())
                .map(|s| s.offset()),
            Some(16)
        );
    }

    #[test]
    fn allows_ordinary_documents() {
        let text = r##"
            pipeline "p" /* a /-{ /-{ /-{ */
            stage "a" { run "echo '/-{ /-{ /-{'"; run #"raw /-{ /-{ /-{ "#; run """
                /-{ /-{ /-{
                """ }
            // /-{ /-{ /-{
            stage "b" /-{ run "x" } { run "y" }
        "##;
        assert_eq!(check_parser_limits(text), None);
    }

    #[test]
    fn refuses_chained_slashdashes() {
        assert!(check_parser_limits("a /- /- b").is_some());
        assert!(check_parser_limits("a /-\n  /- b").is_some());
        assert!(check_parser_limits("a /-b /-c").is_none());
    }

    #[test]
    fn refuses_deeply_nested_comments() {
        assert!(check_parser_limits(&"/* ".repeat(MAX_NESTING + 1)).is_some());
        assert!(
            check_parser_limits(&format!(
                "{}{}",
                "/* ".repeat(MAX_NESTING),
                "*/ ".repeat(MAX_NESTING)
            ))
            .is_none()
        );
    }

    #[test]
    fn refuses_deep_nesting() {
        let text = "a {".repeat(MAX_NESTING + 1);
        assert!(check_parser_limits(&text).is_some());
        assert!(check_parser_limits(&"a {".repeat(MAX_NESTING)).is_none());
    }
}
