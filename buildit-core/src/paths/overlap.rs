//! Whether paths that stages restore or collect (cache paths, artifacts) overlap: the scheduler runs stages
//! whose paths overlap one after the other, `validate` warns about them.

use std::collections::HashMap;
use std::path::{Component, Path};

/// Where a claimed path lives: stages of a run share the workspace; host stages also share the home
/// directory and the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Base {
    Workspace,
    Home,
    Root,
}

/// A path a stage restores or collects, as components; a component may be a glob (`*.js`), and `**` (or a
/// variable whose value is not known yet) may stand for any number of components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Claim {
    base: Base,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Part {
    /// A plain name.
    Name(String),
    /// A glob within one component: the literal text before its first wildcard and after its last.
    Glob { prefix: String, suffix: String },
    /// Any number of components (`**`, or an unknown value that may contain `/`).
    Any,
}

/// Marks where an unknown value was in a path rendered for [`Claim::parse`]; never in a real path.
pub(crate) const UNKNOWN: &str = "\u{0}";

impl Claim {
    /// A cache `path` (relative to the workspace, `~/...` or absolute) or an `artifacts` pattern (relative).
    /// [`UNKNOWN`] in it stands for a value not known yet. `None` for a path that claims nothing (empty, or
    /// refused at run time anyway).
    pub(crate) fn parse(path: &str) -> Option<Self> {
        let (base, rest) = if let Some(rest) = path.strip_prefix("~/") {
            (Base::Home, rest)
        } else if let Some(rest) = path.strip_prefix('/') {
            (Base::Root, rest)
        } else {
            (Base::Workspace, path)
        };
        let mut parts = Vec::new();
        for component in Path::new(rest).components() {
            let Component::Normal(name) = component else {
                if matches!(component, Component::ParentDir) {
                    return None;
                }
                continue;
            };
            let name = name.to_string_lossy();
            let part = if name == "**" || name == UNKNOWN {
                Part::Any
            } else if name.contains(UNKNOWN) {
                // Part of a name is unknown: the value may hold `/`, so the rest of the path is open.
                let known = name.split(UNKNOWN).next().unwrap_or("");
                parts.push(Part::Glob {
                    prefix: known.to_owned(),
                    suffix: String::new(),
                });
                parts.push(Part::Any);
                break;
            } else if name.contains("**") {
                // `**` inside a name (`**.log`) crosses `/` as well: the rest of the path is open.
                let known: String = name.chars().take_while(|c| !"*?[".contains(*c)).collect();
                parts.push(Part::Glob {
                    prefix: known,
                    suffix: String::new(),
                });
                parts.push(Part::Any);
                break;
            } else if name.contains(['*', '?', '[']) {
                let prefix: String = name.chars().take_while(|c| !"*?[".contains(*c)).collect();
                let last_wildcard = name.rfind(['*', '?', ']']).map_or(0, |at| at + 1);
                Part::Glob {
                    prefix,
                    suffix: name.get(last_wildcard..).unwrap_or("").to_owned(),
                }
            } else {
                Part::Name(name.into_owned())
            };
            parts.push(part);
        }
        if parts.is_empty() {
            return None;
        }
        Some(Self { base, parts })
    }

    /// Whether the claim lies outside the workspace (home directory or file system).
    pub(crate) fn outside_workspace(&self) -> bool {
        self.base != Base::Workspace
    }

    /// Whether the two may name the same file: equal, one inside the other, or globs that may match the same
    /// path. Errs on the side of `true` when it cannot tell.
    pub(crate) fn overlaps(&self, other: &Self) -> bool {
        self.base == other.base && prefix_overlap(&self.parts, &other.parts)
    }
}

/// The plain names a claim starts with, up to its first wildcard.
fn leading(claim: &Claim) -> Vec<&str> {
    claim
        .parts
        .iter()
        .map_while(|part| match part {
            Part::Name(name) => Some(name.as_str()),
            _ => None,
        })
        .collect()
}

/// Calls `visit(i, j)` for the pairs of `claims` that overlap, each once (in no particular order), until it
/// returns `false`. Claims are indexed by their leading plain names, so that only claims one of whose leading
/// names is a prefix of the other's are compared: thousands of stages with their own `dist/<name>` cost a
/// lookup each, not a comparison with every other stage.
pub(crate) fn overlapping_pairs(claims: &[&Claim], mut visit: impl FnMut(usize, usize) -> bool) {
    let mut by_leading: HashMap<(Base, Vec<&str>), Vec<usize>> = HashMap::new();
    for (index, claim) in claims.iter().enumerate() {
        by_leading
            .entry((claim.base, leading(claim)))
            .or_default()
            .push(index);
    }
    for (index, claim) in claims.iter().enumerate() {
        let names = leading(claim);
        // Two claims can overlap only if the leading names of one are a prefix of the other's (both are
        // plain up to there, and a wildcard after them can match anything below): look up each prefix of
        // this claim's leading names; the longer side of every pair finds the shorter.
        for length in 0..=names.len() {
            let key = (claim.base, names.get(..length).unwrap_or_default().to_vec());
            let Some(candidates) = by_leading.get(&key) else {
                continue;
            };
            for &other in candidates {
                // Equal leading names are found from both sides: keep one.
                if other == index || (length == names.len() && other < index) {
                    continue;
                }
                if claim.overlaps(claims[other]) && !visit(index.min(other), index.max(other)) {
                    return;
                }
            }
        }
    }
}

/// Whether some path matched by `a` is equal to, inside, or contains some path matched by `b`.
fn prefix_overlap(a: &[Part], b: &[Part]) -> bool {
    match (a.split_first(), b.split_first()) {
        // One ran out: it names a directory containing what the other names.
        (None, _) | (_, None) => true,
        (Some((Part::Any, _)), _) | (_, Some((Part::Any, _))) => true,
        (Some((first, rest_a)), Some((second, rest_b))) => {
            component_overlap(first, second) && prefix_overlap(rest_a, rest_b)
        }
    }
}

fn component_overlap(a: &Part, b: &Part) -> bool {
    match (a, b) {
        (Part::Name(x), Part::Name(y)) => x == y,
        (Part::Name(name), Part::Glob { prefix, suffix })
        | (Part::Glob { prefix, suffix }, Part::Name(name)) => {
            name.len() >= prefix.len() + suffix.len()
                && name.starts_with(prefix.as_str())
                && name.ends_with(suffix.as_str())
        }
        (
            Part::Glob {
                prefix: p1,
                suffix: s1,
            },
            Part::Glob {
                prefix: p2,
                suffix: s2,
            },
        ) => {
            (p1.starts_with(p2.as_str()) || p2.starts_with(p1.as_str()))
                && (s1.ends_with(s2.as_str()) || s2.ends_with(s1.as_str()))
        }
        (Part::Any, _) | (_, Part::Any) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(path: &str) -> Claim {
        match Claim::parse(path) {
            Some(claim) => claim,
            None => panic!("`{path}` claims nothing"),
        }
    }

    #[test]
    fn overlapping_paths_are_found_and_distinct_ones_are_not() {
        let unknown = format!("out/{UNKNOWN}");
        let overlapping = [
            ("target", "target"),
            ("target", "./target/"),
            ("target", "target/release/app"),
            ("dist/*.js", "dist/app.js"),
            ("dist/**", "dist/a/b/c.txt"),
            ("dist/*.js", "dist/*"),
            ("**/*.log", "logs/x.log"),
            ("out/**.log", "out/logs"),
            ("out/a", unknown.as_str()),
            ("~/.cargo", "~/.cargo/registry"),
            ("/var/cache", "/var/cache/x"),
        ];
        for (a, b) in overlapping {
            assert!(claim(a).overlaps(&claim(b)), "{a} and {b}");
            assert!(claim(b).overlaps(&claim(a)), "{b} and {a}");
        }
        let distinct = [
            ("target", "dist"),
            ("target", "targets"),
            ("dist/*.js", "dist/*.css"),
            ("dist/*.js", "build/app.js"),
            ("dist/a-*", "dist/b-*"),
            ("cache", "~/cache"),
            ("~/cache", "/cache"),
            ("out/v1/x", "out/v2/x"),
        ];
        for (a, b) in distinct {
            assert!(!claim(a).overlaps(&claim(b)), "{a} and {b}");
            assert!(!claim(b).overlaps(&claim(a)), "{b} and {a}");
        }
        for nothing in ["", ".", "./", "a/../b"] {
            assert_eq!(Claim::parse(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn pairs_are_found_through_the_index_as_by_comparing_all() {
        let paths = [
            "target",
            "target/app",
            "dist/*.js",
            "dist/a.js",
            "dist/a.css",
            "docs",
            "**/*.log",
            "logs/x.log",
            "~/.cargo",
            "~/.cargo/registry",
            "/var/x",
            "docs/api",
            "dist",
        ];
        let claims: Vec<Claim> = paths.iter().map(|path| claim(path)).collect();
        let refs: Vec<&Claim> = claims.iter().collect();
        let mut expected = Vec::new();
        for i in 0..claims.len() {
            for j in i + 1..claims.len() {
                if claims[i].overlaps(&claims[j]) {
                    expected.push((i, j));
                }
            }
        }
        assert!(expected.len() > 5, "{expected:?}");
        let mut found = Vec::new();
        overlapping_pairs(&refs, |i, j| {
            found.push((i, j));
            true
        });
        found.sort_unstable();
        assert_eq!(found, expected, "each pair once");
        let mut visited = 0;
        overlapping_pairs(&refs, |_, _| {
            visited += 1;
            visited < 2
        });
        assert_eq!(visited, 2, "stops when told");
    }
}
