//! A throwaway PostgreSQL server for tests: a data directory of its own in
//! the temp directory, listening only on 127.0.0.1 on a free port (its Unix
//! socket in that directory too), trusting local connections, stopped and
//! removed when dropped.
//!
//! PostgreSQL refuses to run as root: when the tests do, the server and
//! `initdb` run as the `postgres` system user (through `setpriv`).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The role that authenticates with a password, for tests of a failed login;
/// every other role is trusted.
pub const PASSWORD_ROLE: &str = "anteroom_password_test";

/// A running server.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// `setpriv ...` when the tests run as root; empty otherwise.
    run_as: Vec<String>,
    pub port: u16,
    server: Option<Child>,
}

impl Postgres {
    /// Starts a new server; `Err` says what this machine lacks for one.
    pub fn start() -> Result<Self, String> {
        let bin = programs()?;
        let run_as = if running_as_root() {
            let has_user = Command::new("id")
                .args(["-u", "postgres"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !has_user {
                return Err("running as root, and there is no postgres user to run \
                            PostgreSQL as"
                    .to_string());
            }
            if !on_path("setpriv") {
                return Err("running as root, and setpriv (util-linux) is missing to \
                            run PostgreSQL as the postgres user"
                    .to_string());
            }
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
            ]
            .map(String::from)
            .to_vec()
        } else {
            Vec::new()
        };
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "anteroom-postgres-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut pg = Postgres {
            bin,
            dir,
            run_as,
            port: 0,
            server: None,
        };
        if !pg.run_as.is_empty() {
            let status = Command::new("chown")
                .args(["postgres:", &pg.dir.display().to_string()])
                .status()
                .expect("run chown");
            assert!(status.success(), "chown of {} failed", pg.dir.display());
        }
        let data = pg.data();
        let output = pg
            .command("initdb")
            .args(["-D", &data.display().to_string()])
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n\
                 host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n\
                 host all all 127.0.0.1/32 trust\n"
            ),
        )
        .expect("write pg_hba.conf");
        pg.port = free_port();
        pg.start_again();
        Ok(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(path);
                cmd
            }
            None => Command::new(path),
        }
    }

    /// Starts the server (again, after [`Postgres::stop`]) on the same port
    /// and data, and waits until it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.server.is_none(), "the server is running");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("open the server's log");
        let server = self
            .command("postgres")
            .args(["-D", &self.data().display().to_string()])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-k", &self.dir.display().to_string()])
            // A test server: speed over durability, and little memory.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "shared_buffers=16MB", "-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log)
            .spawn()
            .expect("run postgres");
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(status) = self
                .server
                .as_mut()
                .and_then(|s| s.try_wait().ok().flatten())
            {
                panic!("postgres exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 30 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a fast shutdown: clients are disconnected).
    pub fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(server.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(15);
        while server.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = server.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = server.wait();
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Runs `sql` in `database` as the superuser; returns what it printed
    /// (rows unaligned, `|` between columns).
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self, name: &str) -> String {
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(name)
    }

    /// The URL of `database` for the superuser, over the server's Unix
    /// socket.
    pub fn socket_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@/{database}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// The URL of `database` for the superuser.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The directory of `initdb`, `postgres`, `pg_isready` and `psql`: Debian's
/// newest `/usr/lib/postgresql/<version>/bin`, or the `PATH`.
fn programs() -> Result<PathBuf, String> {
    let needed = ["initdb", "postgres", "pg_isready", "psql"];
    let complete = |dir: &Path| needed.iter().all(|p| dir.join(p).is_file());
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| complete(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| complete(dir)))
        .ok_or_else(|| {
            "PostgreSQL's server programs (initdb, postgres, pg_isready, psql) are not \
             installed (Debian: apt-get install postgresql)"
                .to_string()
        })
}

/// Whether this process runs as root: `/proc/self` belongs to its user.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}
