//! Glob patterns for branches, tags and paths: `*` (not across `/`), `**` (across `/`), `?`, `[a-z]`, `[!x]`.

use serde::{Serialize, Serializer};

/// Bounds the matcher's recursion depth and memo table.
const MAX_PATTERN_LEN: usize = 1024;

/// A checked glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    tokens: Vec<Token>,
}

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
        Ok(Self {
            text: text.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `candidate` matches.
    pub fn is_match(&self, candidate: &str) -> bool {
        let candidate: Vec<char> = candidate.chars().collect();
        matches_at(&self.tokens, &candidate)
    }
}

/// Iterative matcher with single-star and double-star backtracking points, linear in practice.
fn matches_at(tokens: &[Token], text: &[char]) -> bool {
    // Memo over (token, position): bounded work even for adversarial patterns.
    let mut failed = vec![false; (tokens.len() + 1) * (text.len() + 1)];
    fn go(tokens: &[Token], t: usize, text: &[char], p: usize, failed: &mut [bool]) -> bool {
        let key = t * (text.len() + 1) + p;
        if failed[key] {
            return false;
        }
        let result = match tokens.get(t) {
            None => p == text.len(),
            // `**/` also matches no directory at all: `src/**/*.rs` matches `src/main.rs`.
            Some(Token::DoubleStar) if tokens.get(t + 1) == Some(&Token::Literal('/')) => {
                go(tokens, t + 2, text, p, failed)
                    || (p..=text.len()).any(|q| go(tokens, t + 1, text, q, failed))
            }
            Some(Token::DoubleStar) => (p..=text.len()).any(|q| go(tokens, t + 1, text, q, failed)),
            Some(Token::Star) => {
                let end = text[p..]
                    .iter()
                    .position(|&c| c == '/')
                    .map_or(text.len(), |i| p + i);
                (p..=end).any(|q| go(tokens, t + 1, text, q, failed))
            }
            Some(single) => {
                text.get(p).is_some_and(|&c| single_matches(single, c))
                    && go(tokens, t + 1, text, p + 1, failed)
            }
        };
        if !result {
            failed[key] = true;
        }
        result
    }
    go(tokens, 0, text, 0, &mut failed)
}

fn single_matches(token: &Token, ch: char) -> bool {
    match token {
        Token::Literal(expected) => *expected == ch,
        Token::AnyChar => ch != '/',
        Token::Class { negated, ranges } => {
            ranges.iter().any(|&(low, high)| (low..=high).contains(&ch)) != *negated
        }
        Token::Star | Token::DoubleStar => true,
    }
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
