//! Test support for the broker's integration tests.

#![allow(dead_code)]

pub mod postgres;

/// For a test that needs a program the machine may lack: prints that it is
/// skipped and why, and returns false; under CI, where `.ci/run` installs
/// every such program, a missing one is a failure instead. (The same rule
/// as the `anteroom` crate's test support.)
pub fn required(tool: &str, why: &str) -> bool {
    let under_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    assert!(!under_ci, "{tool} is required under CI: {why}");
    println!("skipped: {why}");
    false
}

/// A PostgreSQL server of the test's own, or `None` (the test is skipped)
/// where the machine has none to start, outside CI.
pub fn postgres() -> Option<postgres::Postgres> {
    match postgres::Postgres::start() {
        Ok(pg) => Some(pg),
        Err(why) => {
            required("PostgreSQL", &why);
            None
        }
    }
}
