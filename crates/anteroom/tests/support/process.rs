//! Running the real `anteroom` binary as a child process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_anteroom");

/// A running `anteroom serve` with the addresses it logged.
pub struct Running {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// Every line the server has logged so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// The addresses of a server owned elsewhere.
    pub fn borrowed(addr: SocketAddr, metrics_addr: SocketAddr) -> Self {
        Running {
            child: None,
            addr,
            metrics_addr,
            log: Arc::default(),
        }
    }

    /// How many lines of the server's log so far contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|line| line.contains(text)).count()
    }

    /// The child process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("an owned server")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve").args(args);
    // Isolate from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("ANTEROOM_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
    for (k, v) in env {
        if *k == "TEST_NOFILE" {
            // Run the server with a low descriptor limit.
            let limit: u64 = v.parse().unwrap();
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec. `pre_exec` is the only way to lower
            // the child's limit before it starts.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        limit,
                        limit,
                    )
                    .map_err(std::io::Error::from)
                });
            }
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    anteroom_bench::server::read_usage(pid).map_or(0.0, |u| u.cpu_seconds)
}

/// Starts the server on free ports and waits for its two address lines.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut all = vec!["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut child = command(&all, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run anteroom");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = log.clone();
    std::thread::spawn(move || {
        // TEST_SERVER_LOGS=1 shows the server's log while debugging a test.
        let echo = std::env::var_os("TEST_SERVER_LOGS").is_some();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if echo {
                eprintln!("server: {line}");
            }
            kept.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            let _ = tx.send(line);
        }
    });
    let mut addr = None;
    let mut metrics_addr = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while addr.is_none() || metrics_addr.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("server logged its addresses");
        let after = |marker: &str| {
            line.split_once(marker).map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            })
        };
        addr = addr.or(after("listening on "));
        metrics_addr = metrics_addr.or(after("metrics on "));
    }
    Running {
        child: Some(child),
        addr: addr.unwrap(),
        metrics_addr: metrics_addr.unwrap(),
        log,
    }
}
