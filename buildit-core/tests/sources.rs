//! Workspace sources for real: checkouts made by git from repositories made here, archives made by `tar` and
//! `git archive` or written entry by entry to be hostile, and what each leaves on disk.

#![expect(
    clippy::expect_used,
    reason = "test setup (temporary directories, git and tar runs) has no way to go on when it fails"
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use buildit_core::source::{
    ArchiveDigest, CommitId, SourceError, SourceLimits, SourceStore, WorkspaceSource, prepare,
};

/// Runs a command that must succeed; returns its standard output.
fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("the program starts");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["-c", "user.name=Test", "-c", "user.email=test@example.com"];
    all.extend_from_slice(args);
    run(dir, "git", &all)
}

/// Every path under `dir` (relative, sorted), not descending into `.git`.
fn tree(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, found: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            found.insert(relative.clone());
            let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
            if is_dir && relative != ".git" {
                walk(root, &path, found);
            }
        }
    }
    let mut found = BTreeSet::new();
    walk(dir, dir, &mut found);
    found
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

/// A repository with two commits; returns it and the first commit, which is no longer the tip.
fn repository(dir: &Path) -> (PathBuf, CommitId, CommitId) {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("src")).expect("mkdir");
    git(&repo, &["init", "--quiet"]);
    std::fs::write(repo.join("a.txt"), "one\n").expect("write");
    std::fs::write(repo.join("src/b.txt"), "b\n").expect("write");
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("a.txt"), "two\n").expect("write");
    std::fs::remove_file(repo.join("src/b.txt")).expect("rm");
    std::fs::write(repo.join("c.txt"), "c\n").expect("write");
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "second"]);
    let second = git(&repo, &["rev-parse", "HEAD"]);
    (
        repo,
        CommitId::parse(&first).expect("a commit id"),
        CommitId::parse(&second).expect("a commit id"),
    )
}

fn store(dir: &Path) -> SourceStore {
    SourceStore::new(dir.join("sources"), SourceLimits::default())
}

#[tokio::test]
async fn a_checkout_holds_exactly_the_commits_files_at_a_detached_head() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, first, second) = repository(dir.path());
    let store = store(dir.path());
    let repository = repo.display().to_string();
    let source = WorkspaceSource::Git {
        repository: repository.clone(),
        commit: first.clone(),
    };
    let into = dir.path().join("runs/1/workspace");
    let prepared = prepare(&source, &store, &into).await.expect("checkout");
    assert_eq!(prepared, into);
    assert_eq!(tree(&into), set(&[".git", "a.txt", "src", "src/b.txt"]));
    assert_eq!(
        std::fs::read_to_string(into.join("a.txt")).ok().as_deref(),
        Some("one\n")
    );
    assert_eq!(git(&into, &["rev-parse", "HEAD"]), first.as_str());
    let branch = Command::new("git")
        .args(["symbolic-ref", "--quiet", "HEAD"])
        .current_dir(&into)
        .status()
        .expect("git runs");
    assert!(!branch.success(), "HEAD is detached");
    assert_eq!(git(&into, &["status", "--porcelain"]), "");

    // The tip, into an empty directory that already exists.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let tip = WorkspaceSource::Git {
        repository: format!("file://{repository}"),
        commit: second.clone(),
    };
    prepare(&tip, &store, &empty).await.expect("checkout");
    assert_eq!(tree(&empty), set(&[".git", "a.txt", "c.txt"]));
    assert_eq!(git(&empty, &["rev-parse", "HEAD"]), second.as_str());
}

#[tokio::test]
async fn short_invalid_and_unknown_commits_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, first, _) = repository(dir.path());
    let short = &first.as_str()[..7];
    assert_eq!(
        CommitId::parse(short).map_err(|e| e.to_string()).err(),
        Some(format!(
            "commit `{short}` has 7 characters; expected exactly 40 hexadecimal digits"
        ))
    );
    assert!(CommitId::parse("HEAD~1").is_err());
    assert!(CommitId::parse(&format!("{}zz", &first.as_str()[..38])).is_err());

    let store = store(dir.path());
    let unknown = CommitId::parse(&"0123456789".repeat(4)).expect("40 hex digits");
    let into = dir.path().join("unknown");
    let error = prepare(
        &WorkspaceSource::Git {
            repository: repo.display().to_string(),
            commit: unknown.clone(),
        },
        &store,
        &into,
    )
    .await;
    assert_eq!(
        error.map_err(|e| e.to_string()).err(),
        Some(format!("commit `{unknown}` is not in `{}`", repo.display()))
    );
    assert!(!into.exists(), "a failed checkout leaves nothing");

    // A blob's id is not a commit.
    let blob = git(&repo, &["rev-parse", &format!("{first}:a.txt")]);
    let error = prepare(
        &WorkspaceSource::Git {
            repository: repo.display().to_string(),
            commit: CommitId::parse(&blob).expect("40 hex digits"),
        },
        &store,
        &into,
    )
    .await;
    assert!(
        matches!(error, Err(SourceError::UnknownCommit { .. })),
        "{error:?}"
    );

    let missing = dir.path().join("no-such-repository");
    let error = prepare(
        &WorkspaceSource::Git {
            repository: missing.display().to_string(),
            commit: first.clone(),
        },
        &store,
        &into,
    )
    .await;
    assert!(
        matches!(error, Err(SourceError::Git { step: "fetch", .. })),
        "{error:?}"
    );
    let error = prepare(
        &WorkspaceSource::Git {
            repository: "--upload-pack=touch /tmp/x".to_owned(),
            commit: first,
        },
        &store,
        &into,
    )
    .await;
    assert!(
        matches!(error, Err(SourceError::InvalidRepository { .. })),
        "{error:?}"
    );
    assert!(!into.exists());
}

#[tokio::test]
async fn hooks_fsmonitor_and_filters_of_the_repository_never_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _, _) = repository(dir.path());
    // A committed `.gitattributes` names a filter: a checkout that read the repository's configuration would
    // run it for every file.
    std::fs::write(repo.join(".gitattributes"), "* filter=run\n").expect("write");
    std::fs::write(repo.join("d.txt"), "d\n").expect("write");
    git(&repo, &["add", "--all"]);
    git(&repo, &["commit", "--quiet", "-m", "attributes"]);
    let commit = CommitId::parse(&git(&repo, &["rev-parse", "HEAD"])).expect("an id");
    let marker = dir.path().join("ran");
    let script = dir.path().join("hook.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\ncat\n", marker.display()),
    )
    .expect("write");
    run(dir.path(), "chmod", &["+x", &script.display().to_string()]);
    let hooks = repo.join(".git/hooks");
    for hook in [
        "post-checkout",
        "post-merge",
        "post-index-change",
        "reference-transaction",
        "pre-auto-gc",
        "fsmonitor-watchman",
    ] {
        std::fs::copy(&script, hooks.join(hook)).expect("copy");
    }
    let script = script.display().to_string();
    for (key, value) in [
        ("core.fsmonitor", script.as_str()),
        ("core.hooksPath", hooks.to_str().unwrap_or_default()),
        ("filter.run.smudge", script.as_str()),
        ("filter.run.clean", "cat"),
        ("filter.run.required", "true"),
        ("uploadpack.packObjectsHook", script.as_str()),
    ] {
        git(&repo, &["config", key, value]);
    }

    // The trap is live: checking out in the repository itself runs the hook, the filter and the monitor.
    let worktree = dir.path().join("worktree");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "--quiet",
            "--detach",
            &worktree.display().to_string(),
            commit.as_str(),
        ],
    );
    git(&worktree, &["status", "--porcelain"]);
    let ran = std::fs::read_to_string(&marker).unwrap_or_default();
    assert!(
        ran.contains("post-checkout") && ran.contains("hook.sh"),
        "the trap does not work: {ran:?}"
    );
    std::fs::remove_file(&marker).expect("rm");

    let into = dir.path().join("checkout");
    prepare(
        &WorkspaceSource::Git {
            repository: repo.display().to_string(),
            commit: commit.clone(),
        },
        &store(dir.path()),
        &into,
    )
    .await
    .expect("checkout");
    assert_eq!(
        std::fs::read_to_string(&marker).ok(),
        None,
        "something of the repository ran"
    );
    assert_eq!(
        std::fs::read_to_string(into.join("d.txt")).ok().as_deref(),
        Some("d\n")
    );
    assert!(
        !into.join(".git/hooks").exists(),
        "the checkout has no hooks"
    );
}

/// The sha256 of a file as `sha256sum` prints it.
fn sha256sum(path: &Path) -> String {
    let out = run(Path::new("/"), "sha256sum", &[&path.display().to_string()]);
    out.split_whitespace().next().unwrap_or_default().to_owned()
}

async fn put_file(store: &SourceStore, path: &Path) -> Result<ArchiveDigest, SourceError> {
    let bytes = std::fs::read(path).expect("read");
    store.put(bytes.as_slice()).await
}

#[tokio::test]
async fn archives_from_tar_and_git_archive_unpack_as_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = dir.path().join("src");
    std::fs::create_dir_all(source.join("deep/er")).expect("mkdir");
    std::fs::write(source.join("deep/er/file.txt"), "inner\n").expect("write");
    std::fs::write(source.join("run.sh"), "#!/bin/sh\n").expect("write");
    run(&source, "chmod", &["755", "run.sh"]);
    std::os::unix::fs::symlink("deep/er/file.txt", source.join("link")).expect("symlink");
    let archive = dir.path().join("a.tar");
    run(
        dir.path(),
        "tar",
        &["-cf", "a.tar", "-C", &source.display().to_string(), "."],
    );
    let store = store(dir.path());
    let digest = put_file(&store, &archive).await.expect("stored");
    assert_eq!(digest.as_str(), sha256sum(&archive));
    assert!(store.contains(&digest));
    let into = dir.path().join("unpacked");
    prepare(&WorkspaceSource::Archive(digest), &store, &into)
        .await
        .expect("unpacked");
    assert_eq!(
        tree(&into),
        set(&["deep", "deep/er", "deep/er/file.txt", "link", "run.sh"])
    );
    assert_eq!(
        std::fs::read_to_string(into.join("link")).ok().as_deref(),
        Some("inner\n")
    );
    let mode = std::fs::metadata(into.join("run.sh")).map(|m| {
        use std::os::unix::fs::PermissionsExt as _;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.ok(), Some(0o755));

    // `git archive` starts with a pax global header, which is skipped.
    let (repo, first, _) = repository(dir.path());
    let out = dir.path().join("git.tar");
    git(
        &repo,
        &[
            "archive",
            "--format=tar",
            "-o",
            &out.display().to_string(),
            first.as_str(),
        ],
    );
    let digest = put_file(&store, &out).await.expect("stored");
    let into = dir.path().join("from-git");
    prepare(&WorkspaceSource::Archive(digest), &store, &into)
        .await
        .expect("unpacked");
    assert_eq!(tree(&into), set(&["a.txt", "src", "src/b.txt"]));
}

/// One entry of a hand-made archive.
enum Entry<'a> {
    File(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Device(&'a str),
    Fifo(&'a str),
}

/// An archive of `entries`, written header by header so that names the tar crate would refuse to write
/// (`../x`, `/abs`) get in as they are.
fn hostile(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(0);
        let (name, data): (&str, &[u8]) = match entry {
            Entry::File(name) => {
                header.set_size(2);
                (name, b"ok")
            }
            Entry::Symlink(name, target) | Entry::HardLink(name, target) => {
                header.set_entry_type(if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let link = &mut header.as_old_mut().linkname;
                link[..target.len()].copy_from_slice(target.as_bytes());
                (name, b"")
            }
            Entry::Device(name) => {
                header.set_entry_type(tar::EntryType::Char);
                (name, b"")
            }
            Entry::Fifo(name) => {
                header.set_entry_type(tar::EntryType::Fifo);
                (name, b"")
            }
        };
        assert!(name.len() < 100, "{name} fits in a plain header");
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder.into_inner().expect("finish")
}

#[tokio::test]
async fn hostile_archives_are_refused_and_write_nothing_anywhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let victim = dir.path().join("victim");
    std::fs::create_dir_all(&victim).expect("mkdir");
    let absolute = format!("{}/abs.txt", victim.display());
    let outside = victim.display().to_string();
    let store = store(dir.path());
    let cases: Vec<(&str, Vec<Entry<'_>>)> = vec![
        (
            "goes up",
            vec![Entry::File("ok.txt"), Entry::File("../victim/up.txt")],
        ),
        (
            "absolute",
            vec![Entry::File("ok.txt"), Entry::File(&absolute)],
        ),
        (
            "through a symlink out",
            vec![
                Entry::File("ok.txt"),
                Entry::Symlink("out", &outside),
                Entry::File("out/x.txt"),
            ],
        ),
        (
            "relative symlink out",
            vec![Entry::File("ok.txt"), Entry::Symlink("out", "../victim")],
        ),
        (
            "symlink out through another",
            vec![
                Entry::Symlink("a/b/d", "../../q"),
                Entry::Symlink("a/b/e", "d/../../../victim"),
            ],
        ),
        ("device", vec![Entry::File("ok.txt"), Entry::Device("null")]),
        ("fifo", vec![Entry::File("ok.txt"), Entry::Fifo("pipe")]),
        (
            "hard link",
            vec![Entry::File("ok.txt"), Entry::HardLink("h", &absolute)],
        ),
        (
            "git directory",
            vec![Entry::File("ok.txt"), Entry::File(".git/config")],
        ),
    ];
    for (case, entries) in cases {
        let digest = store
            .put(hostile(&entries).as_slice())
            .await
            .expect("stored");
        let into = dir.path().join("into");
        let result = prepare(&WorkspaceSource::Archive(digest), &store, &into).await;
        assert!(
            matches!(result, Err(SourceError::UnsafeEntry { .. })),
            "{case}: {result:?}"
        );
        assert!(!into.exists(), "{case}: left {:?}", tree(&into));
        assert_eq!(tree(&victim), set(&[]), "{case} wrote outside");
        assert!(!dir.path().join("q").exists());
    }
}

#[tokio::test]
async fn limits_hold_while_uploading_and_unpacking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = SourceLimits {
        max_upload: 4096,
        max_entries: 3,
    };
    let store = SourceStore::new(dir.path().join("sources"), limits);
    // An endless upload is cut at the limit, and leaves nothing.
    let endless = tokio::io::repeat(b'x');
    let error = store.put(endless).await;
    assert!(
        matches!(error, Err(SourceError::UploadTooLarge { limit: 4096 })),
        "{error:?}"
    );
    assert_eq!(tree(&dir.path().join("sources")), set(&[]));

    // Stored under a larger limit, unpacked under the smaller one.
    let roomy = SourceStore::new(dir.path().join("sources"), SourceLimits::default());
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(3000);
    header.set_mode(0o644);
    header.set_cksum();
    for name in ["a", "b"] {
        builder
            .append_data(&mut header.clone(), name, &[0u8; 3000][..])
            .expect("append");
    }
    let big = builder.into_inner().expect("finish");
    let digest = roomy.put(big.as_slice()).await.expect("stored");
    let small = SourceStore::new(
        dir.path().join("sources"),
        SourceLimits {
            max_upload: 5000,
            max_entries: 100,
        },
    );
    let into = dir.path().join("into");
    let error = prepare(&WorkspaceSource::Archive(digest), &small, &into).await;
    assert!(
        matches!(error, Err(SourceError::UnpackedTooLarge { limit: 5000 })),
        "{error:?}"
    );
    assert!(!into.exists());

    let many: Vec<Entry<'_>> = ["1", "2", "3", "4"].into_iter().map(Entry::File).collect();
    let digest = roomy.put(hostile(&many).as_slice()).await.expect("stored");
    let error = prepare(&WorkspaceSource::Archive(digest), &store, &into).await;
    assert!(
        matches!(error, Err(SourceError::TooManyEntries { limit: 3 })),
        "{error:?}"
    );
    assert!(!into.exists());
}

#[tokio::test]
async fn the_same_upload_is_stored_once_and_a_corrupted_one_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    let bytes = hostile(&[Entry::File("a.txt"), Entry::File("b.txt")]);
    let first = store.put(bytes.as_slice()).await.expect("stored");
    let second = store.put(bytes.as_slice()).await.expect("stored");
    assert_eq!(first, second);
    assert_eq!(
        tree(&dir.path().join("sources")),
        set(&[&format!("{first}.tar")])
    );
    let other = store
        .put(hostile(&[Entry::File("c.txt")]).as_slice())
        .await
        .expect("stored");
    assert_ne!(first, other);

    // One byte of a file's contents changes on disk: the archive still reads as tar, but is refused.
    let path = store.path(&first);
    let mut stored = std::fs::read(&path).expect("read");
    let data = stored
        .windows(2)
        .position(|w| w == b"ok")
        .expect("the file's data");
    stored[data] = b'K';
    std::fs::write(&path, &stored).expect("write");
    let into = dir.path().join("into");
    let error = prepare(&WorkspaceSource::Archive(first.clone()), &store, &into).await;
    assert!(
        matches!(&error, Err(SourceError::DigestMismatch { digest, .. }) if *digest == first),
        "{error:?}"
    );
    assert!(!into.exists());
    // Uploading the same bytes again heals it.
    store.put(bytes.as_slice()).await.expect("stored");
    prepare(&WorkspaceSource::Archive(first), &store, &into)
        .await
        .expect("unpacked");
    assert_eq!(tree(&into), set(&["a.txt", "b.txt"]));

    let absent = ArchiveDigest::parse(&"ab".repeat(32)).expect("64 hex digits");
    let error = prepare(
        &WorkspaceSource::Archive(absent),
        &store,
        &dir.path().join("absent"),
    )
    .await;
    assert!(
        matches!(error, Err(SourceError::NotFound { .. })),
        "{error:?}"
    );
}

#[tokio::test]
async fn host_directories_are_used_in_place_and_destinations_must_be_fresh() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store(dir.path());
    let host = WorkspaceSource::HostDir(dir.path().to_path_buf());
    let unused = dir.path().join("unused");
    assert_eq!(
        prepare(&host, &store, &unused).await.ok().as_deref(),
        Some(dir.path())
    );
    assert!(!unused.exists());
    let missing = WorkspaceSource::HostDir(dir.path().join("missing"));
    assert!(matches!(
        prepare(&missing, &store, &unused).await,
        Err(SourceError::NotADirectory { .. })
    ));

    let digest = store
        .put(hostile(&[Entry::File("a.txt")]).as_slice())
        .await
        .expect("stored");
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("keep.txt"), "mine").expect("write");
    let error = prepare(&WorkspaceSource::Archive(digest), &store, &busy).await;
    assert!(
        matches!(error, Err(SourceError::Destination { .. })),
        "{error:?}"
    );
    assert_eq!(
        tree(&busy),
        set(&["keep.txt"]),
        "an occupied directory is left alone"
    );

    // A failure while writing (a file where a later entry needs a directory) empties a directory of the
    // caller's again rather than removing it.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine).expect("mkdir");
    let clash = store
        .put(hostile(&[Entry::File("a"), Entry::File("a/b")]).as_slice())
        .await
        .expect("stored");
    let error = prepare(&WorkspaceSource::Archive(clash), &store, &mine).await;
    assert!(matches!(error, Err(SourceError::Io { .. })), "{error:?}");
    assert!(mine.is_dir());
    assert_eq!(tree(&mine), set(&[]));
}
