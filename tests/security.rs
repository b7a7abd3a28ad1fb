//! Authentication and tenant isolation: two owners with different sites and
//! an admin. Over SCRAM-SHA-256 (tokio-postgres and psql with a password)
//! each owner gets exactly their own sites' data from every table, function
//! and adversarial query shape (joins, subqueries on events, UNION, CTEs,
//! unique_visitors on a foreign site, prepared statements with the site as
//! a parameter, cursors), the admin sees both; wrong passwords and unknown
//! users get 28P01; the HTTP API wants a bearer token; repeated failures
//! from one address are refused with 28000; a client that answers the SCRAM
//! offer with another mechanism or a bare password is refused (FATAL, with
//! an SQLSTATE).

mod common;

use common::{Stack, text_rows};
use gateway::users::UserStore;
use std::process::Command;

const A: &str = "a.test";
const B: &str = "b.test";

async fn login(stack: &Stack, user: &str, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=tally",
            stack.pg_addr.port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// One column of a query, as text, sorted.
async fn column(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut v: Vec<String> = text_rows(c, sql).await.into_iter().map(|r| r[0].clone()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_see_only_their_sites_and_logins_are_checked() {
    let stack = Stack::start(&[A, B]).await;
    let t = common::yesterday_at(4);
    stack.post_pageviews(A, &["/a1", "/a2"], t, "10.5.0").await;
    stack.post_pageviews(B, &["/b1", "/b2", "/b3"], t, "10.5.1").await;
    let users = UserStore::new(stack.conn.clone());
    users.add("alice", "alice-secret", false).await.unwrap();
    users.set_site("alice", A, true).await.unwrap();
    users.add("bob", "bob-secret-1", false).await.unwrap();
    users.set_site("bob", B, true).await.unwrap();
    users.add("root", "root-secret", true).await.unwrap();
    let stored = users.get("alice").await.unwrap().unwrap();
    assert!(stored.verifier.starts_with("SCRAM-SHA-256$") && !stored.verifier.contains("alice-secret"));

    let alice = login(&stack, "alice", "alice-secret")
        .await
        .expect("alice logs in with SCRAM");
    let bob = login(&stack, "bob", "bob-secret-1").await.expect("bob logs in");
    let root = login(&stack, "root", "root-secret").await.expect("root logs in");

    let day = format!("'{}'", (chrono::Utc::now() - chrono::Duration::days(1)).date_naive());
    let probes: Vec<String> = vec![
        "select site from sites".into(),
        "select distinct site from traffic_day".into(),
        format!("select site from traffic_day where site = '{B}' or site = '{A}'"),
        "select distinct site from events".into(),
        format!("select site from events where site in (select site from sites) group by site"),
        "select site from traffic_day union select site from pages_day".into(),
        "with t as (select * from traffic_hour) select distinct site from t".into(),
        "select distinct t.site from traffic_day t join pages_day p on t.site = p.site".into(),
        "select site from realtime".into(),
        format!("select site from unique_visitors('{B}', {day}, now()) where visitors > 0"),
        format!("select site from unique_visitors('{A}', {day}, now()) where visitors > 0"),
        "select distinct site from (select site, path from pages_day) x".into(),
        "select s.site from sites s where exists (select 1 from events e where e.site = s.site)".into(),
    ];
    for sql in &probes {
        let a = column(&alice, sql).await;
        let b = column(&bob, sql).await;
        let r = column(&root, sql).await;
        assert!(a.iter().all(|s| s == A), "alice saw another site: {sql} -> {a:?}");
        assert!(b.iter().all(|s| s == B), "bob saw another site: {sql} -> {b:?}");
        assert!(!r.is_empty() || sql.contains("realtime"), "{sql}");
        let mut both = a.clone();
        both.extend(b.clone());
        both.sort();
        assert_eq!(r, both, "the admin sees both owners' rows: {sql}");
    }
    // Exact figures: a foreign site behaves as if it had no data.
    assert_eq!(
        column(
            &alice,
            &format!("select coalesce(sum(pageviews), 0) from traffic_day where site = '{B}'")
        )
        .await,
        ["0"]
    );
    assert_eq!(column(&alice, "select count(*) from events").await, ["2"]);
    assert_eq!(column(&bob, "select count(*) from events").await, ["3"]);
    assert_eq!(column(&root, "select count(*) from events").await, ["5"]);
    // A prepared statement with the site as a parameter.
    let stmt = alice
        .prepare("select count(*) from events where site = $1")
        .await
        .unwrap();
    let foreign: i64 = alice.query_one(&stmt, &[&B]).await.unwrap().get(0);
    let own: i64 = alice.query_one(&stmt, &[&A]).await.unwrap().get(0);
    assert_eq!((own, foreign), (2, 0));
    // A cursor.
    let msgs = text_rows(
        &alice,
        "begin; declare c cursor for select site, path from events order by path; fetch all from c; close c; commit",
    )
    .await;
    assert_eq!(msgs, [[A, "/a1"], [A, "/a2"]]);
    // Still read-only.
    let err = root.simple_query("delete from sites").await.expect_err("read-only");
    assert_eq!(err.code().map(|c| c.code()), Some("25006"));

    // psql with a password.
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &stack.pg_addr.port().to_string(),
            "-U",
            "bob",
            "-d",
            "tally",
        ])
        .args(["-At", "-c", "select site from sites"])
        .env("PGPASSWORD", "bob-secret-1")
        .output()
        .expect("psql");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{B}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Wrong password, unknown user, no password.
    for (user, password) in [("alice", "wrong-password"), ("mallory", "whatever-it-is")] {
        let err = login(&stack, user, password).await.expect_err("refused");
        assert_eq!(err.code().map(|c| c.code()), Some("28P01"), "{user}: {err}");
    }

    // The HTTP API: a bearer token per user.
    let api = |path: &str| format!("{}{path}", stack.gateway_url);
    let anonymous = stack.http.get(api("/api/sites")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(body["sqlstate"], "28000");
    let token = users.new_token("alice").await.unwrap();
    let mine: serde_json::Value = stack
        .http
        .get(api("/api/sites"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["rows"], serde_json::json!([[A]]));
    let foreign: serde_json::Value = stack
        .http
        .post(api("/api/query"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"sql": "select count(*) from events where site = $1", "params": [B]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(foreign["rows"], serde_json::json!([[0]]));
    let bad = stack
        .http
        .get(api("/api/sites"))
        .bearer_auth("tly_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);

    // Repeated failures from one address: refused before authentication.
    for _ in 0..gateway::pg::auth::MAX_FAILURES {
        let _ = login(&stack, "alice", "not-her-password").await;
    }
    let err = login(&stack, "alice", "alice-secret").await.expect_err("blocked");
    assert_eq!(err.code().map(|c| c.code()), Some("28000"), "{err}");
    stack.stop().await;
}

/// Start a wire session as `user` over a raw socket and read the server's
/// authentication request.
async fn raw_startup(stack: &Stack, user: &str) -> (tokio::net::TcpStream, u8, Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(stack.pg_addr).await.unwrap();
    let mut params = Vec::new();
    for p in ["user", user, "database", "tally"] {
        params.extend_from_slice(p.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut msg = ((params.len() + 8) as i32).to_be_bytes().to_vec();
    msg.extend_from_slice(&196_608i32.to_be_bytes());
    msg.extend_from_slice(&params);
    s.write_all(&msg).await.unwrap();
    let (kind, body) = read_message(&mut s).await;
    (s, kind, body)
}

async fn read_message(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let read = async {
        let kind = s.read_u8().await?;
        let len = s.read_i32().await?;
        let mut body = vec![0; (len - 4).max(0) as usize];
        s.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>((kind, body))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the server answers")
        .expect("a whole message")
}

/// The SQLSTATE field of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_auth_methods_are_refused() {
    use tokio::io::AsyncWriteExt;
    let stack = Stack::start(&[A]).await;
    let users = UserStore::new(stack.conn.clone());
    users.add("carol", "carol-secret", false).await.unwrap();
    users.set_site("carol", A, true).await.unwrap();

    // The server offers SCRAM-SHA-256 only: no cleartext, no MD5.
    let (_s, kind, body) = raw_startup(&stack, "carol").await;
    assert_eq!(kind, b'R');
    assert_eq!(&body[..4], &10i32.to_be_bytes(), "AuthenticationSASL");
    assert_eq!(&body[4..], b"SCRAM-SHA-256\0\0");

    // A mechanism it did not offer, and a bare password instead of a SASL
    // message: each a FATAL error with an SQLSTATE, and the connection ends.
    let mut initial = b"MD5\0".to_vec();
    initial.extend_from_slice(&(-1i32).to_be_bytes());
    let bare = b"carol-secret\0".to_vec();
    for answer in [initial, bare] {
        let (mut s, _, _) = raw_startup(&stack, "carol").await;
        let mut msg = vec![b'p'];
        msg.extend_from_slice(&((answer.len() + 4) as i32).to_be_bytes());
        msg.extend_from_slice(&answer);
        s.write_all(&msg).await.unwrap();
        let (kind, body) = read_message(&mut s).await;
        assert_eq!(kind, b'E', "{}", String::from_utf8_lossy(&body));
        let code = sqlstate(&body);
        assert!(
            ["08P01", "28000", "28P01"].contains(&code.as_str()),
            "{code}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(String::from_utf8_lossy(&body).contains("FATAL"));
    }
    // The server keeps serving: the right password still gets in.
    let c = login(&stack, "carol", "carol-secret").await.expect("carol logs in");
    assert_eq!(column(&c, "select site from sites").await, [A]);
    stack.stop().await;
}
