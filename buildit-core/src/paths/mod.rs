//! Path rules, in one place that imports nothing else from the crate: what a workspace-relative path, an
//! `artifacts` pattern and a cache path may be, where cached paths live, and which paths overlap.

mod cache;
mod overlap;
mod rendered;
mod workspace;

pub(crate) use cache::{archive_entry_target, archive_name, cache_location};
pub(crate) use overlap::{Claim, UNKNOWN, overlapping_pairs};
pub(crate) use rendered::{artifact_path_problem, cache_path_problem, report_path_problem};
pub(crate) use workspace::{
    inside_workspace, names_nothing, outermost, relative_path_escapes, written_through_symlink,
};
