//! The daemon serves at a lower priority than it runs: its serving threads are nicer than its runs' threads,
//! and a stage's processes get the runs' priority, not the serving threads'.

#![cfg(target_os = "linux")]
#![expect(
    clippy::expect_used,
    reason = "a test fails loudly when its daemon or files cannot be set up"
)]

mod support;

use support::{Daemon, buildit, create_token};

/// The niceness of each thread of process `pid`, by thread name.
fn thread_niceness(pid: u32) -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            // The fields after the name (which is in parentheses and may hold spaces); niceness is the 19th
            // field of the line, the 17th after the name.
            let after_name = &stat[stat.rfind(')')? + 1..];
            let niceness = after_name.split_whitespace().nth(16)?.parse().ok()?;
            Some((name.trim().to_owned(), niceness))
        })
        .collect()
}

#[test]
fn streams_are_served_below_the_runs_priority_and_stages_keep_it() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("daemon");
    let daemon = Daemon::on_free_port(&data, &[]);
    let token = create_token(dir.path(), &data, "acme", "priority");

    let own = thread_niceness(std::process::id())
        .first()
        .map_or(0, |(_, niceness)| *niceness);
    if own >= 19 {
        eprintln!("skipped: this test runs at niceness {own}, where nothing can be nicer");
        return;
    }
    let threads = thread_niceness(daemon.child.id());
    let serving: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name == "buildit-serve")
        .map(|(_, niceness)| *niceness)
        .collect();
    let runs: Vec<i32> = threads
        .iter()
        .filter(|(name, _)| name == "buildit-runs")
        .map(|(_, niceness)| *niceness)
        .collect();
    assert!(!serving.is_empty() && !runs.is_empty(), "{threads:?}");
    // 19 above the process's, as far as the system allows (at most 19).
    let lowest = (own + 19).min(19);
    assert!(serving.iter().all(|n| *n == lowest), "{threads:?}");
    assert!(runs.iter().all(|n| *n == own), "{threads:?}");
    // The runs' store writes through a connection of the runs' priority (SQLite gives each connection a
    // thread; the serving side's store has its own).
    assert!(
        threads
            .iter()
            .any(|(name, niceness)| name.starts_with("sqlx-sqlite") && *niceness == own),
        "{threads:?}"
    );

    let work = dir.path().join("work");
    std::fs::create_dir(&work).expect("work directory");
    std::fs::write(
        work.join("buildit.kdl"),
        "pipeline \"nice\"\nstage \"show\" { run \"echo niceness $(nice)\" }\n",
    )
    .expect("pipeline");
    let followed = buildit(
        &work,
        &["pipelines", "trigger", "--follow", "--no-upload"],
        &[
            ("BUILDIT_SERVER", daemon.address.as_str()),
            ("BUILDIT_TOKEN", token.as_str()),
        ],
    );
    let text = String::from_utf8_lossy(&followed.stdout);
    assert_eq!(followed.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("show | niceness {own}")), "{text}");
}

#[test]
fn a_niceness_out_of_range_is_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let refused = buildit(
        dir.path(),
        &[
            "daemon",
            "--listen",
            "127.0.0.1:0",
            "--serve-niceness",
            "20",
        ],
        &[],
    );
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--serve-niceness"),
        "{refused:?}"
    );
}
