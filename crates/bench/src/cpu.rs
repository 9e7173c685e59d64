//! CPU placement and CPU time: `--pin`, which gives the server and the load
//! generator a core each, and the CPU-time readings behind the figures of
//! CPU per delivery.
//!
//! On one machine the load generator and the broker compete for the same
//! cores, so a broker's throughput partly depends on how much CPU the load
//! generator leaves it. Pinning makes that split fixed (one core each), and
//! the CPU per delivery of both processes shows what each side spent,
//! whether pinned or not.

use std::process::Command;

use anyhow::Context;
use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// `--pin`, shared by the workloads that start a server.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct PinArgs {
    /// Run the server on one CPU and the load generator on another (the
    /// first two this process may use, normally 0 and 1); needs two CPUs and
    /// `taskset` (util-linux), and a server the bench starts.
    #[arg(long, conflicts_with = "server")]
    pub pin: bool,
}

/// Where the server and the load generator run under `--pin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// The server's CPU.
    pub server: usize,
    /// The load generator's CPU.
    pub load_generator: usize,
}

impl PinArgs {
    /// With `--pin`: moves every thread of this process onto the load
    /// generator's CPU (threads started later inherit it) and returns the
    /// placement, so the server can be started on the other one. Call before
    /// connecting anything.
    pub fn apply(self) -> anyhow::Result<Option<Pinning>> {
        if !self.pin {
            return Ok(None);
        }
        let allowed = sched_getaffinity(Pid::from_raw(0)).context("reading this process's CPUs")?;
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .take(2)
            .collect();
        let &[server, load_generator] = cpus.as_slice() else {
            anyhow::bail!(
                "--pin needs two CPUs, one for the server and one for the load generator; this process may use {}",
                cpus.len()
            );
        };
        let mut set = CpuSet::new();
        set.set(load_generator)?;
        // Every thread the process has now: the runtime's workers exist
        // already, and sched_setaffinity moves one thread at a time.
        for task in
            std::fs::read_dir("/proc/self/task").context("listing this process's threads")?
        {
            let Some(tid) = task?.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            match sched_setaffinity(Pid::from_raw(tid), &set) {
                // A thread that ended since the listing.
                Err(nix::errno::Errno::ESRCH) => {}
                other => other
                    .with_context(|| format!("pinning thread {tid} to CPU {load_generator}"))?,
            }
        }
        Ok(Some(Pinning {
            server,
            load_generator,
        }))
    }
}

impl Pinning {
    /// The command that runs `program` on the server's CPU: `taskset -c N
    /// program`, which execs it, so the child's pid is the server's.
    pub fn command(pinning: Option<Pinning>, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match pinning {
            None => Command::new(program),
            Some(pinning) => {
                let mut command = Command::new("taskset");
                command
                    .arg("-c")
                    .arg(pinning.server.to_string())
                    .arg(program);
                command
            }
        }
    }

    /// How a run's first line says where it runs.
    pub fn describe(pinning: Option<Pinning>) -> String {
        match pinning {
            None => "unpinned".into(),
            Some(p) => format!(
                "pinned: server on CPU {}, load generator on CPU {}",
                p.server, p.load_generator
            ),
        }
    }
}

/// CPU time this process has used, user and system, in seconds, every
/// thread included (those that have ended too). `getrusage` gives it to the
/// microsecond, where /proc/self/stat counts 10 ms ticks.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// Microseconds of CPU per delivery; `None` when nothing was delivered or
/// nothing measured (a server the bench did not start).
pub fn us_per_delivery(cpu_seconds: f64, delivered: u64) -> Option<f64> {
    (delivered > 0 && cpu_seconds > 0.0).then(|| cpu_seconds * 1e6 / delivered as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_server_is_started_through_taskset() {
        let pinning = Some(Pinning {
            server: 0,
            load_generator: 1,
        });
        let command = Pinning::command(pinning, "redis-server");
        assert_eq!(command.get_program(), "taskset");
        let args: Vec<_> = command.get_args().collect();
        assert_eq!(args, ["-c", "0", "redis-server"]);
        assert_eq!(
            Pinning::command(None, "redis-server").get_program(),
            "redis-server"
        );
    }

    #[test]
    fn cpu_per_delivery_needs_deliveries_and_a_measurement() {
        assert_eq!(us_per_delivery(0.5, 1_000_000), Some(0.5));
        assert_eq!(us_per_delivery(0.5, 0), None);
        assert_eq!(us_per_delivery(0.0, 10), None);
    }

    #[test]
    fn own_cpu_time_grows() {
        let before = own_cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(own_cpu_seconds() > before);
    }
}
