//! Rules for `artifacts` patterns and cache `path`s once their variables are filled in: never empty, never the
//! whole workspace (or home directory, or file system), never somewhere else than the kind of path written.

use super::workspace::{names_nothing, relative_path_escapes};

/// Why a rendered `artifacts` pattern cannot be collected; `None` when it can. `written` is the pattern as in
/// the file, `rendered` with the run's values.
pub(crate) fn artifact_path_problem(written: &str, rendered: &str) -> Option<String> {
    if rendered.trim().is_empty() {
        return Some(format!(
            "artifact path `{written}` is empty in this run (a variable in it has no value); the whole workspace is never collected"
        ));
    }
    if relative_path_escapes(rendered) {
        return Some(format!(
            "{}, which leaves the workspace",
            became("artifact path", written, rendered)
        ));
    }
    if names_nothing(rendered) {
        return Some(format!(
            "{}: the whole workspace, which is never collected (it holds `.env` files and credentials)",
            became("artifact path", written, rendered)
        ));
    }
    None
}

/// Why a rendered `reports` pattern cannot be read; `None` when it can. The same rules as an artifact's: a
/// report is read from inside the workspace, and a pattern that names the whole of it is a mistake.
pub(crate) fn report_path_problem(written: &str, rendered: &str) -> Option<String> {
    if rendered.trim().is_empty() {
        return Some(format!(
            "report pattern `{written}` is empty in this run (a variable in it has no value)"
        ));
    }
    if relative_path_escapes(rendered) {
        return Some(format!(
            "{}, which leaves the workspace",
            became("report pattern", written, rendered)
        ));
    }
    if names_nothing(rendered) {
        return Some(format!(
            "{}: the workspace itself, not report files",
            became("report pattern", written, rendered)
        ));
    }
    None
}

/// Why a rendered cache `path` cannot be restored or saved; `None` when it can. A path written relative must
/// stay in the workspace (`{env.DIR}/x` with `DIR` unset is not `/x`); one written `~/` or absolute may leave
/// it, but must not be the whole home directory or file system.
pub(crate) fn cache_path_problem(written: &str, rendered: &str) -> Option<String> {
    if rendered.trim().is_empty() {
        return Some(format!(
            "cache path `{written}` is empty in this run (a variable in it has no value); the whole workspace is never cached"
        ));
    }
    let components = |path: &str| -> Vec<String> {
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect()
    };
    let (rest, place) = if written.starts_with("~/") {
        (rendered.strip_prefix("~/"), "the home directory")
    } else if written.starts_with('/') {
        (rendered.strip_prefix('/'), "the file system")
    } else {
        let relative = !(rendered.starts_with('/') || rendered.starts_with('~'));
        (relative.then_some(rendered), "the workspace")
    };
    let Some(rest) = rest else {
        return Some(format!(
            "{}, which leaves the workspace (paths outside it are written with a leading `/` or `~/`)",
            became("cache path", written, rendered)
        ));
    };
    let rest = components(rest);
    if rest.iter().any(|c| c == "..") {
        return Some(format!(
            "{}, which goes up with `..`",
            became("cache path", written, rendered)
        ));
    }
    if rest.is_empty() {
        return Some(format!(
            "{}: {place} as a whole, which is never cached",
            became("cache path", written, rendered)
        ));
    }
    None
}

/// `artifact path `{x}` is `` in this run`, or just `artifact path `.`` when nothing was filled in.
fn became(what: &str, written: &str, rendered: &str) -> String {
    if written == rendered {
        format!("{what} `{written}`")
    } else {
        format!("{what} `{written}` is `{rendered}` in this run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_paths_that_render_to_nothing_everything_or_outside_are_refused() {
        for (written, rendered) in [
            ("{env.OUT}", ""),
            ("{git.tag}", " "),
            (".", "."),
            ("{env.X}/", "/"),
            ("./{env.X}", "./"),
            ("{env.X}//", "//"),
            ("{env.X}/.", "/."),
            ("./{git.tag}/.", "././."),
            ("{env.X}/x", "/x"),
            ("{env.X}", "../up"),
            ("{env.X}", "~/x"),
        ] {
            assert!(
                artifact_path_problem(written, rendered).is_some(),
                "`{written}` -> `{rendered}` was accepted"
            );
        }
        for rendered in ["dist", "./dist", "dist/*.js", "a/../b", "out/v1.2"] {
            assert_eq!(artifact_path_problem("{x}", rendered), None, "{rendered}");
        }
    }

    #[test]
    fn report_patterns_that_render_to_nothing_the_workspace_or_outside_are_refused() {
        for (written, rendered) in [
            ("{env.OUT}", ""),
            (".", "."),
            ("{env.X}/", "/"),
            ("{env.X}/x.xml", "/x.xml"),
            ("{env.X}", "../up.xml"),
            ("{env.X}", "~/x.xml"),
        ] {
            assert!(
                report_path_problem(written, rendered).is_some(),
                "`{written}` -> `{rendered}` was accepted"
            );
        }
        for rendered in ["junit.xml", "target/nextest/*/junit.xml", "a/../b/*.xml"] {
            assert_eq!(report_path_problem("{x}", rendered), None, "{rendered}");
        }
    }

    #[test]
    fn cache_paths_keep_the_kind_they_were_written_as() {
        for (written, rendered) in [
            ("{env.DIR}", ""),
            ("{env.DIR}/target", "/target"),
            ("{env.DIR}", "~/x"),
            ("{env.DIR}", "."),
            ("target/{env.X}/..", "target/.."),
            ("~/{env.X}", "~/"),
            ("~/{env.X}/.", "~//."),
            ("/{env.X}", "/"),
            ("/{env.X}/", "//"),
            ("/{env.X}", "/../etc"),
        ] {
            assert!(
                cache_path_problem(written, rendered).is_some(),
                "`{written}` -> `{rendered}` was accepted"
            );
        }
        for (written, rendered) in [
            ("target", "target"),
            ("~/.cargo/{env.X}", "~/.cargo/registry"),
            ("/var/cache/{env.X}", "/var/cache/"),
            ("vendor/{matrix.v}", "vendor/1"),
        ] {
            assert_eq!(cache_path_problem(written, rendered), None, "{written}");
        }
    }
}
