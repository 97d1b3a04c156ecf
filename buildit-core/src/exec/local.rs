//! Running stages on the host: one shell per attempt, in its own process group, stopped by signals.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use super::attempt::{ExitReport, ExitWatch, OutputOnce, WaitFailure};
use super::executor::{
    ExecError, Executor, ExitStatus, LogStream, OutputChunk, StageSpec, StageStatus,
};
use super::guard::Guard;
use super::host::{HostEnvironment, HostProcess, spawn_here, spawn_in};
use crate::events::LogStreamKind;

/// Runs stages as host processes. The environment is the host's, plus the spec's variables and secrets.
///
/// The host environment is read at the first spawn and reused for every later one; stages that run in the
/// process's own directory (`buildit run` in the workspace, no `workdir`) start through `posix_spawn` with it,
/// others through std's `Command`. Like the scheduler, it needs a Tokio runtime with its IO and time drivers
/// (`enable_all`).
#[derive(Debug, Clone, Default)]
pub struct LocalExecutor {
    /// Shell names resolved through `PATH` once per executor: otherwise every spawn would try each `PATH`
    /// entry in turn (eight failed `execve` calls per stage on a typical machine).
    shells: Arc<Mutex<HashMap<String, PathBuf>>>,
    /// The host environment, prepared once.
    host: Arc<OnceLock<HostEnvironment>>,
    /// `/dev/null`, opened once, for every child's stdin (while it cannot be opened, std's path opens it per
    /// child and reports the error).
    null: Arc<OnceLock<OwnedFd>>,
    /// The watcher that kills this executor's stages once the executor is gone (dropped, or its process
    /// killed), started at the first spawn; `None` when it could not start (then stages run without it).
    guard: Arc<OnceLock<Option<Guard>>>,
}

impl LocalExecutor {
    /// A local executor.
    pub fn new() -> Self {
        Self::default()
    }

    /// `/dev/null` for children's stdin, opened at the first spawn that can open it.
    fn null(&self) -> Option<&OwnedFd> {
        if let Some(null) = self.null.get() {
            return Some(null);
        }
        let opened = std::fs::File::open("/dev/null").ok()?;
        Some(self.null.get_or_init(|| OwnedFd::from(opened)))
    }

    /// The mark of this executor's stages, from its guard (started at the first call).
    fn mark(&self) -> Option<&str> {
        self.guard
            .get_or_init(|| Guard::start().ok())
            .as_ref()
            .map(Guard::token)
    }

    /// The program to start for `shell`: a path as given, a bare name looked up in `PATH` (and remembered).
    fn shell_program(&self, shell: &str) -> PathBuf {
        if shell.contains('/') {
            return PathBuf::from(shell);
        }
        if let Ok(known) = self.shells.lock()
            && let Some(path) = known.get(shell)
        {
            return path.clone();
        }
        let found = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(shell))
                .find(|candidate| candidate.is_file())
        });
        match found {
            Some(path) => {
                if let Ok(mut known) = self.shells.lock() {
                    known.insert(shell.to_owned(), path.clone());
                }
                path
            }
            // Not found: let the spawn fail with the name the user wrote.
            None => PathBuf::from(shell),
        }
    }
}

/// A running host attempt.
#[derive(Debug)]
pub struct LocalHandle {
    /// Process id of the shell, which is also the id of its process group.
    pid: i32,
    exit: ExitWatch,
    logs: OutputOnce,
    /// Set while `cancel` stops the group: the exit watcher must not kill it early then, or the commands'
    /// children would lose their grace period when the shell dies first.
    cancelling: Arc<AtomicBool>,
}

impl LocalHandle {
    /// The process group of the attempt.
    pub fn process_group(&self) -> i32 {
        self.pid
    }
}

/// Sends `signal` to the whole group; a group that is already gone is not an error.
fn signal_group(pid: i32, signal: Signal) -> Result<(), ExecError> {
    match killpg(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(ExecError::Signal {
            pid,
            message: errno.desc().to_owned(),
        }),
    }
}

/// Whether any process of the group is still there (zombies included).
fn group_alive(pid: i32) -> bool {
    killpg(Pid::from_raw(pid), None).is_ok()
}

/// Makes this process the reaper of its descendants' orphans (Linux's child subreaper), for the whole process:
/// a process a stage left behind, whose parent ended, becomes a child of this process instead of `init`'s.
///
/// The host executor then reaps what it adopts from a stage's process group once the stage's shell has ended,
/// so a stopped stage's group empties at once (without it, a killed grandchild stays a zombie until `init`
/// gets round to it, and a timeout or cancel waits for that). Binaries call it, not the library: it changes
/// where the orphans of every other child of the process go too, and those (outside any stage's group) are
/// left for the program to reap. `buildit run` calls it at start.
pub fn adopt_orphans() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

/// Whether a group still has children of this process after [`reap_group`].
#[derive(Debug, PartialEq, Eq)]
enum Reaped {
    /// None of this process's children is left in the group.
    All,
    /// Some still run (or are dying).
    SomeRunning,
}

/// Reaps every ended child of this process in group `pgid`: the orphans it adopted from a stage. Only called
/// once the group's shell has been reaped (it is in the group too, and its status belongs to its own wait).
/// While a group has members its id cannot be reused, so this cannot reap another stage's shell.
fn reap_group(pgid: i32) -> Reaped {
    let Some(group) = rustix::process::Pid::from_raw(pgid) else {
        return Reaped::All;
    };
    loop {
        match rustix::process::waitpgid(group, rustix::process::WaitOptions::NOHANG) {
            Ok(Some(_)) => {}
            Ok(None) => return Reaped::SomeRunning,
            // `ECHILD`: nothing of the group is a child of this process (not a subreaper, or all reaped).
            Err(_) => return Reaped::All,
        }
    }
}

/// How long the orphans of a killed group are waited for before they are left to `init`: `SIGKILL` ends a
/// process within milliseconds unless it is stuck in the kernel.
const REAP_KILLED_FOR: Duration = Duration::from_secs(10);

/// Reaps the adopted orphans of group `pgid`, just killed, as they end.
async fn reap_killed(pgid: i32) {
    let deadline = tokio::time::Instant::now() + REAP_KILLED_FOR;
    while reap_group(pgid) == Reaped::SomeRunning && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Most bytes taken from a pipe in one read.
const READ_SIZE: usize = 16 * 1024;

/// How long a shell runs before its end is watched for even while its output is open. Until then its end is
/// taken when both pipes close, which is when most short commands end: they are reaped without a pidfd.
const WATCH_EXIT_AFTER: Duration = Duration::from_millis(20);

/// Supervises one attempt in one task (a task per attempt, not one per pipe and one for the exit: the hot path
/// of large DAGs): reads both output pipes until both are closed, sending chunks in the order each pipe
/// produced them, and reports the shell's exit once both pipes are closed or, for a shell whose output stays
/// open (a background command holds it), within [`WATCH_EXIT_AFTER`] of its end, whether or not anyone reads
/// the output. When the shell exits, what its commands left running in the background is killed with it (no
/// orphans); during a cancel, `cancel` gives the group its grace period and kills it itself.
async fn supervise(
    child: HostProcess,
    sender: mpsc::Sender<OutputChunk>,
    exit_sender: watch::Sender<ExitReport>,
    cancelling: Arc<AtomicBool>,
) {
    let HostProcess {
        pid,
        stdout,
        stderr,
        mut exit,
    } = child;
    let mut stdout = Some(stdout);
    let mut stderr = Some(stderr);
    // Filled by reads without being zeroed first (two zeroed 16 KiB buffers per stage showed up on DAGs of short
    // stages).
    let mut out_buffer = Vec::with_capacity(READ_SIZE);
    let mut err_buffer = Vec::with_capacity(READ_SIZE);
    // A chunk read and not yet sent: reading waits while the reader of the output is behind.
    let mut pending: Option<OutputChunk> = None;
    let mut exited = false;
    let watch_exit = tokio::time::sleep(WATCH_EXIT_AFTER);
    tokio::pin!(watch_exit);
    let mut watching = false;
    while !exited || stdout.is_some() || stderr.is_some() || pending.is_some() {
        // Every branch is cancel-safe: a read, a reservation or a wait that loses the race did nothing.
        tokio::select! {
            permit = sender.reserve(), if pending.is_some() => match permit {
                Ok(permit) => {
                    if let Some(chunk) = pending.take() {
                        permit.send(chunk);
                    }
                }
                // Nobody reads the output any more: the pipes close, and the commands get SIGPIPE.
                Err(_) => {
                    pending = None;
                    stdout = None;
                    stderr = None;
                }
            },
            read = read_from(&mut stdout, &mut out_buffer), if pending.is_none() && stdout.is_some() => {
                pending = chunk_of(read, &mut stdout, LogStreamKind::Stdout, &out_buffer);
            }
            read = read_from(&mut stderr, &mut err_buffer), if pending.is_none() && stderr.is_some() => {
                pending = chunk_of(read, &mut stderr, LogStreamKind::Stderr, &err_buffer);
            }
            () = &mut watch_exit, if !watching && !exited => watching = true,
            status = exit.wait(), if !exited && (watching || (stdout.is_none() && stderr.is_none())) => {
                exited = true;
                let result = status.map_err(|error| WaitFailure::Failed(error.to_string()));
                // `Ok` only when something of the group was left to kill (most stages leave nothing).
                if !cancelling.load(Ordering::SeqCst) && killpg(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    tokio::spawn(reap_killed(pid));
                }
                let _ = exit_sender.send(Some(result));
            }
        }
    }
}

/// The chunk one read of `pipe` produced; at its end (or on an error) `None`, and the pipe is closed.
fn chunk_of<P>(
    read: std::io::Result<usize>,
    pipe: &mut Option<P>,
    stream: LogStreamKind,
    buffer: &[u8],
) -> Option<OutputChunk> {
    match read {
        Ok(0) | Err(_) => {
            *pipe = None;
            None
        }
        Ok(read) => Some(OutputChunk {
            stream,
            bytes: buffer[..read].to_vec(),
        }),
    }
}

/// Reads what `pipe` has into `buffer`, replacing what the buffer held.
async fn read_from(
    pipe: &mut Option<impl AsyncRead + Unpin>,
    buffer: &mut Vec<u8>,
) -> std::io::Result<usize> {
    match pipe {
        Some(pipe) => {
            buffer.clear();
            pipe.read_buf(buffer).await
        }
        None => Ok(0),
    }
}

impl Executor for LocalExecutor {
    type Handle = LocalHandle;

    async fn spawn(&self, spec: StageSpec) -> Result<LocalHandle, ExecError> {
        let program = self.shell_program(&spec.shell);
        let script = spec.script();
        let spawn_error = |source| ExecError::Spawn {
            program: spec.shell.clone(),
            workdir: spec.workdir.clone(),
            source,
        };
        // `posix_spawn` takes a path: a shell that was not found in `PATH` goes to `Command`, which reports it.
        let here =
            program.is_absolute() && std::env::current_dir().is_ok_and(|dir| dir == spec.workdir);
        let mark = self.mark();
        let child = match self.null() {
            Some(null) if here => {
                let host = self.host.get_or_init(HostEnvironment::capture);
                spawn_here(&program, &script, &spec, host, null, mark)
            }
            _ => spawn_in(&program, &script, &spec, mark),
        }
        .map_err(spawn_error)?;
        let pid = child.pid;
        let (sender, receiver) = mpsc::channel(64);
        if let Some(echo) = spec.first_echo() {
            // The channel is new and empty: this cannot fail or wait.
            let _ = sender.try_send(OutputChunk {
                stream: LogStreamKind::Stdout,
                bytes: echo.into_bytes(),
            });
        }
        let (exit_sender, exit) = ExitWatch::new();
        let cancelling = Arc::new(AtomicBool::new(false));
        tokio::spawn(supervise(
            child,
            sender,
            exit_sender,
            Arc::clone(&cancelling),
        ));
        Ok(LocalHandle {
            pid,
            exit,
            logs: OutputOnce::new(receiver),
            cancelling,
        })
    }

    async fn logs(&self, handle: &LocalHandle) -> Result<LogStream, ExecError> {
        handle.logs.take()
    }

    async fn status(&self, handle: &LocalHandle) -> Result<StageStatus, ExecError> {
        handle.exit.status()
    }

    async fn wait(&self, handle: &LocalHandle) -> Result<ExitStatus, ExecError> {
        handle.exit.wait().await
    }

    async fn cancel(&self, handle: &LocalHandle, grace: Duration) -> Result<(), ExecError> {
        if handle.exit.ended() {
            return Ok(());
        }
        handle.cancelling.store(true, Ordering::SeqCst);
        signal_group(handle.pid, Signal::SIGTERM)?;
        // The whole group gets the grace period, not only the shell: a child cleaning up after SIGTERM is
        // waited for until the group is empty. Once the shell is reaped, the orphans this process adopted
        // from the group are reaped as they end (`adopt_orphans`): a zombie still counts as a member.
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            if handle.exit.ended() {
                reap_group(handle.pid);
            }
            if !group_alive(handle.pid) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        signal_group(handle.pid, Signal::SIGKILL)?;
        let ended = handle.exit.wait().await.map(|_| ());
        if group_alive(handle.pid) {
            tokio::spawn(reap_killed(handle.pid));
        }
        ended
    }
}
