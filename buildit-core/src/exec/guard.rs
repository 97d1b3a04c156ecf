//! Stopping a dead runner's stages: a watcher process per executor kills every process that carries its mark.

use std::hash::{BuildHasher as _, Hasher as _};
use std::io;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use nix::fcntl::OFlag;

/// The environment variable that marks every host stage process (and whatever it starts, which inherits it) with
/// its executor's token.
pub const GUARD_VARIABLE: &str = "BUILDIT_GUARD";

/// The watcher, run by `/bin/sh` with the token as `$1` and the read end of the lifeline as its stdin.
///
/// Nothing is ever written to the lifeline: `read` returns when its last write end closes, which is when the
/// executor is dropped or its process dies, however it dies (the kernel closes a killed process's descriptors).
/// It then kills every process whose environment holds the mark, and the process group of each (which reaches
/// what a stage started with a cleaned environment but in its group), in rounds until a round finds none (a
/// process that forks while it is being killed is found in the next round; 100 rounds at most). `read` of a
/// process's `environ` works for processes of the same user, which stages are; a killed process no longer has
/// an environment, so it is not found twice. File names are fed to `grep` through `xargs`: a glob over every
/// process could exceed the size of one command line. `kill -KILL -N` (not `--`, which dash refuses) kills
/// group N. Hangups and interrupts are ignored: the watcher must outlive a closed terminal and a Ctrl-C to do
/// its job.
const WATCHER: &str = r#"trap '' HUP INT
while read -r _; do :; done
mark="BUILDIT_GUARD=$1"
me=$$
cd /proc || exit 0
round=0
while [ "$round" -lt 100 ]; do
  round=$((round + 1))
  found=
  for file in $(printf '%s\n' [0-9]*/environ | xargs grep -l -s -F -e "$mark"); do
    pid=${file%/environ}
    [ "$pid" = "$me" ] && continue
    found=1
    stat=
    read -r stat <"$pid/stat" || :
    set -- ${stat##*) }
    kill -KILL "$pid" 2>/dev/null
    if [ "${3:-0}" -gt 1 ] && [ "$3" != "$me" ]; then kill -KILL "-$3" 2>/dev/null; fi
  done
  [ -n "$found" ] || break
done
"#;

/// The watcher of one executor's stages.
#[derive(Debug)]
pub(super) struct Guard {
    token: String,
    /// The write end of the watcher's stdin. Never written; the watcher sweeps when it closes. Close-on-exec,
    /// so no stage holds it: a stage that did would keep the watcher waiting after the runner died.
    _lifeline: OwnedFd,
    /// Dropped without being killed: the runtime reaps it once its sweep is done.
    _watcher: tokio::process::Child,
}

impl Guard {
    /// Starts a watcher with a new token. Needs a Tokio runtime (the watcher is reaped by it).
    pub fn start() -> io::Result<Self> {
        let token = new_token();
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(WATCHER)
            .arg("buildit-guard")
            .arg(&token)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // A watcher started by a stage of another BuildIt must not carry that one's mark: the outer
            // watcher would kill it before it could stop its own stages.
            .env_remove(GUARD_VARIABLE)
            // It holds no directory of the workspace.
            .current_dir("/")
            // Its own group: a Ctrl-C at the terminal, or a signal to the runner's group, leaves it alone.
            .process_group(0)
            .kill_on_drop(false);
        let watcher = command.spawn()?;
        Ok(Self {
            token,
            _lifeline: write,
            _watcher: watcher,
        })
    }

    /// The value of [`GUARD_VARIABLE`] in this executor's stages.
    pub fn token(&self) -> &str {
        &self.token
    }
}

/// 128 bits that no other executor, in this process or another, uses: `RandomState` is seeded from the
/// operating system's randomness once per process and changes for every instance.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());
    let half = |index: u8| {
        let mut hasher = std::hash::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(nanos);
        hasher.write_u8(index);
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(0), half(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ() {
        let tokens: std::collections::HashSet<String> = (0..100).map(|_| new_token()).collect();
        assert_eq!(tokens.len(), 100);
        assert!(tokens.iter().all(|token| token.len() == 32));
    }
}
