//! Who owns a run and what its executors leave behind: a process on a host, and in a worker fleet the worker and the job lease it works under.

use serde::Serialize;

/// The process that runs a run: how a later runner tells that it died.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOwner {
    /// Host name.
    pub host: String,
    /// Process id on that host.
    pub pid: u32,
}

impl RunOwner {
    /// This process.
    pub fn this_process() -> Self {
        let name = nix::unistd::gethostname()
            .ok()
            .and_then(|name| name.into_string().ok())
            .unwrap_or_default();
        // Containers sharing a host name (host networking) do not share process ids: the PID namespace is
        // part of the host's identity, so that a pid is only ever checked where it means something.
        let namespace = std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .map(|link| link.display().to_string());
        Self {
            host: match namespace {
                Some(namespace) => format!("{name} {namespace}"),
                None => name,
            },
            pid: std::process::id(),
        }
    }

    /// Whether this owner is known to be gone: on this host, and no process with its id exists.
    pub fn is_dead_here(&self, here: &RunOwner) -> bool {
        if self.host != here.host || self.pid == here.pid {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return true;
        };
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }
}

/// Proof of holding a job: its id and the claim number, which only grows (a fencing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job: i64,
    /// Which claim of the job this is (1 for the first).
    pub attempt: i64,
}

/// The mark naming the process that created something (`host/pid`): a sweep removes what dead owners left.
pub const OWNER_MARK: &str = "buildit.owner";
/// The mark naming the fleet worker that created it, when a worker did.
pub const WORKER_MARK: &str = "buildit.worker";
/// The mark naming the job lease it was created under (`job/claim`), when there was one.
pub const LEASE_MARK: &str = "buildit.lease";

/// Who created what an executor leaves outside its own process (containers, networks and volumes; pods later),
/// so that a later sweep can tell whether it may go. A `buildit run` is a process of a host; a worker of a fleet
/// is also known by its id, and works under the lease of the job it claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftoverOwner {
    /// The process that created it.
    pub process: RunOwner,
    /// The worker of a fleet it was created by. A worker id is held by one process at a time.
    pub worker: Option<String>,
    /// The lease of the job it was created for, when it ran for a leased job.
    pub lease: Option<Lease>,
}

impl LeftoverOwner {
    /// This process, not a fleet's worker.
    pub fn this_process() -> Self {
        Self {
            process: RunOwner::this_process(),
            worker: None,
            lease: None,
        }
    }

    /// The same owner as the worker `worker` of a fleet.
    #[must_use]
    pub fn with_worker(mut self, worker: impl Into<String>) -> Self {
        self.worker = Some(worker.into());
        self
    }

    /// The same owner, working under `lease`.
    #[must_use]
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The marks (labels or annotations, by the backend's name for them) that say this owner created
    /// something: [`OWNER_MARK`], and [`WORKER_MARK`] and [`LEASE_MARK`] when it has them.
    pub fn marks(&self) -> Vec<(String, String)> {
        let mut marks = vec![(
            OWNER_MARK.to_owned(),
            format!("{}/{}", self.process.host, self.process.pid),
        )];
        if let Some(worker) = &self.worker {
            marks.push((WORKER_MARK.to_owned(), worker.clone()));
        }
        if let Some(lease) = self.lease {
            marks.push((
                LEASE_MARK.to_owned(),
                format!("{}/{}", lease.job, lease.attempt),
            ));
        }
        marks
    }

    /// The owner the marks `mark` gives (by name) say, when they name one that can be read.
    pub fn from_marks<'m>(mark: impl Fn(&str) -> Option<&'m String>) -> Option<Self> {
        let (host, pid) = mark(OWNER_MARK)?.rsplit_once('/')?;
        let lease = mark(LEASE_MARK)
            .and_then(|lease| lease.split_once('/'))
            .and_then(|(job, attempt)| {
                Some(Lease {
                    job: job.parse().ok()?,
                    attempt: attempt.parse().ok()?,
                })
            });
        Some(Self {
            process: RunOwner {
                host: host.to_owned(),
                pid: pid.parse().ok()?,
            },
            worker: mark(WORKER_MARK).cloned(),
            lease,
        })
    }

    /// Whether what this owner left behind may be removed by `here`, the owner of the executor that sweeps:
    /// its lease is one of `ended_leases` (the job ended, or its lease expired and was claimed again), on any
    /// host; or it is `here`'s worker in another process (the worker restarted: its id is held by one process
    /// at a time); or its process is of this host and no longer exists. Anything else may be alive: another
    /// host's process is never judged by its pid.
    pub fn is_gone(&self, here: &LeftoverOwner, ended_leases: &[Lease]) -> bool {
        if self
            .lease
            .is_some_and(|lease| ended_leases.contains(&lease))
        {
            return true;
        }
        if self.worker.is_some() && self.worker == here.worker && self.process != here.process {
            return true;
        }
        self.process.is_dead_here(&here.process)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process of this host that has ended.
    fn dead_process() -> RunOwner {
        let mut child = match std::process::Command::new("true").spawn() {
            Ok(child) => child,
            Err(error) => panic!("{error}"),
        };
        let pid = child.id();
        let _ = child.wait();
        RunOwner {
            pid,
            ..RunOwner::this_process()
        }
    }

    #[test]
    fn leftovers_go_when_their_process_worker_or_lease_is_gone() {
        let here = LeftoverOwner::this_process();
        let live = LeftoverOwner::this_process();
        assert!(!live.is_gone(&here, &[]), "this process is alive");
        let dead = LeftoverOwner {
            process: dead_process(),
            worker: None,
            lease: None,
        };
        assert!(dead.is_gone(&here, &[]), "a dead process of this host");
        let remote = LeftoverOwner {
            process: RunOwner {
                host: "another-host".to_owned(),
                pid: dead.process.pid,
            },
            worker: None,
            lease: None,
        };
        assert!(
            !remote.is_gone(&here, &[]),
            "another host's pid means nothing here"
        );

        // A fleet: the same worker id in another process is a restarted worker; another worker is not judged.
        let worker = here.clone().with_worker("w-1");
        let earlier = remote.clone().with_worker("w-1");
        assert!(earlier.is_gone(&worker, &[]));
        assert!(!remote.clone().with_worker("w-2").is_gone(&worker, &[]));
        assert!(!worker.is_gone(&worker, &[]), "its own leftovers are alive");

        // A lease that ended frees what was made under it, wherever that was.
        let lease = Lease { job: 7, attempt: 2 };
        let leased = remote.with_worker("w-2").with_lease(lease);
        assert!(!leased.is_gone(&worker, &[Lease { job: 7, attempt: 3 }]));
        assert!(leased.is_gone(&worker, &[lease]));
    }
}
