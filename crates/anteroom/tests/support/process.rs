//! Running the real `anteroom` binary as a child process: the server, and
//! the chat client in line mode.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
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

    /// The first line of the server's log so far that contains `text`.
    pub fn line_containing(&self, text: &str) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().find(|line| line.contains(text)).cloned()
    }

    /// How many lines of the server's log so far contain `text`.
    pub fn logged(&self, text: &str) -> usize {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|line| line.contains(text)).count()
    }

    /// Waits up to `within` for at least `count` lines of the log to contain
    /// `text`: the log is read by another thread, so a line may arrive a
    /// moment after what it reports.
    pub async fn wait_logged(&self, text: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.logged(text) < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The address the server logged after `marker` (`"TLS on "`, say),
    /// waiting a few seconds for the line.
    pub async fn logged_addr(&self, marker: &str) -> SocketAddr {
        self.wait_logged(marker, 1, Duration::from_secs(10)).await;
        let line = self
            .line_containing(marker)
            .unwrap_or_else(|| panic!("the server never logged {marker:?}"));
        let (_, rest) = line.split_once(marker).unwrap();
        let addr = rest.split_whitespace().next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no address after {marker:?} in {line:?}"))
    }

    /// The web listener's address, from its `web client on http://ADDR/`
    /// line, for a server started with `--web-listen`.
    pub async fn web_addr(&self) -> SocketAddr {
        const MARKER: &str = "web client on http://";
        self.wait_logged(MARKER, 1, Duration::from_secs(10)).await;
        let line = self
            .line_containing(MARKER)
            .unwrap_or_else(|| panic!("the server never logged {MARKER:?}"));
        let (_, rest) = line.split_once(MARKER).unwrap();
        let addr = rest.split(['/', ' ']).next().unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|_| panic!("no web address in {line:?}"))
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
    // Every test client comes from 127.0.0.1: the per-address limits are
    // off unless a test sets them (its variables and flags win).
    cmd.env("ANTEROOM_MAX_CONNECTIONS_PER_IP", "0")
        .env("ANTEROOM_CONNECTION_RATE_PER_IP", "0");
    // The chat log in memory: test servers share a working directory, and
    // one `data_dir` serves one server. Tests of the stores set their own.
    cmd.env("ANTEROOM_STORE", "memory");
    for (k, v) in env {
        if *k == "TEST_NOFILE" {
            // Run the server with a low descriptor limit: `SOFT` (the hard
            // limit too) or `SOFT:HARD`.
            let (soft, hard) = v.split_once(':').unwrap_or((v, v));
            let (soft, hard): (u64, u64) = (soft.parse().unwrap(), hard.parse().unwrap());
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs
            // between fork and exec. `pre_exec` is the only way to lower
            // the child's limit before it starts.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(move || {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        soft,
                        hard,
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

/// Sets a running process's descriptor limits, as `prlimit` would: the
/// server fitted its connection cap to the limit it started with, so this is
/// how a test makes it run out of descriptors.
pub fn set_descriptor_limit(pid: u32, soft: u64, hard: u64) {
    let limit = nix::libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: prlimit only reads `limit`; the old limits are not asked for.
    #[allow(unsafe_code)]
    let rc = unsafe {
        nix::libc::prlimit(
            pid as nix::libc::pid_t,
            nix::libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    anteroom_bench::server::read_usage(pid).map_or(0.0, |u| u.cpu_seconds)
}

/// How many descriptors a process has open (0 if they cannot be read).
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Hands each line of `output` to `each`, then to the returned channel, from
/// a thread of its own.
fn lines_of(
    output: impl Read + Send + 'static,
    mut each: impl FnMut(&str) + Send + 'static,
) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            each(&line);
            let _ = tx.send(line);
        }
    });
    rx
}

/// Starts the server on free ports and waits for its two address lines.
pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut all = vec!["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"];
    // The web listener is off unless the test turns it on.
    if !args.contains(&"--web-listen") {
        all.extend_from_slice(&["--web-listen", ""]);
    }
    all.extend_from_slice(args);
    let mut child = command(&all, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit()) // read by nobody: a full pipe would block the server
        .spawn()
        .expect("run anteroom");
    let stdout = child.stdout.take().unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let kept = log.clone();
    // TEST_SERVER_LOGS=1 shows the server's log while debugging a test.
    let echo = std::env::var_os("TEST_SERVER_LOGS").is_some();
    let rx = lines_of(stdout, move |line| {
        if echo {
            eprintln!("server: {line}");
        }
        kept.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
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

/// An `anteroom chat` process in line mode.
pub struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The lines it prints, as they come.
    pub lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Chat {
    /// Starts `anteroom chat --name NAME` against the server at `server`.
    pub fn start(server: SocketAddr, name: &str) -> Self {
        Self::start_url(&server.to_string(), name)
    }

    /// Starts `anteroom chat --name NAME --server URL`.
    pub fn start_url(url: &str, name: &str) -> Self {
        Self::start_with(url, name, &[])
    }

    /// Starts `anteroom chat --name NAME --server URL` with more flags.
    pub fn start_with(url: &str, name: &str, flags: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["chat", "--name", name, "--server", url])
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let lines = lines_of(child.stdout.take().unwrap(), |_| {});
        let stdin = child.stdin.take();
        Chat {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for an output line equal to `want` (or matching after a
    /// timestamp, for messages).
    pub fn expect(&mut self, want: &str) {
        self.expect_line(want, |line| {
            line == want || line.split_once("] ").is_some_and(|(_, rest)| rest == want)
        });
    }

    /// Waits for an output line that contains `part`, and returns it.
    pub fn expect_containing(&mut self, part: &str) -> String {
        self.expect_line(part, |line| line.contains(part))
    }

    fn expect_line(&mut self, want: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = matches(&line);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(_) => panic!("never saw {want:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Closes standard input and expects a clean exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "chat did not exit after its input ended"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
