//! Starting host processes: `posix_spawn` with the host environment prepared once, or std's `Command`.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;
use std::process::Stdio;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal};
use rustix::process::{Pid, PidfdFlags, WaitOptions, pidfd_open, waitpid};
use tokio::net::unix::pipe;

use super::executor::{ExitStatus, StageSpec};
use super::guard::GUARD_VARIABLE;

/// A started host process: its output pipes and a handle on its exit.
#[derive(Debug)]
pub(super) struct HostProcess {
    /// Process id, also the id of its process group.
    pub pid: i32,
    pub stdout: pipe::Receiver,
    pub stderr: pipe::Receiver,
    pub exit: ProcessExit,
}

/// The end of a host process.
#[derive(Debug)]
pub(super) struct ProcessExit {
    pid: Pid,
    /// Opened at the first wait that finds the process still running: most short commands have ended by the
    /// time their output closes, and are reaped without one (opening, registering and closing a pidfd was about
    /// 7% of the runner thread's time on a DAG of short stages).
    notice: Option<ExitNotice>,
}

/// What says a process may have ended.
#[derive(Debug)]
enum ExitNotice {
    /// A pidfd, readable once the process has ended. It is registered with the runtime through the pipe type,
    /// the one safe way tokio offers to wait for an arbitrary descriptor to become readable; only readiness is
    /// used, never a read.
    Pidfd(pipe::Receiver),
    /// `SIGCHLD`, where pidfds are missing (Linux before 5.3, valgrind): any child's end wakes every waiter,
    /// and each checks its own process.
    ChildSignal(tokio::signal::unix::Signal),
}

impl HostProcess {
    /// Watches the process `pid` (a child of this process, not yet reaped) whose output comes out of the read
    /// ends `stdout` and `stderr`, already non-blocking.
    fn watch(pid: i32, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Self> {
        Self::register(pid, stdout, stderr).inspect_err(|_| abandon(pid))
    }

    fn register(pid: i32, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Self> {
        let raw = Pid::from_raw(pid).ok_or_else(|| io::Error::other("invalid process id"))?;
        Ok(Self {
            pid,
            stdout: pipe::Receiver::from_owned_fd_unchecked(stdout)?,
            stderr: pipe::Receiver::from_owned_fd_unchecked(stderr)?,
            exit: ProcessExit {
                pid: raw,
                notice: None,
            },
        })
    }
}

impl ExitNotice {
    /// A notice of `pid`'s end: its pidfd, or `SIGCHLD` where there are no pidfds. The process is a child not
    /// yet reaped, so its id cannot have been reused.
    fn open(pid: Pid) -> io::Result<Self> {
        // No flags: the pidfd is only polled, never read, and `PIDFD_NONBLOCK` needs Linux 5.10.
        match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(pidfd) => Ok(Self::Pidfd(pipe::Receiver::from_owned_fd_unchecked(pidfd)?)),
            Err(_) => Self::by_signal(),
        }
    }

    /// `SIGCHLD`.
    fn by_signal() -> io::Result<Self> {
        let signal = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        Ok(Self::ChildSignal(signal))
    }
}

impl ProcessExit {
    /// Watches `pid` through `SIGCHLD` from the start.
    #[cfg(test)]
    fn by_signal(pid: Pid) -> io::Result<Self> {
        Ok(Self {
            pid,
            notice: Some(ExitNotice::by_signal()?),
        })
    }

    /// Whether the end is watched through a pidfd or `SIGCHLD` (only once a wait found the process running).
    #[cfg(test)]
    fn watched(&self) -> bool {
        self.notice.is_some()
    }

    /// Waits until the process has ended and reaps it. Cancel-safe; not to be called again once it returned.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = self.pid;
        let notice = match &mut self.notice {
            Some(notice) => notice,
            None => {
                if let Some(status) = reap(pid)? {
                    return Ok(status);
                }
                match ExitNotice::open(pid) {
                    Ok(notice) => self.notice.insert(notice),
                    // Left unwatched, it would run unsupervised and never be reaped.
                    Err(error) => {
                        abandon(pid.as_raw_nonzero().get());
                        return Err(error);
                    }
                }
            }
        };
        match notice {
            ExitNotice::Pidfd(pidfd) => loop {
                pidfd.readable().await?;
                // A readiness that comes too early (a stop) is cleared by the `WouldBlock`.
                match pidfd.try_io(|| reap(pid)?.ok_or_else(|| io::ErrorKind::WouldBlock.into())) {
                    Ok(status) => return Ok(status),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            },
            ExitNotice::ChildSignal(signal) => loop {
                // Checked before every wait: the process may have ended before the signal was listened to.
                if let Some(status) = reap(pid)? {
                    return Ok(status);
                }
                if signal.recv().await.is_none() {
                    return Err(io::Error::other("SIGCHLD can no longer be received"));
                }
            },
        }
    }
}

/// Stops and reaps a child that cannot be watched (the runtime refused its descriptors): left alone it would run
/// unsupervised. Its whole group is killed, as when a stage is cancelled.
fn abandon(pid: i32) {
    let target = nix::unistd::Pid::from_raw(pid);
    let killed = nix::sys::signal::killpg(target, Signal::SIGKILL).is_ok()
        || nix::sys::signal::kill(target, Signal::SIGKILL).is_ok();
    // Waiting for a process that could not be killed could take forever: it is left alone then.
    if killed && let Some(pid) = Pid::from_raw(pid) {
        let _ = waitpid(Some(pid), WaitOptions::empty());
    }
}

/// Reaps `pid` if it has ended.
fn reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    Ok(match waitpid(Some(pid), WaitOptions::NOHANG)? {
        Some((_, status)) if status.exited() || status.signaled() => Some(ExitStatus {
            code: status.exit_status(),
            signal: status.terminating_signal(),
            oom_killed: false,
        }),
        _ => None,
    })
}

/// The host environment, read once, as `NAME=value` entries ready for `posix_spawn`: otherwise std's `Command`
/// copies the whole environment into a map and back into an array for every child (a third of the runner's
/// instructions on a DAG of short stages).
#[derive(Debug, Default)]
pub(super) struct HostEnvironment {
    /// Sorted by name, one entry per name.
    entries: Vec<(OsString, CString)>,
}

impl HostEnvironment {
    /// This process's environment as it is now.
    pub fn capture() -> Self {
        Self::of(std::env::vars_os())
    }

    /// An environment of these variables (the last of a repeated name wins, as with `Command`).
    fn of(variables: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let by_name: std::collections::BTreeMap<OsString, CString> = variables
            .into_iter()
            .filter_map(|(name, value)| {
                let entry = CString::new(joined(name.as_bytes(), value.as_bytes())).ok()?;
                Some((name, entry))
            })
            .collect();
        Self {
            entries: by_name.into_iter().collect(),
        }
    }

    /// The environment of a stage: these entries without the names `spec` sets or removes, plus the spec's
    /// variables and secrets (`own`, sorted by name). One pass over both sorted lists: looking each host name up
    /// in the spec's maps cost more than the spawn itself.
    fn with<'a>(&'a self, own: &'a [(&str, CString)], spec: &StageSpec) -> Vec<&'a CStr> {
        let mut envp: Vec<&CStr> = Vec::with_capacity(self.entries.len() + own.len());
        let mut own = own.iter().peekable();
        for (name, entry) in &self.entries {
            let name = name.as_bytes();
            while let Some((_, own_entry)) = own.next_if(|(own_name, _)| own_name.as_bytes() < name)
            {
                envp.push(own_entry);
            }
            let set = own
                .peek()
                .is_some_and(|(own_name, _)| own_name.as_bytes() == name);
            let removed = spec
                .env_remove
                .iter()
                .any(|removed| removed.as_bytes() == name);
            if !set && !removed {
                envp.push(entry);
            }
        }
        envp.extend(own.map(|(_, entry)| entry.as_c_str()));
        envp
    }
}

fn joined(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(name.len() + value.len() + 2);
    entry.extend_from_slice(name);
    entry.push(b'=');
    entry.extend_from_slice(value);
    entry
}

fn nul_error(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} contains a NUL byte"),
    )
}

/// A pipe whose read end is non-blocking (for the runtime) and whose write end is left blocking (for the child).
fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    non_blocking(&read)?;
    Ok((read, write))
}

/// Makes the runtime's end of a pipe non-blocking.
fn non_blocking(read: &OwnedFd) -> io::Result<()> {
    fcntl(read, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Starts `program` (a path: `posix_spawn` does not search `PATH`, and a bare name would be taken relative to the
/// current directory) `-c script` in the current directory with `host` plus the spec's variables and secrets
/// (minus its removed names), stdin on `null`, in a process group of its own, with a clean signal mask and
/// `SIGPIPE` back to its default. `mark`, when given, is the stage's [`GUARD_VARIABLE`].
pub(super) fn spawn_here(
    program: &Path,
    script: &str,
    spec: &StageSpec,
    host: &HostEnvironment,
    null: &OwnedFd,
    mark: Option<&str>,
) -> io::Result<HostProcess> {
    // Secrets win over variables of the same name, as they did when applied one after the other; the guard's
    // mark wins over both.
    let mut own: Vec<(&str, CString)> = spec
        .env
        .iter()
        .filter(|(name, _)| !spec.secrets.contains_key(*name))
        .chain(&spec.secrets)
        .filter(|(name, _)| mark.is_none() || name.as_str() != GUARD_VARIABLE)
        .map(|(name, value)| {
            CString::new(joined(name.as_bytes(), value.as_bytes()))
                .map(|entry| (name.as_str(), entry))
                .map_err(|_| nul_error(&format!("environment variable `{name}`")))
        })
        .collect::<io::Result<_>>()?;
    if let Some(mark) = mark {
        let entry = CString::new(joined(GUARD_VARIABLE.as_bytes(), mark.as_bytes()))
            .map_err(|_| nul_error("the guard's mark"))?;
        own.push((GUARD_VARIABLE, entry));
    }
    own.sort_unstable_by_key(|(name, _)| *name);
    let envp = host.with(&own, spec);
    let program_name =
        CString::new(program.as_os_str().as_bytes()).map_err(|_| nul_error("the shell's path"))?;
    let script = CString::new(script).map_err(|_| nul_error("the stage's commands"))?;
    let args = [program_name.as_c_str(), c"-c", script.as_c_str()];

    let (stdout, stdout_child) = output_pipe()?;
    let (stderr, stderr_child) = output_pipe()?;
    let mut actions = PosixSpawnFileActions::init()?;
    actions.add_dup2(null.as_raw_fd(), 0)?;
    actions.add_dup2(stdout_child.as_raw_fd(), 1)?;
    actions.add_dup2(stderr_child.as_raw_fd(), 2)?;
    let mut attributes = PosixSpawnAttr::init()?;
    // Its own group, so that cancel reaches every process the commands start.
    attributes.set_pgroup(nix::unistd::Pid::from_raw(0))?;
    attributes.set_sigmask(&SigSet::empty())?;
    // This process ignores SIGPIPE (as every Rust program does); the commands must not inherit that.
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    attributes.set_sigdefault(&defaults)?;
    attributes.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let pid = posix_spawn(program, &actions, &attributes, &args, &envp)?;
    // The child has its copies; the pipes must close when it (and what it started) is done with them.
    drop((stdout_child, stderr_child));
    HostProcess::watch(pid.as_raw(), stdout, stderr)
}

/// Starts `program -c script` in the spec's working directory through std's `Command` (for a working directory
/// other than this process's own, which `posix_spawn` cannot change to here), with the same environment and
/// process setup.
pub(super) fn spawn_in(
    program: &Path,
    script: &str,
    spec: &StageSpec,
    mark: Option<&str>,
) -> io::Result<HostProcess> {
    let mut command = std::process::Command::new(program);
    for name in &spec.env_remove {
        command.env_remove(name);
    }
    command
        .arg("-c")
        .arg(script)
        .current_dir(&spec.workdir)
        .envs(&spec.env)
        .envs(&spec.secrets)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(mark) = mark {
        command.env(GUARD_VARIABLE, mark);
    }
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn()?;
    let (Ok(pid), Some(stdout), Some(stderr)) = (
        i32::try_from(child.id()),
        child.stdout.take(),
        child.stderr.take(),
    ) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io::Error::other("the child's output pipes are missing"));
    };
    // Dropping std's handle neither kills nor reaps the child: the returned process does, or `abandon`.
    drop(child);
    let stdout = OwnedFd::from(stdout);
    let stderr = OwnedFd::from(stderr);
    if let Err(error) = non_blocking(&stdout).and_then(|()| non_blocking(&stderr)) {
        abandon(pid);
        return Err(error);
    }
    HostProcess::watch(pid, stdout, stderr)
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "a test fails loudly on any error")]
mod tests {
    use tokio::io::AsyncReadExt as _;

    use super::*;

    const SH: &str = "/bin/sh";

    /// Everything the process printed, and how it ended.
    async fn finish(process: HostProcess) -> (String, String, ExitStatus) {
        let HostProcess {
            mut stdout,
            mut stderr,
            mut exit,
            ..
        } = process;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (read_out, read_err, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            exit.wait()
        );
        read_out.expect("stdout");
        read_err.expect("stderr");
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            status.expect("exit"),
        )
    }

    fn libc_sigpipe() -> i32 {
        Signal::SIGPIPE as i32
    }

    fn null() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"))
    }

    fn sorted_lines(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        lines
    }

    #[tokio::test]
    async fn the_prepared_environment_is_the_hosts_with_the_specs_changes() {
        let host = HostEnvironment::of(
            [
                ("KEEP", "1"),
                ("OVERRIDE", "host"),
                ("SCRUBBED", "x"),
                ("BOTH", "host"),
                ("ZZ_LAST", "old"),
                ("ZZ_LAST", "kept"),
                ("AA_FIRST", "1"),
            ]
            .into_iter()
            .map(|(name, value)| (OsString::from(name), OsString::from(value))),
        );
        let mut spec = StageSpec::new(vec![], ".");
        spec.env.insert("OVERRIDE".into(), "stage".into());
        spec.env.insert("BOTH".into(), "variable".into());
        spec.env.insert("NEW".into(), "a b=c".into());
        spec.env
            .insert("AAA".into(), "before every host name".into());
        spec.env
            .insert("ZZZ".into(), "after every host name".into());
        spec.secrets.insert("BOTH".into(), "secret".into());
        spec.env_remove.push("SCRUBBED".into());
        let process =
            spawn_here(Path::new(SH), "exec env", &spec, &host, &null(), None).expect("spawn");
        let (out, err, status) = finish(process).await;
        assert!(status.success(), "{status:?}: {err}");
        // (The shell exports `PWD` itself.)
        let lines: Vec<&str> = sorted_lines(&out)
            .into_iter()
            .filter(|line| !line.starts_with("PWD="))
            .collect();
        assert_eq!(
            lines,
            [
                "AAA=before every host name",
                "AA_FIRST=1",
                "BOTH=secret",
                "KEEP=1",
                "NEW=a b=c",
                "OVERRIDE=stage",
                "ZZZ=after every host name",
                "ZZ_LAST=kept",
            ]
        );
    }

    #[tokio::test]
    async fn both_ways_of_starting_give_a_stage_the_same_process() {
        let here = std::env::current_dir().expect("cwd");
        let mut spec = StageSpec::new(vec![], &here);
        spec.env.insert("BUILDIT_STAGE".into(), "build".into());
        spec.env
            .insert("PATH".into(), std::env::var("PATH").unwrap_or_default());
        spec.secrets.insert("TOKEN".into(), "t0ken".into());
        // The guard's mark wins over a variable of its name.
        spec.env.insert(GUARD_VARIABLE.into(), "overridden".into());
        // The environment, the signals ignored and blocked, stdin, the working directory, and whether the
        // shell leads its own process group.
        // The signal lines are read first and by the shell itself: while it forks and waits for a command, a
        // shell blocks signals for a moment, and a `grep` of its status could catch that.
        let script = "while read -r line; do case $line in Sig[IB]*) echo \"$line\";; esac; done </proc/$$/status; \
                      env | sort; readlink /proc/$$/fd/0; pwd; \
                      awk '{ print ($5 == $1) ? \"group-leader\" : \"in-another-group\" }' /proc/$$/stat";
        let prepared = spawn_here(
            Path::new(SH),
            script,
            &spec,
            &HostEnvironment::capture(),
            &null(),
            Some("m4rk"),
        )
        .expect("posix_spawn");
        let through_std = spawn_in(Path::new(SH), script, &spec, Some("m4rk")).expect("Command");
        let (prepared, prepared_err, prepared_status) = finish(prepared).await;
        let (through_std, std_err, std_status) = finish(through_std).await;
        assert!(prepared_status.success(), "{prepared_err}");
        assert!(std_status.success(), "{std_err}");
        assert_eq!(prepared, through_std);
        let ignored = prepared
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:\t"))
            .and_then(|mask| u64::from_str_radix(mask, 16).ok())
            .expect("the shell's ignored signals");
        assert_eq!(ignored & (1 << (libc_sigpipe() - 1)), 0, "SIGPIPE ignored");
        for expected in [
            "SigBlk:\t0000000000000000",
            "/dev/null",
            "group-leader",
            "TOKEN=t0ken",
            "BUILDIT_STAGE=build",
            "BUILDIT_GUARD=m4rk",
        ] {
            assert!(
                prepared.lines().any(|line| line == expected),
                "{expected} in {prepared}"
            );
        }
    }

    #[tokio::test]
    async fn exit_codes_signals_and_stderr_come_back() {
        let spec = StageSpec::new(vec![], ".");
        let host = HostEnvironment::capture();
        let failed = spawn_here(
            Path::new(SH),
            "echo oops >&2; exit 3",
            &spec,
            &host,
            &null(),
            None,
        )
        .expect("spawn");
        let (out, err, status) = finish(failed).await;
        assert_eq!((out.as_str(), err.as_str()), ("", "oops\n"));
        assert_eq!((status.code, status.signal), (Some(3), None));
        let killed =
            spawn_here(Path::new(SH), "kill -TERM $$", &spec, &host, &null(), None).expect("spawn");
        let (_, _, status) = finish(killed).await;
        assert_eq!((status.code, status.signal), (None, Some(15)));
    }

    #[tokio::test]
    async fn without_pidfds_the_end_of_a_process_is_noticed_through_sigchld() {
        // Ends while it is being waited for, with another child ending meanwhile.
        let slow = started("sleep 0.2; exit 7");
        let mut other = std::process::Command::new(SH)
            .args(["-c", "exit 1"])
            .spawn()
            .expect("spawn");
        let mut exit = ProcessExit::by_signal(slow).expect("SIGCHLD");
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), exit.wait())
            .await
            .expect("noticed")
            .expect("reaped");
        assert_eq!((status.code, status.signal), (Some(7), None));
        let _ = other.wait();
        // Ended before anyone listened for the signal.
        let quick = started("exit 5");
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut exit = ProcessExit::by_signal(quick).expect("SIGCHLD");
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), exit.wait())
            .await
            .expect("noticed")
            .expect("reaped");
        assert_eq!(status.code, Some(5));
    }

    #[tokio::test]
    async fn a_process_that_ended_with_its_output_is_reaped_without_a_watch() {
        let spec = StageSpec::new(vec![], ".");
        let host = HostEnvironment::capture();
        let HostProcess {
            pid,
            mut stdout,
            mut stderr,
            mut exit,
        } = spawn_here(
            Path::new(SH),
            "echo out; exit 4",
            &spec,
            &host,
            &null(),
            None,
        )
        .expect("spawn");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        stdout.read_to_end(&mut out).await.expect("stdout");
        stderr.read_to_end(&mut err).await.expect("stderr");
        // Both pipes closed: the shell is exiting; it is waited for once it has ended (a zombie), as it usually
        // has by the time the runtime sees its output close.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !is_zombie(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let status = exit.wait().await.expect("reaped");
        assert_eq!(
            (out.as_slice(), status.code),
            (b"out\n".as_slice(), Some(4))
        );
        assert!(
            !exit.watched(),
            "a pidfd or SIGCHLD was set up for an ended process"
        );
    }

    #[tokio::test]
    async fn a_process_still_running_at_the_first_wait_is_watched_until_it_ends() {
        let spec = StageSpec::new(vec![], ".");
        let host = HostEnvironment::capture();
        // Closes its output first, then runs on: the first wait finds it running.
        let HostProcess { mut exit, .. } = spawn_here(
            Path::new(SH),
            "exec >/dev/null 2>&1; sleep 0.3; exit 6",
            &spec,
            &host,
            &null(),
            None,
        )
        .expect("spawn");
        let started = std::time::Instant::now();
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), exit.wait())
            .await
            .expect("noticed")
            .expect("reaped");
        assert_eq!(status.code, Some(6));
        assert!(started.elapsed() >= std::time::Duration::from_millis(250));
        assert!(exit.watched());
    }

    #[test]
    fn a_child_that_cannot_be_watched_is_killed_with_its_group_and_reaped() {
        let mut command = std::process::Command::new(SH);
        command.args(["-c", "sleep 60 & sleep 60"]);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let pid = started_from(command).as_raw_nonzero().get();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let started = std::time::Instant::now();
        abandon(pid);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Reaped: the shell is no longer a child of this process.
        assert_eq!(
            nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ECHILD)
        );
        // And nothing of its group still runs (the background sleep is dead too; reaping it is its new
        // parent's business).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while running_in_group(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "the group outlived it"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Whether process `pid` has ended and is not yet reaped.
    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
    }

    /// Whether a process of group `group` is alive and not a zombie.
    fn running_in_group(group: i32) -> bool {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return false;
        };
        let group = group.to_string();
        entries.flatten().any(|entry| {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                return false;
            };
            // After the command name in parentheses: state, parent, group.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
            fields.get(2) == Some(&group.as_str()) && fields.first() != Some(&"Z")
        })
    }

    /// Starts `sh -c script` and leaves reaping it to the code under test.
    fn started(script: &str) -> Pid {
        let mut command = std::process::Command::new(SH);
        command.args(["-c", script]);
        started_from(command)
    }

    #[expect(clippy::zombie_processes, reason = "the code under test reaps it")]
    fn started_from(mut command: std::process::Command) -> Pid {
        let child = command.spawn().expect("spawn");
        Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid")
    }

    #[tokio::test]
    async fn what_cannot_be_started_is_an_error_not_a_panic() {
        let host = HostEnvironment::capture();
        let missing = spawn_here(
            Path::new("/nonexistent/sh"),
            "true",
            &StageSpec::new(vec![], "."),
            &host,
            &null(),
            None,
        )
        .expect_err("no such program");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let mut spec = StageSpec::new(vec![], ".");
        spec.env.insert("BAD".into(), "a\0b".into());
        let nul = spawn_here(Path::new(SH), "true", &spec, &host, &null(), None)
            .expect_err("a NUL byte cannot be passed");
        assert_eq!(nul.kind(), io::ErrorKind::InvalidInput);
        assert!(nul.to_string().contains("`BAD`"), "{nul}");
    }
}
