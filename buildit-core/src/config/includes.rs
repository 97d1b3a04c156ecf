//! `include "FILE"`: the files a pipeline includes, read through a loader and joined after it into one text.

use std::collections::HashMap;

use miette::SourceSpan;

use super::reader::Reader;
use crate::diagnostic::{ConfigDiagnostic, DiagnosticCode, SourceFile};

/// The most files one pipeline may include (all levels together).
pub const MAX_INCLUDED_FILES: usize = 32;
/// How deep includes may nest (a file included by an included file is at depth 2).
pub const MAX_INCLUDE_DEPTH: usize = 4;

/// What a loader says of a file it cannot give.
pub type LoadError = String;

/// A pipeline and the files it includes, joined: the text to parse and where each file is in it.
#[derive(Debug)]
pub(crate) struct Joined {
    pub(crate) text: String,
    /// Every file, the pipeline's first; empty when it includes nothing.
    pub(crate) files: Vec<SourceFile>,
    /// The included files by their names relative to the pipeline's directory, with their text.
    pub(crate) included: Vec<(String, String)>,
    /// Includes that cannot be followed.
    pub(crate) diagnostics: Vec<ConfigDiagnostic>,
    /// Why files that are not KDL on their own are not (in the joined text's offsets): when there are any, the
    /// joined text is not parsed.
    pub(crate) syntax: Vec<ConfigDiagnostic>,
}

/// One file of the join, as it is being read.
struct Part {
    /// Its path relative to the pipeline's directory.
    path: String,
    start: usize,
    depth: usize,
    /// The part that included it.
    parent: Option<usize>,
}

/// Reads `text` (the pipeline, shown as `name`) and, breadth first, every file it includes, through `load`
/// (given a `/`-separated path relative to the pipeline's directory, never absolute nor with `..`). A file
/// included twice is read once; a cycle, a path leaving the directory, too many files or too deep an include
/// is reported at its `include`.
pub(crate) fn join(
    text: &str,
    name: &str,
    load: &mut dyn FnMut(&str) -> Result<String, LoadError>,
) -> Joined {
    let mut joined = text.to_owned();
    // The pipeline's own path, relative to its directory: its name's last component.
    let own_path = name.rsplit('/').next().unwrap_or(name).to_owned();
    let mut by_path: HashMap<String, usize> = HashMap::from([(own_path.clone(), 0)]);
    let mut parts = vec![Part {
        path: own_path,
        start: 0,
        depth: 0,
        parent: None,
    }];
    let mut ends = vec![text.len()];
    let mut diagnostics = Vec::new();
    let mut included = Vec::new();
    let mut syntax = Vec::new();
    let mut next = 0;
    while next < parts.len() {
        let current = next;
        next += 1;
        let (start, end) = (parts[current].start, ends[current]);
        let own = joined[start..end].to_owned();
        // A pipeline that includes nothing is parsed once, alone, by the caller.
        if current == 0 && !own.contains("include") {
            continue;
        }
        // Each file is read alone: to find its includes, and so that a file that is not KDL on its own (an
        // unclosed `{`, string or comment) is said to be so in that file, not mended or blamed by the next one.
        let mut reader = Reader::new(&own);
        let Some(document) = reader.parse_document() else {
            syntax.extend(
                reader
                    .diagnostics
                    .into_sorted()
                    .into_iter()
                    .map(|mut diagnostic| {
                        for label in &mut diagnostic.labels {
                            label.span = shifted(label.span, start);
                        }
                        diagnostic
                    }),
            );
            continue;
        };
        for node in document.nodes() {
            if node.name().value() != "include" {
                continue;
            }
            let [entry] = node.entries() else { continue };
            let (None, Some(target)) = (entry.name(), entry.value().as_string()) else {
                continue;
            };
            let span = shifted(entry.span(), start);
            let fail = |diagnostics: &mut Vec<ConfigDiagnostic>, message: String, help: &str| {
                diagnostics.push(
                    ConfigDiagnostic::error(DiagnosticCode::Include, message, span, "this include")
                        .with_help(help),
                );
            };
            let Some(path) = resolve(&parts[current].path, target) else {
                fail(
                    &mut diagnostics,
                    format!("include `{target}` is outside the pipeline's directory"),
                    "include files in the pipeline's directory or below it, by a relative path",
                );
                continue;
            };
            if let Some(chain) = cycle(&parts, current, &path) {
                fail(
                    &mut diagnostics,
                    format!("`{path}` includes itself: {chain}"),
                    "remove one of the includes of the cycle",
                );
                continue;
            }
            if by_path.contains_key(&path) {
                // Included by another file already: its nodes are there once.
                continue;
            }
            if parts[current].depth + 1 > MAX_INCLUDE_DEPTH {
                fail(
                    &mut diagnostics,
                    format!("include `{target}` is nested more than {MAX_INCLUDE_DEPTH} deep"),
                    "include it from a file closer to the pipeline",
                );
                continue;
            }
            if parts.len() > MAX_INCLUDED_FILES {
                fail(
                    &mut diagnostics,
                    format!("the pipeline includes more than {MAX_INCLUDED_FILES} files"),
                    "join some of the included files",
                );
                continue;
            }
            match load(&path) {
                Ok(text) => {
                    // A newline between files: the last node of one never runs into the first of the next.
                    joined.push('\n');
                    let file_start = joined.len();
                    joined.push_str(&text);
                    by_path.insert(path.clone(), parts.len());
                    parts.push(Part {
                        path: path.clone(),
                        start: file_start,
                        depth: parts[current].depth + 1,
                        parent: Some(current),
                    });
                    ends.push(joined.len());
                    included.push((path, text));
                }
                Err(problem) => fail(
                    &mut diagnostics,
                    format!("cannot read included file `{path}`: {problem}"),
                    "include paths are relative to the file that includes them",
                ),
            }
            // Past the size a pipeline may have, reading more files only costs time: the parse refuses it.
            if joined.len() > super::reader::MAX_FILE_BYTES {
                break;
            }
        }
    }
    let files = if parts.len() > 1 {
        let dir = parent_dir(name);
        parts
            .iter()
            .zip(&ends)
            .enumerate()
            .map(|(index, (part, &end))| SourceFile {
                name: if index == 0 {
                    name.to_owned()
                } else {
                    format!("{dir}{}", part.path)
                },
                start: part.start,
                end,
            })
            .collect()
    } else {
        Vec::new()
    };
    Joined {
        text: joined,
        files,
        included,
        diagnostics,
        syntax,
    }
}

fn shifted(span: SourceSpan, by: usize) -> SourceSpan {
    SourceSpan::from(span.offset() + by..span.offset() + by + span.len())
}

/// `ci/` for `ci/buildit.kdl`, `` for `buildit.kdl`.
fn parent_dir(name: &str) -> &str {
    name.rfind('/').map_or("", |at| &name[..=at])
}

/// The path of `target` included by the file at `from` (both relative to the pipeline's directory), without
/// `.` or `..`; `None` when it is absolute or leaves the directory.
fn resolve(from: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.starts_with('\\') || target.contains('\0') {
        return None;
    }
    let mut parts: Vec<&str> = parent_dir(from)
        .split('/')
        .filter(|part| !part.is_empty())
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// `a.kdl -> b.kdl -> a.kdl` when `path` is the file at `current` or one that (transitively) included it.
fn cycle(parts: &[Part], current: usize, path: &str) -> Option<String> {
    let mut chain = vec![path.to_owned()];
    let mut at = Some(current);
    while let Some(index) = at {
        let part = &parts[index];
        chain.push(part.path.clone());
        if part.path == path {
            chain.reverse();
            return Some(chain.join(" -> "));
        }
        at = part.parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_directory_only() {
        assert_eq!(resolve("", "ci/a.kdl").as_deref(), Some("ci/a.kdl"));
        assert_eq!(resolve("ci/a.kdl", "b.kdl").as_deref(), Some("ci/b.kdl"));
        assert_eq!(resolve("ci/a.kdl", "../c.kdl").as_deref(), Some("c.kdl"));
        assert_eq!(
            resolve("ci/a.kdl", "./x/../d.kdl").as_deref(),
            Some("ci/d.kdl")
        );
        assert_eq!(resolve("", "../outside.kdl"), None);
        assert_eq!(resolve("ci/a.kdl", "../../outside.kdl"), None);
        assert_eq!(resolve("", "/etc/passwd"), None);
        assert_eq!(resolve("", "."), None);
    }
}
