//! A private `redis-server` child process.
//!
//! Used two ways: by every test in the workspace (ephemeral port, throw-away
//! temp dir, no persistence) and by `tally up` when no Redis is configured
//! (a data dir of its own, AOF on). Both need the same things: find the
//! binary, pick a free port, start it, wait until it answers `PING`, and stop
//! it (SHUTDOWN, then kill) when dropped, so no test ever relies on a Redis
//! that happens to be running on the machine.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the private server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "redis-server was not found on PATH. Install it (Debian/Ubuntu: `apt-get install redis-server`, \
         macOS: `brew install redis`) or point Tally at a running Redis with REDIS_URL=redis://host:port"
    )]
    NotInstalled,
    #[error("could not prepare {0}: {1}")]
    Io(String, std::io::Error),
    #[error("redis-server did not answer PING on {addr} within {secs}s; its log says:\n{log}")]
    NotReady { addr: SocketAddr, secs: u64, log: String },
    #[error("redis-server exited early ({status}); its log says:\n{log}")]
    Exited { status: String, log: String },
}

/// How to start the server.
#[derive(Debug, Clone)]
pub struct RedisServerOptions {
    /// Data directory; a fresh temp dir when `None` (removed on drop).
    pub dir: Option<PathBuf>,
    /// Append-only file on (durable across restarts).
    pub appendonly: bool,
    /// Port; a free ephemeral port when `None`.
    pub port: Option<u16>,
    /// Extra `--flag value` arguments (e.g. `--cluster-enabled yes`).
    pub extra_args: Vec<String>,
    /// How long to wait for the first PING.
    pub ready_timeout: Duration,
}

impl Default for RedisServerOptions {
    fn default() -> Self {
        RedisServerOptions {
            dir: None,
            appendonly: false,
            port: None,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

/// A running private redis-server; stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Start a throw-away server for a test: ephemeral port, temp dir, no
    /// persistence.
    pub fn start_ephemeral() -> Result<RedisServer, HarnessError> {
        Self::start(RedisServerOptions::default())
    }

    /// Start a server with the given options and wait until it answers. With
    /// an ephemeral port, a start that fails because another process took the
    /// port in the meantime is retried on a fresh port.
    pub fn start(opts: RedisServerOptions) -> Result<RedisServer, HarnessError> {
        let attempts = if opts.port.is_none() { 3 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            match Self::start_once(&opts) {
                Ok(s) => return Ok(s),
                Err(e @ HarnessError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(HarnessError::NotInstalled))
    }

    fn start_once(opts: &RedisServerOptions) -> Result<RedisServer, HarnessError> {
        let binary = find_binary("redis-server").ok_or(HarnessError::NotInstalled)?;
        let (dir, temp) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| HarnessError::Io(d.display().to_string(), e))?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("tally-redis-")
                    .tempdir()
                    .map_err(|e| HarnessError::Io("temp dir".into(), e))?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        // A port the OS just handed out and we released; redis-server binds it
        // a moment later. If another process races us to it, startup fails
        // with a clear log and the caller may retry.
        let port = match opts.port {
            Some(p) => p,
            None => free_port().map_err(|e| HarnessError::Io("ephemeral port".into(), e))?,
        };
        let log_path = dir.join("redis.log");
        // A reused directory keeps the log of earlier runs: only what this
        // run appends counts.
        let log_start = std::fs::metadata(&log_path).map_or(0, |m| m.len() as usize);
        let mut cmd = Command::new(binary);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log_path)
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if opts.appendonly { "yes" } else { "no" })
            .arg("--daemonize")
            .arg("no")
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .map_err(|e| HarnessError::Io("redis-server process".into(), e))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = RedisServer {
            child: Some(child),
            addr,
            dir,
            _temp: temp,
        };
        server.wait_ready(opts.ready_timeout, log_start)?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration, log_start: usize) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(5);
        loop {
            // Our own log must say the server is listening: a PING alone may
            // be answered by another test's server that took the port first
            // (ours then exits on the failed bind and the start is retried).
            if self.log_says_ready(log_start) && ping(self.addr) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(HarnessError::Exited {
                    status: status.to_string(),
                    log: self.log_tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    addr: self.addr,
                    secs: timeout.as_secs(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this server's log, from byte `from` on, says it is listening.
    fn log_says_ready(&self, from: usize) -> bool {
        const READY: &[u8] = b"Ready to accept connections";
        std::fs::read(self.dir.join("redis.log")).is_ok_and(|log| {
            log.get(from..)
                .is_some_and(|new| new.windows(READY.len()).any(|w| w == READY))
        })
    }

    /// Last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Kill the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the server: `SHUTDOWN` (flushing the AOF), then kill it if it is
    /// still running after a grace period.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        if let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
            let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
            let _ = s.write_all(b"SHUTDOWN\r\n");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Find an executable on PATH.
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// A port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Send one inline command to `addr` and return the start of the reply
/// (one read), or `None` if nothing answered.
fn inline_command(addr: SocketAddr, command: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    s.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// True if something at `addr` answers a Redis `PING` with `+PONG`.
pub fn ping(addr: SocketAddr) -> bool {
    inline_command(addr, "PING").is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
}

/// A private Redis Cluster of `masters` nodes (no replicas), for tests that
/// must prove the services run unchanged on Redis Cluster. Each node is a
/// [`RedisServer`] in cluster mode with an explicit bus port; the cluster is
/// created with `redis-cli --cluster create`, exactly as an operator would.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(masters: usize) -> Result<RedisCluster, HarnessError> {
        let cli = find_binary("redis-cli").ok_or(HarnessError::NotInstalled)?;
        let mut nodes = Vec::with_capacity(masters);
        for _ in 0..masters {
            let bus = free_port().map_err(|e| HarnessError::Io("cluster bus port".into(), e))?;
            nodes.push(RedisServer::start(RedisServerOptions {
                extra_args: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    "nodes.conf".into(),
                    "--cluster-node-timeout".into(),
                    "5000".into(),
                    "--cluster-port".into(),
                    bus.to_string(),
                ],
                ..Default::default()
            })?);
        }
        let out = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(nodes.iter().map(|n| n.addr().to_string()))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::Io("redis-cli --cluster create".into(), e))?;
        if !out.status.success() {
            return Err(HarnessError::Exited {
                status: out.status.to_string(),
                log: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
            });
        }
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20))?;
        Ok(cluster)
    }

    fn wait_ok(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.nodes.iter().all(|n| cluster_state_ok(n.addr())) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::NotReady {
                    addr: self.nodes[0].addr(),
                    secs: timeout.as_secs(),
                    log: self.nodes[0].log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://h1:p1,h2:p2,...`, as `REDIS_URL` takes it.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.addr().to_string()).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

fn cluster_state_ok(addr: SocketAddr) -> bool {
    inline_command(addr, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let mut server = RedisServer::start_ephemeral().expect("redis-server must be installed");
        assert!(ping(server.addr()));
        let addr = server.addr();
        server.stop();
        assert!(!ping(addr));
    }

    #[test]
    fn a_server_that_cannot_bind_is_not_taken_for_the_one_holding_the_port() {
        let first = RedisServer::start_ephemeral().expect("redis-server must be installed");
        let second = RedisServer::start(RedisServerOptions {
            port: Some(first.port()),
            ..RedisServerOptions::default()
        });
        assert!(
            matches!(second, Err(HarnessError::Exited { .. })),
            "the second start must fail, not answer with the first server"
        );
        assert!(ping(first.addr()), "the first server is untouched");
    }

    #[test]
    fn a_restart_in_the_same_directory_waits_for_its_own_start() {
        let dir = tempfile::tempdir().unwrap();
        let opts = || RedisServerOptions {
            dir: Some(dir.path().to_path_buf()),
            ..RedisServerOptions::default()
        };
        let mut first = RedisServer::start(opts()).expect("redis-server must be installed");
        first.stop();
        let second = RedisServer::start(opts()).expect("restart in the same directory");
        assert!(ping(second.addr()));
    }
}
