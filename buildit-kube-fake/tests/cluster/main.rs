//! Tests of the fake against itself with real clients (kube-rs, kubectl, plain HTTP) over loopback, and real
//! containers in the local Docker Engine.
#![expect(
    clippy::expect_used,
    reason = "tests fail loudly when their setup breaks"
)]

mod binary;
mod deletion;
mod exec;
mod faults;
mod jobs;
mod kubectl;
mod logs;
mod pods;
mod scheduling;
mod support;
mod watches;
