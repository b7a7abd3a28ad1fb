//! `tally up` as a new user runs it: no REDIS_URL and nothing on the default
//! address starts a private redis-server (own data dir, AOF on) that is
//! stopped on exit; a missing redis-server is a clear error.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn tally() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tally"));
    c.env_remove("REDIS_URL").env("TALLY_LOG", "warn");
    c
}

#[test]
fn missing_redis_server_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = tally()
        .args(["up", "--default-redis-addr", &free_addr().to_string()])
        .env("PATH", dir.path()) // a PATH without redis-server
        .env("XDG_DATA_HOME", dir.path())
        .output()
        .expect("run tally");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis-server was not found"), "{err}");
    assert!(err.contains("REDIS_URL"), "{err}");
}

#[test]
fn up_starts_and_stops_a_private_redis() {
    let data = tempfile::tempdir().unwrap();
    let (ingest, pg, http, streamer) = (free_addr(), free_addr(), free_addr(), free_addr());
    let mut child = tally()
        .args(["up", "--default-redis-addr", &free_addr().to_string()])
        .args(["--ingest-addr", &ingest.to_string(), "--gateway-addr", &pg.to_string()])
        .args([
            "--gateway-http-addr",
            &http.to_string(),
            "--streamer-addr",
            &streamer.to_string(),
        ])
        .env("XDG_DATA_HOME", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tally up");
    // The banner names the private Redis.
    let mut redis_url = None;
    let mut page = None;
    // Keep the pipe open for the process's whole life.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for line in (&mut stdout).lines().map_while(Result::ok) {
        if let Some(rest) = line.trim().strip_prefix("Redis:") {
            assert!(rest.contains("(private, AOF on)"), "{line}");
            redis_url = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("Page:") {
            page = rest.split_whitespace().next().map(str::to_owned);
        }
        if line.starts_with("Stop with") {
            break;
        }
    }
    let redis_addr: SocketAddr = redis_url
        .and_then(|u| u.trim_start_matches("redis://").parse().ok())
        .expect("banner names the Redis address");
    assert!(harness::ping(redis_addr));
    // The banner names the dashboard page beside the psql command.
    assert_eq!(page, Some(format!("http://{http}/")));
    // The services answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(pg).is_err() {
        assert!(Instant::now() < deadline, "gateway did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let psql = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port().to_string(),
            "-U",
            "tally",
            "-At",
            "-c",
            "select count(*) from sites",
        ])
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "0",
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );

    // SIGTERM: graceful stop, and the private Redis goes with it.
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "tally up did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    drop(stdout);
    assert!(!harness::ping(redis_addr), "private redis stopped");
    let aof = data.path().join("tally/redis/appendonlydir");
    assert!(aof.is_dir(), "AOF in the private data dir: {}", aof.display());
}
