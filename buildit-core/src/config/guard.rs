//! A cheap scan before the KDL parser runs, refusing input that would make it slow or overflow its stack.
//!
//! The `kdl` crate's v2 parser re-parses a child block commented out with `/-` once per alternative it tries,
//! so each slash-dashed block nested in another doubles the work (kdl-rs issue 177: `a /-{` repeated 22 times,
//! 132 bytes, takes over a minute), and it searches for the end of every unclosed raw string (`#"`) up to the end
//! of the file, so a run of them is quadratic (2,000 `#" ` take seconds). Deep nesting of any kind recurses once
//! per level. The scan lexes like the KDL v2 parser (where those costs are) and tracks braces
//! outside strings and comments and reports both shapes as precise syntax errors before parsing starts.

use miette::SourceSpan;

use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode};

/// Most child blocks nested in one another. BuildIt files need three.
pub(crate) const MAX_NESTING: usize = 32;
/// Most `/-` commented-out child blocks nested in one another: each level doubles the parser's work.
pub(crate) const MAX_SLASHDASHED_NESTING: usize = 2;

/// Most tokens (names, values, strings, `=`, `\`, braces, ...) of a file the `kdl` parser reads: it spends 10 to
/// 15 microseconds on each (and reads a broken file more than once), and its error recovery recurses once per
/// misplaced one, so a megabyte of `= = =` or `\ \ \` would take seconds to minutes and hundreds of MB. Plain
/// files (read by BuildIt's own reader) are not limited.
pub(crate) const MAX_PARSER_TOKENS: usize = 25_000;

/// Most `#` in a row (raw strings need a few more than they contain).
pub(crate) const MAX_HASHES: usize = 32;

/// What a scan learned about a file the parser can read in bounded time.
#[derive(Debug, Default)]
pub(crate) struct Scanned {
    /// Offsets just after every newline that ends a top-level node (see [`scan`]).
    pub(crate) boundaries: Vec<usize>,
    /// Offset of the first token over [`MAX_PARSER_TOKENS`], if there are that many.
    pub(crate) token_limit_at: Option<usize>,
}

/// Scans `text` and reports the first shape the parser cannot handle in bounded time.
#[cfg(test)]
pub(crate) fn check_parser_limits(text: &str) -> Option<ConfigDiagnostic> {
    scan(text).err()
}

/// Scans `text`: the first shape the parser cannot handle in bounded time, or else the offsets just after every
/// newline that ends a top-level node (outside blocks, strings and comments, not continued with `\` nor
/// following a `/-`), where the document can be cut into pieces that parse on their own, and where the token
/// limit is passed.
pub(crate) fn scan(text: &str) -> Result<Scanned, ConfigDiagnostic> {
    let mut boundaries = Vec::new();
    let mut tokens = 0usize;
    let mut token_limit_at = None;
    // Whether the last character belongs to a bare token (a name, number or keyword) that goes on.
    let mut in_token = false;
    let mut count = |at: usize| {
        tokens += 1;
        if tokens == MAX_PARSER_TOKENS + 1 {
            token_limit_at = Some(at);
        }
    };
    let mut continuation = false;
    let bytes = text.as_bytes();
    // For every open brace: whether it was commented out with `/-`.
    let mut open: Vec<bool> = Vec::new();
    let mut slashdashed_open = 0usize;
    let mut pending_slashdash = false;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let starts_token = !in_token;
        in_token = false;
        match byte {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = find_from(bytes, i, b"\n").unwrap_or(bytes.len());
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                match skip_block_comment(bytes, i) {
                    Ok(end) => i = end,
                    Err(too_deep) => {
                        return Err(ConfigDiagnostic::error(
                            DiagnosticCode::Syntax,
                            format!("`/* */` comments are nested more than {MAX_NESTING} deep"),
                            SourceSpan::from(too_deep..too_deep + 2),
                            "this comment is too deep",
                        )
                        .with_help("KDL block comments nest: every `/*` needs its own `*/`"));
                    }
                }
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'-') => {
                if pending_slashdash {
                    // `/- /- x`: the parser's time grows exponentially with chains of these.
                    return Err(ConfigDiagnostic::error(
                        DiagnosticCode::Syntax,
                        "`/-` must be followed by a node, a value or a block, not another `/-`",
                        SourceSpan::from(i..i + 2),
                        "second `/-`",
                    )
                    .with_help("remove the extra `/-`"));
                }
                pending_slashdash = true;
                count(i);
                i += 2;
                continue;
            }
            b'"' => {
                count(i);
                i = skip_string(bytes, i);
                pending_slashdash = false;
                continue;
            }
            b'{' => {
                count(i);
                open.push(pending_slashdash);
                if pending_slashdash {
                    slashdashed_open += 1;
                }
                pending_slashdash = false;
                if open.len() > MAX_NESTING {
                    return Err(ConfigDiagnostic::error(
                        DiagnosticCode::Syntax,
                        format!("child blocks are nested more than {MAX_NESTING} deep"),
                        SourceSpan::from(i..i + 1),
                        "this block is too deep",
                    )
                    .with_help(
                        "BuildIt files need only a few levels of `{ }`; check for unclosed braces",
                    ));
                }
                if slashdashed_open > MAX_SLASHDASHED_NESTING {
                    return Err(
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
                count(i);
                if open.pop() == Some(true) {
                    slashdashed_open -= 1;
                }
                pending_slashdash = false;
            }
            // Line continuations keep a pending `/-` alive, like whitespace.
            b'\\' => {
                count(i);
                continuation = true;
            }
            b'#' => {
                pending_slashdash = false;
                let run = bytes
                    .get(i..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|&&b| b == b'#')
                    .count();
                if run > MAX_HASHES {
                    // The parser tries a raw string at every `#` of a run and counts the rest of it: quadratic.
                    return Err(ConfigDiagnostic::error(
                        DiagnosticCode::Syntax,
                        format!("more than {MAX_HASHES} `#` in a row"),
                        SourceSpan::from(i..i + run),
                        "too many `#`",
                    )
                    .with_help(
                        "raw strings take a few `#` (`#\"...\"#`); keywords one (`#true`)",
                    ));
                }
                if starts_token {
                    count(i);
                }
                in_token = true;
                if let Some((hashes, quote)) = raw_string_hashes(bytes, i) {
                    in_token = false;
                    match skip_raw_string(bytes, quote, hashes) {
                        Some(end) => {
                            i = end;
                            continue;
                        }
                        None => {
                            let closing = format!("\"{}", "#".repeat(hashes));
                            return Err(ConfigDiagnostic::error(
                                DiagnosticCode::Syntax,
                                format!("raw string is never closed with `{closing}`"),
                                SourceSpan::from(i..quote + 1),
                                "raw string starts here",
                            )
                            .with_help(format!("end the string with `{closing}`")));
                        }
                    }
                }
            }
            _ => {
                // KDL v2 whitespace and newlines (Unicode ones too) keep a pending `/-` alive; anything else ends it.
                let ch = text
                    .get(i..)
                    .and_then(|rest| rest.chars().next())
                    .unwrap_or(' ');
                if ch == '\n' {
                    if open.is_empty() && !pending_slashdash && !continuation {
                        boundaries.push(i + 1);
                    }
                    continuation = false;
                } else if !is_kdl_space(ch) {
                    pending_slashdash = false;
                    continuation = false;
                    // `=`, `(`, `)` and `;` are tokens of their own; anything else starts or continues one.
                    if matches!(ch, '=' | '(' | ')' | ';') {
                        count(i);
                    } else {
                        if starts_token {
                            count(i);
                        }
                        in_token = true;
                    }
                }
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    Ok(Scanned {
        boundaries,
        token_limit_at,
    })
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
    let triple = opens_multiline(bytes, start);
    let mut i = start + if triple { 3 } else { 1 };
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' if !triple => return i + 1,
            // A single-line string cannot hold a newline: the parser reports it and reads on after it.
            b'\n' | b'\r' if !triple => return i,
            b'"' if bytes[i..].starts_with(b"\"\"\"") => return i + 3,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// For a KDL v2 raw string (`#"..."#`, `##"..."##`) starting at `start`: the number of `#` and the index of its
/// opening quote. (KDL v1's `r"..."` is not special here: the costs this scan guards against are the v2
/// parser's, and v2 reads `r` as a name.)
fn raw_string_hashes(bytes: &[u8], start: usize) -> Option<(usize, usize)> {
    let hashes = bytes[start..].iter().take_while(|&&b| b == b'#').count();
    let quote = start + hashes;
    (hashes > 0 && bytes.get(quote) == Some(&b'"')).then_some((hashes, quote))
}

/// Whitespace and newlines as KDL v2 defines them.
fn is_kdl_space(ch: char) -> bool {
    matches!(
        ch,
        '\t' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
                | '\n'
                | '\r'
                | '\u{b}'
                | '\u{c}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
    )
}

/// Whether a `"""` at `start` opens a multi-line string: in KDL v2 only when a newline follows (after spaces).
fn opens_multiline(bytes: &[u8], start: usize) -> bool {
    bytes[start..].starts_with(b"\"\"\"")
        && bytes[start + 3..]
            .iter()
            .find(|&&b| b != b' ' && b != b'\t')
            .is_some_and(|&b| b == b'\n' || b == b'\r')
}

/// Skips a raw string whose opening quote is at `quote`; it ends at `"` followed by `hashes` times `#` (or at
/// `"""` and the hashes for a multi-line one). `None` when it is never closed.
fn skip_raw_string(bytes: &[u8], quote: usize, hashes: usize) -> Option<usize> {
    let triple = opens_multiline(bytes, quote);
    let quotes = if triple { 3 } else { 1 };
    let mut i = quote + quotes;
    while i < bytes.len() {
        if bytes[i..].starts_with(&b"\"\"\""[..quotes])
            && bytes[i + quotes..]
                .iter()
                .take(hashes)
                .filter(|&&b| b == b'#')
                .count()
                == hashes
        {
            return Some(i + quotes + hashes);
        }
        i += 1;
    }
    None
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
        let text = r###"
            pipeline "p" /* a /-{ /-{ /-{ */
            stage "a" { run "echo '/-{ /-{ /-{'"; run #"raw /-{ /-{ /-{ "#; run """
                /-{ /-{ /-{
                """; run ##"a "# /-{ /-{ /-{"## }
            // /-{ /-{ /-{
            stage "b" /-{ run "x" } { run "y" }
        "###;
        assert_eq!(check_parser_limits(text), None);
    }

    #[test]
    fn lexes_like_the_v2_parser() {
        // KDL v1's `r"` is a name and a string in v2: the guard must not be fooled into reading on as a string.
        let bypass = format!(
            "x /**/r\"\\\"\n{}{}",
            "a /-{\n".repeat(13),
            "}\n".repeat(13)
        );
        assert!(check_parser_limits(&bypass).is_some());
        // `"""` not followed by a newline is no multi-line string.
        let bypass = format!("x \"\"\" \"\n{}", "a /-{\n".repeat(17));
        assert!(check_parser_limits(&bypass).is_some());
        // Unicode whitespace between `/-` and `{` still makes a slash-dashed block.
        assert!(check_parser_limits("a /-\u{a0}{ b /-\u{3000}{ c /-\u{feff}{ } } }").is_some());
    }

    #[test]
    fn refuses_unclosed_raw_strings() {
        let diagnostic = check_parser_limits("a #\" never closed\n#\" again");
        assert_eq!(
            diagnostic
                .and_then(|d| d.primary_span())
                .map(|s| s.offset()),
            Some(2)
        );
        assert!(check_parser_limits(&"#\"\"\" ".repeat(2000)).is_some());
        assert!(check_parser_limits("a #\"closed\"# ##\"also \"# closed\"##").is_none());
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
