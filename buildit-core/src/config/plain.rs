//! A fast reader for the plain KDL most pipelines are written in, giving the very document the `kdl` parser
//! would (spans included), and declining anything else, which the `kdl` parser then reads.
//!
//! Plain means: one node per line (`}` alone on its line), bare ASCII names, quoted strings without escapes,
//! whole numbers, `#true`, `#false`, `#null`, `key=value`, and `//` comments. That covers hand-written and
//! generated pipelines alike, and reading it costs a few hundred nanoseconds a line, where the `kdl` parser
//! (written for every corner of the language and for error recovery) takes about 35,000 instructions per quoted
//! string: on a 1,000-stage pipeline, 20 ms before the first stage could start.
//!
//! Anything outside that (escapes, raw and multi-line strings, `/-`, `/* */`, `;`, `\` continuations, type
//! annotations, other numbers, bare-word values, CR LF line ends, Unicode spaces, characters KDL forbids) makes
//! [`parse_plain`] return `None`, and the `kdl` parser reads the file and reports its errors, so this reader
//! never has to produce a diagnostic.

use kdl::{KdlDocument, KdlEntry, KdlIdentifier, KdlNode, KdlValue};
use miette::SourceSpan;

/// Deepest nesting of children blocks read here; deeper documents go to the `kdl` parser.
const MAX_DEPTH: usize = 32;

/// Most nodes (at any depth) of a plain document. Each costs about a kilobyte once read (the `kdl` crate's node
/// alone is 448 bytes), so a megabyte of one-letter lines would take hundreds of MB; a 10,000-stage pipeline
/// with a command and a dependency per stage has 30,000. Other documents have at most
/// [`MAX_PARSER_TOKENS`](super::guard::MAX_PARSER_TOKENS) tokens, so fewer nodes than that.
pub(crate) const MAX_NODES: usize = 40_000;

/// The document, when `text` is plain KDL (see the module); `None` otherwise, including when it is not KDL.
#[cfg(test)]
pub(crate) fn parse_plain(text: &str) -> Option<KdlDocument> {
    read_plain(text).ok().flatten()
}

/// Like [`parse_plain`], but a plain document with more than [`MAX_NODES`] nodes is an error: the offset of the
/// first node over the limit, found before that node (or any after it) is built.
pub(crate) fn read_plain(text: &str) -> Result<Option<KdlDocument>, usize> {
    if !plain_characters(text) {
        return Ok(None);
    }
    let mut reader = Plain {
        text,
        at: 0,
        entries: Vec::new(),
        nodes: 0,
        over_limit: None,
    };
    let document = reader.document(0);
    if let Some(at) = reader.over_limit {
        return Err(at);
    }
    // An empty document (only comments) is left to the `kdl` parser, whose span for it is its own business.
    Ok(document.filter(|document| !document.nodes().is_empty()))
}

/// Whether every character is one a plain document may hold: no control character but tab and line feed
/// (so no CR), no character KDL forbids or reads as a newline or a space beyond the ASCII ones.
fn plain_characters(text: &str) -> bool {
    let allowed_ascii = |byte: u8| (byte >= b' ' && byte != 0x7f) || byte == b'\t' || byte == b'\n';
    if text.is_ascii() {
        return text.bytes().all(allowed_ascii);
    }
    text.chars().all(|c| match c {
        c if c.is_ascii() => allowed_ascii(c as u8),
        // C1 controls (with NEL), no-break and other Unicode spaces, direction marks and embeddings,
        // line and paragraph separators, isolates, the byte order mark.
        '\u{80}'..='\u{a0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200f}'
        | '\u{2028}'..='\u{202f}'
        | '\u{205f}'
        | '\u{2066}'..='\u{2069}'
        | '\u{3000}'
        | '\u{feff}' => false,
        _ => true,
    })
}

struct Plain<'t> {
    text: &'t str,
    at: usize,
    /// The entries of the node being read, moved into the node once its line is read: a node's entries then
    /// take exactly the room they need (a vector grown by `push` starts at four entries of 384 bytes, most of
    /// the memory of a large pipeline's document, for nodes that mostly have one).
    entries: Vec<KdlEntry>,
    /// Nodes started so far, and where the first one over [`MAX_NODES`] starts.
    nodes: usize,
    over_limit: Option<usize>,
}

impl<'t> Plain<'t> {
    fn bytes(&self) -> &'t [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    /// Skips spaces and tabs; how many.
    fn skip_spaces(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
        self.at - start
    }

    /// At `/`: a `//` comment, skipped with its line end.
    fn comment(&mut self) -> Option<()> {
        if self.bytes().get(self.at + 1) != Some(&b'/') {
            return None;
        }
        self.at = match self.bytes()[self.at..]
            .iter()
            .position(|&byte| byte == b'\n')
        {
            Some(newline) => self.at + newline + 1,
            None => self.bytes().len(),
        };
        Some(())
    }

    /// The rest of a line after its last token: spaces, an optional comment, the line end (or the text's end).
    fn line_end(&mut self) -> Option<()> {
        let spaces = self.skip_spaces();
        match self.peek() {
            None => Some(()),
            Some(b'\n') => {
                self.at += 1;
                Some(())
            }
            Some(b'/') if spaces > 0 => self.comment(),
            _ => None,
        }
    }

    /// Nodes up to the end of the text (depth 0) or up to a line holding `}` (deeper), which is left to the
    /// caller. Like the `kdl` parser, the document's span runs from its first node's start to its last node's
    /// end, and an empty block's span is empty, at its `}`.
    fn document(&mut self, depth: usize) -> Option<KdlDocument> {
        let mut document = KdlDocument::new();
        let mut extent: Option<(usize, usize)> = None;
        loop {
            self.skip_spaces();
            match self.peek() {
                None if depth == 0 => break,
                None => return None,
                Some(b'\n') => self.at += 1,
                Some(b'/') => self.comment()?,
                Some(b'}') if depth > 0 => break,
                Some(_) => {
                    let (node, start, end) = self.node(depth)?;
                    extent = Some((extent.map_or(start, |(first, _)| first), end));
                    document.nodes_mut().push(node);
                }
            }
        }
        let (start, end) = extent.unwrap_or((self.at, self.at));
        document.set_span(SourceSpan::from(start..end));
        // As for entries: a block's nodes (448 bytes each) keep only the room they use.
        document.nodes_mut().shrink_to_fit();
        Some(document)
    }

    /// One node and its children; with where it starts and ends (after its trailing spaces, as the `kdl`
    /// parser counts it).
    fn node(&mut self, depth: usize) -> Option<(KdlNode, usize, usize)> {
        let start = self.at;
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.over_limit = Some(start);
            return None;
        }
        let mut node = KdlNode::new(self.identifier()?);
        self.entries.clear();
        loop {
            let spaces = self.skip_spaces();
            let end = self.at;
            match self.peek() {
                None | Some(b'\n') | Some(b'/') => {
                    // Rewind over the spaces: `line_end` wants them before a comment.
                    self.at = end - spaces;
                    self.line_end()?;
                    self.move_entries(&mut node);
                    node.set_span(SourceSpan::from(start..end));
                    return Some((node, start, end));
                }
                Some(b'{') if spaces > 0 && depth < MAX_DEPTH => {
                    self.at += 1;
                    self.line_end()?;
                    self.move_entries(&mut node);
                    let children = self.document(depth + 1)?;
                    // At the `}` that `document` stopped at.
                    self.at += 1;
                    self.skip_spaces();
                    let end = self.at;
                    match self.peek() {
                        None | Some(b'\n') => self.line_end()?,
                        Some(b'/') if end > 0 && matches!(self.bytes()[end - 1], b' ' | b'\t') => {
                            self.comment()?
                        }
                        _ => return None,
                    }
                    node.set_children(children);
                    node.set_span(SourceSpan::from(start..end));
                    return Some((node, start, end));
                }
                Some(_) if spaces > 0 => {
                    let entry = self.entry()?;
                    self.entries.push(entry);
                }
                Some(_) => return None,
            }
        }
    }

    /// Moves the entries read so far into `node`, in a vector of exactly their number.
    fn move_entries(&mut self, node: &mut KdlNode) {
        let entries = node.entries_mut();
        entries.reserve_exact(self.entries.len());
        entries.append(&mut self.entries);
    }

    /// An argument or a `key=value` property.
    fn entry(&mut self) -> Option<KdlEntry> {
        let start = self.at;
        let mut entry = match self.peek()? {
            b'"' | b'#' | b'0'..=b'9' | b'-' => KdlEntry::new(self.value()?),
            byte if identifier_start(byte) => {
                let key = self.identifier()?;
                if self.peek() != Some(b'=') {
                    // A bare word as a value: the `kdl` parser's business.
                    return None;
                }
                self.at += 1;
                KdlEntry::new_prop(key, self.value()?)
            }
            _ => return None,
        };
        entry.set_span(SourceSpan::from(start..self.at));
        Some(entry)
    }

    /// A value, which must end where an entry may: before a space or tab, a line end or the text's end (a
    /// comment after it needs a space first).
    fn value(&mut self) -> Option<KdlValue> {
        let value = match self.peek()? {
            b'"' => self.string()?,
            b'#' => self.keyword()?,
            _ => self.integer()?,
        };
        match self.peek() {
            None | Some(b' ' | b'\t' | b'\n') => Some(value),
            _ => None,
        }
    }

    /// At `"`: a one-line string without escapes.
    fn string(&mut self) -> Option<KdlValue> {
        let body = self.at + 1;
        let length = self.bytes()[body..]
            .iter()
            .position(|&byte| matches!(byte, b'"' | b'\\' | b'\n'))?;
        if self.bytes()[body + length] != b'"' {
            return None;
        }
        if length == 0 && self.bytes().get(body + 1) == Some(&b'"') {
            // `"""`: a multi-line string.
            return None;
        }
        self.at = body + length + 1;
        // Cut at ASCII quotes, so at character boundaries.
        self.text
            .get(body..body + length)
            .map(|text| KdlValue::String(text.to_owned()))
    }

    /// At `#`: `#true`, `#false` or `#null`.
    fn keyword(&mut self) -> Option<KdlValue> {
        let rest = &self.bytes()[self.at..];
        let (value, length) = if rest.starts_with(b"#true") {
            (KdlValue::Bool(true), 5)
        } else if rest.starts_with(b"#false") {
            (KdlValue::Bool(false), 6)
        } else if rest.starts_with(b"#null") {
            (KdlValue::Null, 5)
        } else {
            return None;
        };
        self.at += length;
        Some(value)
    }

    /// A whole decimal number, with an optional `-`.
    fn integer(&mut self) -> Option<KdlValue> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        if self.at == digits {
            return None;
        }
        self.text
            .get(start..self.at)?
            .parse::<i128>()
            .ok()
            .map(KdlValue::Integer)
    }

    /// A bare ASCII name: a letter or `_`, then letters, digits, `_`, `-` and `.`; never one of the words KDL
    /// keeps for itself. It must end before a space, `=`, a line end or the text's end.
    fn identifier(&mut self) -> Option<KdlIdentifier> {
        let start = self.at;
        if !self.peek().is_some_and(identifier_start) {
            return None;
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.')
        ) {
            self.at += 1;
        }
        if !matches!(self.peek(), None | Some(b' ' | b'\t' | b'\n' | b'=')) {
            return None;
        }
        let name = self.text.get(start..self.at)?;
        if matches!(name, "true" | "false" | "null" | "inf" | "nan") {
            return None;
        }
        let mut identifier = KdlIdentifier::from(name);
        identifier.set_span(SourceSpan::from(start..self.at));
        Some(identifier)
    }
}

fn identifier_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Every node, entry and span of a document, its own span first.
    fn flat(document: &KdlDocument) -> Vec<String> {
        let mut out = vec![format!("document {:?}", document.span())];
        super::super::reader::flatten_nodes(document, &mut out);
        out
    }

    /// The plain reader reads `text`, and gives what the `kdl` parser gives.
    fn assert_same_as_kdl(text: &str) {
        let plain = parse_plain(text).unwrap_or_else(|| panic!("not read as plain: {text:?}"));
        let kdl = KdlDocument::parse_v2(text).expect("valid KDL");
        assert_eq!(flat(&plain), flat(&kdl), "{text:?}");
    }

    #[test]
    fn plain_documents_read_exactly_as_the_kdl_parser_reads_them() {
        let documents = [
            "pipeline \"p\"\n",
            "pipeline \"p\"",
            "pipeline \"p\"  // c\n\nstage \"a\"   {\n    run \"true\"  x=1 y=#true\n    needs \"b\" \"c\"\n  // only comment\n}\nstage \"b\" {\n}\nenv K=\"v\"\n",
            "// leading comment\npipeline \"p\"\nstage \"a\" {\n    // first comment\n    run \"x\"   \n    run \"y\"   // trailing\n}   \n\n  stage \"b\" {\n    run \"z\"\n\n}\nlast \"q\"",
            "\n\na -1 2 \"\u{e9}t\u{e9}\" 007 {\n\tb\n}\n",
            "a {\n  b {\n    c {\n      d \"deep\" k=#null\n    }\n  }\n}\n",
            "a {\n  b \"x\"\n  }   // after\nc\n",
            "stage \"s\" {\n    run \"echo 'quoted' and {braces} // not a comment\"\n    timeout \"10m\"\n    retry 2\n}\n",
            "node.with-dots_and-dashes \"\" \"  \" key.k-k=\"v\" n=-12\n",
            "a \"x\"\t\t\n\tb \"y\"\t// tab\n",
            "empty {\n  // nothing but a comment\n}\n",
        ];
        for text in documents {
            assert_same_as_kdl(text);
        }
    }

    #[test]
    fn anything_else_is_left_to_the_kdl_parser() {
        let declined = [
            "",
            "// only a comment\n",
            "a \"esc\\\"aped\"\n",
            "a #\"raw\"#\n",
            "a \"\"\"\n  multi\n  \"\"\"\n",
            "/-a \"gone\"\nb\n",
            "a /* c */ \"x\"\n",
            "a \"x\"; b \"y\"\n",
            "a \"x\" \\\n  \"y\"\n",
            "(t)a \"x\"\n",
            "a (t)\"x\"\n",
            "a 1.5\n",
            "a 0x1f\n",
            "a 1_000\n",
            "a bare\n",
            "a \"x\"\r\nb\r\n",
            "a\u{a0}\"x\"\n",
            "\u{feff}a \"x\"\n",
            "a \"x\"\u{2028}b\n",
            "a { b \"x\" }\n",
            "a {\n  b \"x\" }\n",
            "a{\n}\n",
            "true \"x\"\n",
            "a k = \"v\"\n",
            "a \"x\"//c\n",
            "a \"unclosed\n",
            "a {\n  b\n",
            "}\n",
            "a #inf\n",
            "a \"x\"\"y\"\n",
            "a:b \"x\"\n",
            "a +1\n",
        ];
        for text in declined {
            assert!(parse_plain(text).is_none(), "read as plain: {text:?}");
        }
    }

    #[test]
    fn a_generated_pipeline_is_plain() {
        let mut text = String::from("pipeline \"generated\"\n");
        for i in 0..300 {
            text.push_str(&format!("stage \"s{i}\" {{\n    run \"true\"\n"));
            if i > 1 {
                text.push_str(&format!("    needs \"s{}\" \"s{}\"\n", i - 1, i - 2));
            }
            text.push_str("}\n");
        }
        assert_same_as_kdl(&text);
    }

    /// Every node's entries and every block's nodes take only the room they use: a large pipeline's document is
    /// mostly these vectors.
    #[test]
    fn vectors_of_entries_and_nodes_take_only_the_room_they_use() {
        fn check(document: &mut KdlDocument) {
            let nodes = document.nodes_mut();
            assert_eq!(nodes.capacity(), nodes.len());
            for node in nodes.iter_mut() {
                let entries = node.entries_mut();
                assert_eq!(entries.capacity(), entries.len(), "{node}");
                if let Some(children) = node.children_mut() {
                    check(children);
                }
            }
        }
        let text = "pipeline \"p\"\nstage \"a\" {\n    run \"true\"\n    needs \"b\" \"c\" \"d\"\n}\nstage \"b\" x=1 {\n}\n";
        let Some(mut document) = parse_plain(text) else {
            panic!("a plain document");
        };
        check(&mut document);
    }

    /// Lines mixing plain and other KDL, so that generated documents land on both sides.
    fn line() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("\"s\"".to_owned()),
            Just("\"\"".to_owned()),
            Just("\"a b\"".to_owned()),
            Just("\"\u{e9}\"".to_owned()),
            Just("12".to_owned()),
            Just("-3".to_owned()),
            Just("#true".to_owned()),
            Just("#null".to_owned()),
            Just("k=\"v\"".to_owned()),
            Just("k2=5".to_owned()),
            Just("1.5".to_owned()),
            Just("bare".to_owned()),
            Just("\"e\\n\"".to_owned()),
            Just("#\"raw\"#".to_owned()),
            Just("/-\"x\"".to_owned()),
            Just("(t)\"x\"".to_owned()),
            Just("k = 1".to_owned()),
        ];
        let space = prop_oneof![
            Just(" ".to_owned()),
            Just("  ".to_owned()),
            Just("\t".to_owned()),
            Just(String::new())
        ];
        let name = prop_oneof![
            Just("a".to_owned()),
            Just("node-x".to_owned()),
            Just("n.1".to_owned()),
            Just("\"q\"".to_owned()),
            Just("true".to_owned())
        ];
        let end = prop_oneof![
            Just(String::new()),
            Just(" // c".to_owned()),
            Just("   ".to_owned()),
            Just(" {".to_owned()),
            Just("{".to_owned()),
            Just(";".to_owned())
        ];
        let indent = prop_oneof![
            Just(String::new()),
            Just("  ".to_owned()),
            Just("\t".to_owned())
        ];
        prop_oneof![
            (
                indent.clone(),
                name,
                prop::collection::vec((space, token), 0..4),
                end
            )
                .prop_map(|(indent, name, entries, end)| {
                    let mut line = indent + &name;
                    for (space, token) in entries {
                        line.push_str(&space);
                        line.push_str(&token);
                    }
                    line + &end
                }),
            (indent.clone()).prop_map(|indent| indent + "}"),
            (indent).prop_map(|indent| indent + "// comment"),
            Just(String::new()),
        ]
    }

    /// A node line of plain KDL, with its spacing varied.
    fn plain_node() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("\"s\""),
            Just("\"\""),
            Just("\"a { b } // c\""),
            Just("\"\u{e9}\u{4e2d}\""),
            Just("0"),
            Just("-42"),
            Just("#true"),
            Just("#false"),
            Just("#null"),
            Just("key=\"v\""),
            Just("k.2=7"),
        ];
        let space = prop_oneof![Just(" "), Just("   "), Just("\t")];
        let name = prop_oneof![Just("a"), Just("stage"), Just("run-it"), Just("_n.x")];
        (
            name,
            prop::collection::vec((space, token), 0..4),
            prop_oneof![Just(""), Just("  "), Just(" // end")],
        )
            .prop_map(|(name, entries, end)| {
                let mut line = name.to_owned();
                for (space, token) in entries {
                    line.push_str(space);
                    line.push_str(token);
                }
                line + end
            })
    }

    /// A plain document: nodes, some with children blocks, blank and comment lines between them.
    fn plain_document() -> impl Strategy<Value = Vec<String>> {
        let leaf = plain_node().prop_map(|line| vec![line]);
        leaf.prop_recursive(3, 40, 6, |inner| {
            (
                plain_node(),
                prop::collection::vec(inner, 0..5),
                prop_oneof![Just(""), Just("   "), Just(" // closed")],
                any::<bool>(),
            )
                .prop_map(|(head, children, after, blank)| {
                    // A comment would take the `{` with it.
                    let head = head.trim_end_matches(" // end");
                    let mut lines = vec![format!("{head} {{")];
                    if blank {
                        lines.push(String::new());
                        lines.push("  // inside".to_owned());
                    }
                    for child in children {
                        lines.extend(child.into_iter().map(|line| format!("    {line}")));
                    }
                    lines.push(format!("}}{after}"));
                    lines
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn plain_documents_of_any_shape_read_as_the_kdl_parser_reads_them(
            nodes in prop::collection::vec(plain_document(), 1..6),
            final_newline in any::<bool>(),
        ) {
            let mut text = nodes.into_iter().flatten().collect::<Vec<_>>().join("\n");
            if final_newline {
                text.push('\n');
            }
            let plain = parse_plain(&text);
            prop_assert!(plain.is_some(), "not read as plain: {:?}", text);
            let kdl = KdlDocument::parse_v2(&text);
            prop_assert!(kdl.is_ok(), "invalid KDL: {:?}", text);
            prop_assert_eq!(
                flat(&plain.expect("checked above")),
                flat(&kdl.expect("checked above")),
                "{:?}",
                text
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn whatever_reads_as_plain_reads_the_same_with_the_kdl_parser(
            lines in prop::collection::vec(line(), 1..12),
            final_newline in any::<bool>(),
        ) {
            let mut text = lines.join("\n");
            if final_newline {
                text.push('\n');
            }
            if let Some(plain) = parse_plain(&text) {
                let kdl = KdlDocument::parse_v2(&text);
                prop_assert!(kdl.is_ok(), "plain accepted invalid KDL: {text:?}");
                let kdl = kdl.expect("checked above");
                prop_assert_eq!(flat(&plain), flat(&kdl), "{:?}", text);
            }
        }
    }
}
