//! The end-to-end tests, one module per topic, linked into a single test binary (as ripgrep's
//! and cargo's are): one link instead of one per file, which is most of the suite's build
//! time on a small machine. The harness they share is the `integration_tests` library
//! (`tests/src`).
//!
//! Run one topic or one test by its path:
//! `cargo test -p integration-tests --test it nerve_registration::` or
//! `... --test it e2e::synapse_follows_nerve`.
//!
//! A new topic is a new file here plus its `mod` line below (a file put directly in
//! `tests/tests/` still runs, as a binary of its own, but costs a link).
//!
//! What sharing one process means for the tests:
//! - libtest runs `available_parallelism()` tests at once (2 on a 2-core machine), as it did
//!   in each former binary, and starts them in name order, so a topic's tests still mostly
//!   run next to each other (`faults` serialises its own tests with a lock, as before).
//!   `--test-threads 1` runs everything one at a time.
//! - `nerve_exec` makes this process a child subreaper (as nerve is as PID 1): orphans of
//!   other tests' killed processes are adopted and stay zombies until the binary exits.
//!   Nothing here counts processes, so that is harmless; a test that starts counting its
//!   children must filter by pid.
//! - No test changes the process's environment, current directory, signal dispositions or
//!   resource limits (agents get theirs in their own process: `Agent::start_with_env`,
//!   `Agent::start_with_fd_limit`). Keep it so: those would leak into every other test.

mod admin_abuse;
mod config_errors;
mod config_props;
mod docs_links;
mod e2e;
mod faults;
mod fleet;
mod harness;
mod http_props;
mod log_level;
mod memory;
mod nerve_checks;
mod nerve_exec;
mod nerve_hooks;
mod nerve_maintenance;
mod nerve_payload;
mod nerve_registration;
mod nerve_reload;
mod nerve_shutdown;
mod notify;
mod prometheus;
mod recovery;
mod registry;
mod stats_page;
mod synapse_balance;
mod synapse_grpc;
mod synapse_http;
mod synapse_membership;
mod synapse_proxy;
mod synapse_reload;
mod synapse_threads;
mod upgrade;
