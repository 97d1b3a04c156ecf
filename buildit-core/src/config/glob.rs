//! Glob patterns for branches, tags and paths: `*` (not across `/`), `**` (across `/`), `?`, `[a-z]`, `[!x]`.

use serde::{Serialize, Serializer};

/// Bounds the size of the compiled matcher.
const MAX_PATTERN_LEN: usize = 1024;

/// A checked glob pattern. Our parser reports syntax errors; the `regex` crate does the matching, in time
/// linear in the candidate whatever the pattern.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    matcher: regex::Regex,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Glob {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    Star,
    DoubleStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Glob {
    /// Compiles a pattern, or says what is wrong with it.
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a pattern cannot be empty".into());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("a pattern is at most {MAX_PATTERN_LEN} bytes long"));
        }
        let mut tokens = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            let token = match ch {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    Token::DoubleStar
                }
                '*' => Token::Star,
                '?' => Token::AnyChar,
                '\\' => Token::Literal(chars.next().ok_or("pattern ends with a lone `\\`")?),
                '[' => {
                    let negated = matches!(chars.peek(), Some('!' | '^'));
                    if negated {
                        chars.next();
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while let Some(ch) = chars.next() {
                        if ch == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if chars.peek() == Some(&'-') {
                            chars.next();
                            match chars.next() {
                                Some(']') => {
                                    ranges.push((ch, ch));
                                    ranges.push(('-', '-'));
                                    closed = true;
                                    break;
                                }
                                Some(high) if high >= ch => ranges.push((ch, high)),
                                Some(high) => {
                                    return Err(format!("range `{ch}-{high}` goes backwards"));
                                }
                                None => break,
                            }
                        } else {
                            ranges.push((ch, ch));
                        }
                    }
                    if !closed {
                        return Err("`[` is never closed with `]`".into());
                    }
                    Token::Class { negated, ranges }
                }
                other => Token::Literal(other),
            };
            tokens.push(token);
        }
        let matcher = regex::Regex::new(&to_regex(&tokens))
            .map_err(|error| format!("pattern cannot be compiled: {error}"))?;
        Ok(Self {
            text: text.to_owned(),
            matcher,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `candidate` matches.
    pub fn is_match(&self, candidate: &str) -> bool {
        self.matcher.is_match(candidate)
    }
}

/// The regular expression that matches what the tokens do: `*` and `?` stay within a path segment, `**`
/// crosses `/` (and `**/` also matches no directory at all: `src/**/*.rs` matches `src/main.rs`), a class
/// matches any character in or (negated) out of its ranges, `/` included.
fn to_regex(tokens: &[Token]) -> String {
    // `s`: `**` crosses line breaks too; the pattern is anchored at both ends.
    let mut re = String::from("(?s)\\A(?:");
    let mut index = 0;
    while let Some(token) = tokens.get(index) {
        match token {
            Token::Literal(ch) => re.push_str(&regex::escape(ch.encode_utf8(&mut [0; 4]))),
            Token::AnyChar => re.push_str("[^/]"),
            Token::Star => re.push_str("[^/]*"),
            Token::DoubleStar if tokens.get(index + 1) == Some(&Token::Literal('/')) => {
                re.push_str("(?:.*/)?");
                index += 1;
            }
            Token::DoubleStar => re.push_str(".*"),
            Token::Class { negated, ranges } => {
                re.push_str(if *negated { "[^" } else { "[" });
                for &(low, high) in ranges {
                    push_class_char(&mut re, low);
                    if high != low {
                        re.push('-');
                        push_class_char(&mut re, high);
                    }
                }
                re.push(']');
            }
        }
        index += 1;
    }
    re.push_str(")\\z");
    re
}

/// A character inside a regex class, escaped when the class syntax gives it a meaning.
fn push_class_char(re: &mut String, ch: char) {
    if matches!(ch, '\\' | ']' | '[' | '^' | '-' | '&' | '~') {
        re.push('\\');
    }
    re.push(ch);
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(text: &str) -> Glob {
        match Glob::new(text) {
            Ok(glob) => glob,
            Err(error) => panic!("{text}: {error}"),
        }
    }

    #[test]
    fn star_stays_within_a_segment() {
        assert!(glob("release/*").is_match("release/1.0"));
        assert!(!glob("release/*").is_match("release/1.0/hotfix"));
        assert!(glob("release/**").is_match("release/1.0/hotfix"));
        assert!(glob("v*").is_match("v1.2.3"));
        assert!(!glob("v*").is_match("1.2.3"));
        assert!(glob("main").is_match("main"));
        assert!(!glob("main").is_match("main2"));
        assert!(glob("src/**/*.rs").is_match("src/a/b/c.rs"));
        assert!(glob("src/**/*.rs").is_match("src/main.rs"));
        assert!(glob("**/*.rs").is_match("main.rs"));
        assert!(!glob("src/**/*.rs").is_match("srcmain.rs"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(glob("v[0-9]*").is_match("v1"));
        assert!(!glob("v[!0-9]*").is_match("v1"));
        assert!(glob("a\\*").is_match("a*"));
        assert!(!glob("a\\*").is_match("ab"));
        assert!(glob("file?").is_match("file1"));
    }

    #[test]
    fn the_documented_edges_hold() {
        // `?` and `*` count characters, not bytes.
        assert!(glob("caf?").is_match("café"));
        assert!(glob("[é-ë]").is_match("ê"));
        assert!(!glob("[!é]").is_match("é"));
        // A class may match `/`; a negated one does unless it names it.
        assert!(glob("a[/]b").is_match("a/b"));
        assert!(glob("a[!x]b").is_match("a/b"));
        assert!(!glob("a[!/]b").is_match("a/b"));
        // `]` first and `-` last in a class are literal; characters the regex syntax knows are plain.
        assert!(glob("[]x]").is_match("]"));
        assert!(glob("[a-]").is_match("-"));
        assert!(glob("[&~^]").is_match("^"));
        assert!(glob("a.b+(c)|{d}$").is_match("a.b+(c)|{d}$"));
        assert!(!glob("a.b").is_match("axb"));
        // `**` crosses `/` wherever it is, line breaks included; `**/` may match no directory.
        assert!(glob("out/**.log").is_match("out/a/b.log"));
        assert!(glob("x**y").is_match("xy"));
        assert!(glob("x**y").is_match("x/a/y"));
        assert!(glob("**").is_match("a\nb"));
        assert!(glob("a/**/b").is_match("a/b"));
        assert!(!glob("release/**").is_match("release"));
        assert!(glob("release/**").is_match("release/"));
        assert!(!glob("a*").is_match("a\nb/c"));
    }

    #[test]
    fn rejects_broken_patterns() {
        for bad in ["", "[abc", "a\\", "[z-a]"] {
            assert!(Glob::new(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn adversarial_patterns_stay_fast() {
        let pattern = glob(&"*a".repeat(30));
        let text = "a".repeat(200) + "b";
        assert!(!pattern.is_match(&text));
    }
}
