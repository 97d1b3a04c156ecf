//! Test reports: finding a stage's JUnit XML files in a directory (bounded, never through a symbolic link) and
//! counting what they say.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::Glob;
use crate::events::TestSummary;
use crate::paths::inside_workspace;

/// The most report files read for one attempt.
pub const MAX_REPORT_FILES: usize = 64;
/// The most one report file may hold; a larger one is left unread (said in the log).
pub const MAX_REPORT_FILE_BYTES: usize = 16 * 1024 * 1024;
/// The most the report files of one attempt may hold together.
pub const MAX_REPORTS_BYTES: usize = 64 * 1024 * 1024;
/// The most failed tests named in a summary; the counts cover them all.
pub const MAX_FAILED_NAMES: usize = 50;
/// The longest test name kept, in characters; a longer one is cut and ends with `…`.
pub const MAX_TEST_NAME_CHARS: usize = 200;
/// The most directory entries looked at while searching for report files: a pattern such as `**/*.xml` over
/// a large workspace stops there rather than walk it all.
const MAX_ENTRIES_WALKED: usize = 200_000;
/// Never searched: BuildIt's own state and version control.
const SKIPPED_DIRS: [&str; 2] = [".buildit", ".git"];

/// How much older than an attempt's start a report may look and still count: file systems with coarse times,
/// and the clock of a container or a cluster's node a little behind this one.
pub const REPORT_CLOCK_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// What reading an attempt's reports gave: the counts, and the lines to write in the stage's log about files
/// that were not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectedReports {
    /// The counts and the first failed tests.
    pub summary: TestSummary,
    /// Why some files (or patterns) gave nothing, one line each.
    pub notes: Vec<String>,
}

/// Finds the files `patterns` (globs relative to `root`) match and counts the tests they report. `mask` is
/// applied to every test name before it is cut to [`MAX_TEST_NAME_CHARS`] (a secret cut in two would no longer
/// be recognised). Nothing here fails: a file that cannot be read is a note.
///
/// Files last written before `since` (less [`REPORT_CLOCK_SLACK`]) are left out with a note: a workspace keeps
/// the reports of earlier runs and attempts, and a stage that wrote none this time must not be shown theirs.
pub fn collect_reports(
    root: &Path,
    patterns: &[String],
    since: Option<std::time::SystemTime>,
    mask: impl Fn(&str) -> String,
) -> CollectedReports {
    let mut collected = CollectedReports::default();
    let files = find_report_files(root, patterns, &mut collected.notes);
    let mut total_bytes = 0usize;
    let oldest = since.and_then(|since| since.checked_sub(REPORT_CLOCK_SLACK));
    for relative in files {
        let shown = relative.display().to_string();
        if let Some(oldest) = oldest {
            let written =
                std::fs::symlink_metadata(root.join(&relative)).and_then(|meta| meta.modified());
            if written.is_ok_and(|written| written < oldest) {
                collected.notes.push(format!(
                    "buildit: report `{shown}` was written before this attempt began; it is not counted"
                ));
                continue;
            }
        }
        let text = match read_report(&root.join(&relative), MAX_REPORT_FILE_BYTES) {
            Ok(text) => text,
            Err(why) => {
                collected.summary.unreadable += 1;
                collected
                    .notes
                    .push(format!("buildit: report `{shown}` not read: {why}"));
                continue;
            }
        };
        total_bytes = total_bytes.saturating_add(text.len());
        if total_bytes > MAX_REPORTS_BYTES {
            collected.summary.unreadable += 1;
            collected.notes.push(format!(
                "buildit: report `{shown}` not read: the reports of an attempt hold at most {MAX_REPORTS_BYTES} \
                 bytes together"
            ));
            continue;
        }
        match count_report(&text, &mut collected.summary, &mask) {
            Ok(()) => collected.summary.files += 1,
            Err(why) => {
                collected.summary.unreadable += 1;
                collected.notes.push(format!(
                    "buildit: report `{shown}` is not JUnit XML BuildIt can read: {why}"
                ));
            }
        }
    }
    collected
}

/// The files (relative to `root`, sorted, each once) that `patterns` match: regular files only, found without
/// going through a symbolic link, at most [`MAX_REPORT_FILES`]. A pattern that matches nothing, or that is not
/// a plain relative glob, is noted.
pub fn find_report_files(
    root: &Path,
    patterns: &[String],
    notes: &mut Vec<String>,
) -> Vec<PathBuf> {
    // Sorted and each once, whichever patterns match it.
    let mut found: BTreeSet<PathBuf> = BTreeSet::new();
    let mut budget = MAX_ENTRIES_WALKED;
    for pattern in patterns {
        // `./target/*.xml` matches as `target/*.xml`: paths are compared in their plain form.
        let Some(plain) = inside_workspace(Path::new(pattern)) else {
            notes.push(format!(
                "buildit: report pattern `{pattern}` leaves the workspace; it is not read"
            ));
            continue;
        };
        let plain_text = plain.to_string_lossy().into_owned();
        let glob = match Glob::new(&plain_text) {
            Ok(glob) => glob,
            Err(problem) => {
                notes.push(format!(
                    "buildit: report pattern `{pattern}` is not a glob: {problem}"
                ));
                continue;
            }
        };
        let start: PathBuf = plain
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        let mut matches = Vec::new();
        if real_directories_to(root, &start) {
            walk(root, &start, &glob, &mut matches, &mut budget);
        }
        if matches.is_empty() {
            notes.push(format!("buildit: no report file matches `{pattern}`"));
        }
        found.extend(matches);
        if budget == 0 {
            notes.push(format!(
                "buildit: the search for reports stopped after {MAX_ENTRIES_WALKED} entries; name the reports' \
                 directory in the pattern (`target/nextest/*/junit.xml`, not `**/junit.xml`)"
            ));
            break;
        }
    }
    if found.len() > MAX_REPORT_FILES {
        notes.push(format!(
            "buildit: {} report files found; only the first {MAX_REPORT_FILES} are read",
            found.len()
        ));
    }
    found.into_iter().take(MAX_REPORT_FILES).collect()
}

/// Whether every directory from `root` down to `root/relative` (and `relative` itself, when it exists) is no
/// symbolic link: a link there would make BuildIt read another place of this machine.
fn real_directories_to(root: &Path, relative: &Path) -> bool {
    let mut at = root.to_path_buf();
    for component in relative.components() {
        at.push(component);
        match at.symlink_metadata() {
            Ok(metadata) if metadata.file_type().is_symlink() => return false,
            Ok(_) => {}
            // Missing: nothing to find, nothing to fear.
            Err(_) => return false,
        }
    }
    true
}

/// Collects the regular files under `start` (or `start` itself, a file) whose path relative to `root` matches
/// `glob`, without following symbolic links, looking at no more than `budget` entries.
fn walk(root: &Path, start: &Path, glob: &Glob, found: &mut Vec<PathBuf>, budget: &mut usize) {
    let at = root.join(start);
    let Ok(metadata) = at.symlink_metadata() else {
        return;
    };
    if metadata.is_file() {
        if glob.is_match(&start.to_string_lossy()) {
            found.push(start.to_path_buf());
        }
        return;
    }
    if !metadata.is_dir() {
        return;
    }
    let mut pending = vec![start.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let name = entry.file_name();
            let relative = dir.join(&name);
            // `file_type` does not follow links: a link is neither a file nor a directory here.
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            if file_type.is_dir() {
                let top = dir.as_os_str().is_empty();
                if !(top && SKIPPED_DIRS.iter().any(|skipped| name == *skipped)) {
                    pending.push(relative);
                }
            } else if file_type.is_file() && glob.is_match(&relative.to_string_lossy()) {
                found.push(relative);
            }
        }
    }
}

/// The text of the report file `path`, read without following a symbolic link (nor waiting on a FIFO), and
/// only if it holds at most `limit` bytes.
pub fn read_report(path: &Path, limit: usize) -> Result<String, String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let flags = nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits())
        .open(path)
        .map_err(|error| error.to_string())?;
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("not a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() > limit {
        return Err(format!("it holds more than {limit} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// Adds what one JUnit XML document reports to `summary`: its test cases counted by status (the cases
/// themselves, not the suites' `tests=` attributes, which a tool may leave out or get wrong), and its failed
/// ones named until [`MAX_FAILED_NAMES`] are.
pub fn count_report(
    text: &str,
    summary: &mut TestSummary,
    mask: impl Fn(&str) -> String,
) -> Result<(), String> {
    use quick_junit::{NonSuccessKind, TestCaseStatus};
    let report = parse_junit(text)?;
    for suite in &report.test_suites {
        for case in &suite.test_cases {
            summary.tests = summary.tests.saturating_add(1);
            match &case.status {
                TestCaseStatus::Success { .. } => continue,
                TestCaseStatus::Skipped { .. } => {
                    summary.skipped = summary.skipped.saturating_add(1);
                    continue;
                }
                TestCaseStatus::NonSuccess { kind, .. } => match kind {
                    NonSuccessKind::Failure => {
                        summary.failures = summary.failures.saturating_add(1);
                    }
                    NonSuccessKind::Error => summary.errors = summary.errors.saturating_add(1),
                },
            }
            if summary.failed.len() < MAX_FAILED_NAMES {
                let name = match case.classname.as_ref().map(|c| c.as_str()) {
                    Some(class) if !class.is_empty() => {
                        format!("{class}::{}", case.name.as_str())
                    }
                    _ => case.name.as_str().to_owned(),
                };
                summary.failed.push(cut(&mask(&name)));
            }
        }
    }
    Ok(())
}

/// A JUnit document: `<testsuites>` around the suites, or (as pytest and Maven Surefire write it) a single
/// `<testsuite>` at the top, which is read as if it were wrapped.
fn parse_junit(text: &str) -> Result<quick_junit::Report, String> {
    match quick_junit::Report::deserialize_from_str(text) {
        Ok(report) => Ok(report),
        Err(error) => {
            let body = strip_prolog(text);
            if body.trim_start().starts_with("<testsuite") && !body.contains("<testsuites") {
                quick_junit::Report::deserialize_from_str(&format!(
                    "<testsuites>{body}</testsuites>"
                ))
                .map_err(|error| error.to_string())
            } else {
                Err(error.to_string())
            }
        }
    }
}

/// `text` without its XML declaration, comments and doctype before the root element.
fn strip_prolog(text: &str) -> &str {
    let mut rest = text.trim_start_matches('\u{feff}').trim_start();
    loop {
        let end = if rest.starts_with("<?") {
            rest.find("?>").map(|at| at + 2)
        } else if rest.starts_with("<!--") {
            rest.find("-->").map(|at| at + 3)
        } else if rest.starts_with("<!") {
            rest.find('>').map(|at| at + 1)
        } else {
            return rest;
        };
        match end {
            Some(end) => rest = rest[end..].trim_start(),
            None => return rest,
        }
    }
}

/// `name` cut to [`MAX_TEST_NAME_CHARS`] characters, on one line.
fn cut(name: &str) -> String {
    let flat: String = name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > MAX_TEST_NAME_CHARS {
        let mut kept: String = flat.chars().take(MAX_TEST_NAME_CHARS - 1).collect();
        kept.push('…');
        kept
    } else {
        flat
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    const NEXTEST: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="nextest-run" tests="4" failures="1" errors="1" uuid="45c50d2d-5dc6-4bd4-9e5d-d4f1e6e7c5c3" timestamp="2026-01-01T00:00:00.000+00:00" time="0.5">
    <testsuite name="core::lib" tests="4" disabled="1" errors="1" failures="1">
        <testcase name="parses" classname="core::lib" timestamp="2026-01-01T00:00:00.000+00:00" time="0.1">
        </testcase>
        <testcase name="fails" classname="core::lib" time="0.1">
            <failure type="test failure">assertion failed</failure>
        </testcase>
        <testcase name="breaks" classname="core::lib" time="0.1">
            <error type="crash">aborted</error>
        </testcase>
        <testcase name="later" classname="core::lib" time="0">
            <skipped/>
        </testcase>
    </testsuite>
</testsuites>
"#;

    const PYTEST: &str = r#"<?xml version="1.0" encoding="utf-8"?><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2" time="0.02"><testcase classname="test_app" name="test_ok" time="0.001" /><testcase classname="test_app" name="test_token_hunter2" time="0.001"><failure message="assert 1 == 2">def test...</failure></testcase></testsuite>"#;

    #[test]
    fn cases_are_counted_by_status_and_failed_ones_named() {
        let mut summary = TestSummary::default();
        count_report(NEXTEST, &mut summary, str::to_owned).expect("nextest's report");
        assert_eq!(
            (
                summary.tests,
                summary.failures,
                summary.errors,
                summary.skipped
            ),
            (4, 1, 1, 1)
        );
        assert_eq!(summary.failed, ["core::lib::fails", "core::lib::breaks"]);
    }

    #[test]
    fn a_single_testsuite_at_the_top_is_read_and_names_are_masked() {
        let mut summary = TestSummary::default();
        count_report(PYTEST, &mut summary, |name| name.replace("hunter2", "***"))
            .expect("pytest's report");
        assert_eq!((summary.tests, summary.failures), (2, 1));
        assert_eq!(summary.failed, ["test_app::test_token_***"]);
        assert!(count_report("<html></html>", &mut summary, str::to_owned).is_err());
        assert!(count_report("not xml at all <", &mut summary, str::to_owned).is_err());
    }

    #[test]
    fn names_are_capped_in_number_and_length() {
        let long = "n".repeat(1000);
        let cases: String = (0..120)
            .map(|i| format!(r#"<testcase name="{long}{i}"><failure/></testcase>"#))
            .collect();
        let text = format!(r#"<testsuites><testsuite name="s">{cases}</testsuite></testsuites>"#);
        let mut summary = TestSummary::default();
        count_report(&text, &mut summary, str::to_owned).expect("a report");
        assert_eq!(summary.failures, 120);
        assert_eq!(summary.failed.len(), MAX_FAILED_NAMES);
        assert!(
            summary
                .failed
                .iter()
                .all(|name| name.chars().count() == MAX_TEST_NAME_CHARS && name.ends_with('…'))
        );
    }

    #[test]
    fn files_are_found_by_glob_without_links_and_bad_ones_are_notes() {
        let dir = tempfile::tempdir().expect("a directory");
        let root = dir.path().join("ws");
        let reports = root.join("target/nextest/ci");
        std::fs::create_dir_all(&reports).expect("directories");
        std::fs::write(reports.join("junit.xml"), NEXTEST).expect("a report");
        std::fs::write(root.join("target/nextest/broken.xml"), "<testsuites>").expect("a file");
        // A link to a report elsewhere is never read, as a file or as a directory on the way.
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).expect("a directory");
        std::fs::write(outside.join("junit.xml"), PYTEST).expect("a report");
        std::os::unix::fs::symlink(
            outside.join("junit.xml"),
            root.join("target/nextest/linked.xml"),
        )
        .expect("a link");
        std::os::unix::fs::symlink(&outside, root.join("linked-dir")).expect("a link");
        let patterns = [
            "target/nextest/**/*.xml".to_owned(),
            "./target/nextest/ci/junit.xml".to_owned(),
            "linked-dir/*.xml".to_owned(),
            "none/*.xml".to_owned(),
        ];
        let collected = collect_reports(&root, &patterns, None, str::to_owned);
        assert_eq!(collected.summary.files, 1, "{:?}", collected.notes);
        assert_eq!(collected.summary.unreadable, 1);
        assert_eq!(collected.summary.tests, 4);
        let notes = collected.notes.join("\n");
        assert!(
            notes.contains("`target/nextest/broken.xml` is not JUnit XML"),
            "{notes}"
        );
        assert!(
            notes.contains("no report file matches `linked-dir/*.xml`"),
            "{notes}"
        );
        assert!(
            notes.contains("no report file matches `none/*.xml`"),
            "{notes}"
        );
        assert!(!notes.contains("linked.xml"), "{notes}");
        assert!(!notes.contains("matches `./target"), "{notes}");
    }

    #[test]
    fn at_most_so_many_files_are_read_and_big_ones_are_left() {
        let dir = tempfile::tempdir().expect("a directory");
        for i in 0..(MAX_REPORT_FILES + 3) {
            std::fs::write(dir.path().join(format!("r{i:03}.xml")), NEXTEST).expect("a report");
        }
        let mut notes = Vec::new();
        let found = find_report_files(dir.path(), &["*.xml".to_owned()], &mut notes);
        assert_eq!(found.len(), MAX_REPORT_FILES);
        assert!(
            notes.iter().any(|note| note.contains("only the first")),
            "{notes:?}"
        );
        let big = dir.path().join("big.xml");
        std::fs::write(&big, "x".repeat(100)).expect("a file");
        assert!(read_report(&big, 99).is_err_and(|why| why.contains("more than 99 bytes")));
        assert!(read_report(&big, 100).is_ok());
    }
}
