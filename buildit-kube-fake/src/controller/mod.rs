//! The controllers inside the fake: the scheduler, the job controller, the garbage collector, and the
//! deletion rules they share with the API.

pub(crate) mod deletion;
mod failure_policy;
mod garbage;
mod job;
mod job_pods;
mod node_affinity;
mod reconcile;
mod scheduler;

pub(crate) use garbage::run_garbage_collector;
pub(crate) use job::run_job_controller;
pub(crate) use reconcile::reconcile_loop;
pub(crate) use scheduler::run_scheduler;
