//! TLS on the wire: certificates from PEM with PKCS#8, PKCS#1 and SEC1
//! keys (made by openssl for the test), a bad key is a startup error (never
//! plaintext), and with `--tls-required` psql and psycopg connect with
//! `sslmode=require` while a plaintext connection is refused with 28000.

mod common;

use common::Stack;
use std::path::{Path, PathBuf};
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (certificate, PKCS#8 key, PKCS#1 key, EC certificate, SEC1 key).
fn certificates(dir: &Path) -> [PathBuf; 5] {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "pkcs8.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(dir, &["rsa", "-in", "pkcs8.pem", "-out", "pkcs1.pem", "-traditional"]);
    openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sec1.pem",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-key",
            "sec1.pem",
            "-out",
            "ec.pem",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ],
    );
    ["cert.pem", "pkcs8.pem", "pkcs1.pem", "ec.pem", "sec1.pem"].map(|f| dir.join(f))
}

#[test]
fn pem_keys_of_every_kind_load_and_bad_ones_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let [cert, pkcs8, pkcs1, ec, sec1] = certificates(dir.path());
    for key in [&pkcs8, &pkcs1] {
        assert!(
            std::fs::read_to_string(key).unwrap().contains("PRIVATE KEY"),
            "{}",
            key.display()
        );
        if let Err(e) = gateway::tls::acceptor(&cert, key) {
            panic!("{}: {e}", key.display());
        }
    }
    assert!(
        std::fs::read_to_string(&pkcs1)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    assert!(std::fs::read_to_string(&sec1).unwrap().contains("BEGIN EC PRIVATE KEY"));
    assert!(gateway::tls::acceptor(&ec, &sec1).is_ok(), "SEC1 key");
    // Mismatched, missing and garbage keys are errors.
    assert!(gateway::tls::acceptor(&cert, &sec1).is_err());
    assert!(gateway::tls::acceptor(&cert, &dir.path().join("missing.pem")).is_err());
    std::fs::write(dir.path().join("junk.pem"), "not a key").unwrap();
    let Err(err) = gateway::tls::acceptor(&cert, &dir.path().join("junk.pem")) else {
        panic!("a junk key loaded")
    };
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_serves_sslmode_require_and_refuses_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let [cert, pkcs8, ..] = certificates(dir.path());
    let stack = Stack::start_with_gateway(&["tls.test"], |g| {
        g.tls_cert = Some(cert.clone());
        g.tls_key = Some(pkcs8.clone());
        g.tls_required = true;
    })
    .await;
    let port = stack.pg_addr.port().to_string();
    let conninfo = |mode: &str| format!("host=127.0.0.1 port={port} user=tally dbname=tally sslmode={mode}");
    let psql = |mode: &str| {
        Command::new("psql")
            .args([&conninfo(mode), "-At", "-c", "select site from sites"])
            .output()
            .expect("psql")
    };
    let secure = psql("require");
    assert_eq!(
        String::from_utf8_lossy(&secure.stdout),
        "tls.test\n",
        "{}",
        String::from_utf8_lossy(&secure.stderr)
    );
    let plain = psql("disable");
    assert!(!plain.status.success());
    assert!(
        String::from_utf8_lossy(&plain.stderr).contains("requires TLS"),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    // psycopg 3 with sslmode=require reports the TLS session.
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, psycopg; c = psycopg.connect(sys.argv[1]); print(c.pgconn.ssl_in_use, c.execute('select site from sites').fetchone()[0])",
            &conninfo("require"),
        ])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        "True tls.test",
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    stack.stop().await;
}
