//! Exactly once through crashes: two `tally streamer` processes consume a
//! 200k-event loadgen stream while one of them is killed with SIGKILL at
//! random points ten times (and restarted), and every Redis client
//! connection is dropped repeatedly (so scripts fail mid-flight with an
//! unknown outcome). Afterwards every counter equals the recompute from the
//! streams exactly and every unique-visitor sketch is within HyperLogLog
//! error (`tally verify`'s check).

use harness::RedisServer;
use ingest::enrich::UserAgentParser;
use ingest::payload::{Limits, decode, validate};
use ingest::visitor::hash_visitor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use schema::{Event, Keyspace, Shard};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tally::loadgen::TrafficModel;

const EVENTS: usize = 200_000;

/// Write `n` loadgen events to the streams as ingest would.
async fn prefill(conn: &mut RedisConn, n: usize) {
    let mut model = TrafficModel::new(20, 99, 6).unwrap();
    let parser = UserAgentParser::default();
    let now = chrono::Utc::now().timestamp_millis();
    let mut by_shard: HashMap<Shard, Vec<Event>> = HashMap::new();
    for _ in 0..n {
        let g = model.next_event();
        let mut e = validate(decode(g.body.as_bytes()).unwrap(), now, &Limits::default()).unwrap();
        let ua = parser.parse(g.user_agent);
        e.visitor_id = hash_visitor(&[1; 16], &e.site, &g.ip, g.user_agent);
        (e.browser, e.os, e.device) = (ua.browser, ua.os, ua.device);
        by_shard.entry(Shard::of_site(&e.site)).or_default().push(e);
    }
    for (shard, events) in by_shard {
        for chunk in events.chunks(1000) {
            let mut pipe = redis::pipe();
            for e in chunk {
                let cmd = pipe.cmd("XADD").arg(shard.stream_key()).arg("*");
                for (k, v) in e.to_fields() {
                    cmd.arg(k).arg(v);
                }
                cmd.ignore();
            }
            let () = pipe.query_async(conn).await.unwrap();
        }
    }
}

fn streamer(url: &str, consumer: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "streamer",
            "--streamer-addr",
            "127.0.0.1:0",
            "--claim-idle-ms",
            "500",
            "--consumer",
            consumer,
        ])
        .env("REDIS_URL", url)
        .env("TALLY_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tally streamer")
}

/// Entries pending for `consumer` over all shards.
async fn pending_of(conn: &mut RedisConn, ks: Keyspace, consumer: &str) -> u64 {
    let mut total = 0;
    for s in Shard::all() {
        let rows: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(s.stream_key())
            .arg(ks.group())
            .arg("-")
            .arg("+")
            .arg(100_000)
            .arg(consumer)
            .query_async(conn)
            .await
            .unwrap_or_default();
        total += rows.len() as u64;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_stay_exact_through_sigkill_and_dropped_connections() {
    let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let url = redis.url();
    let mut conn = RedisConn::connect(&RedisTarget::parse(&url).unwrap(), ConnectOptions::default())
        .await
        .unwrap();
    prefill(&mut conn, EVENTS).await;
    let ks = Keyspace::default();

    let mut stable = streamer(&url, "stable");
    let mut victim = streamer(&url, "victim-0");
    // Drop every client connection (ours excepted) every 150 ms.
    let killer_conn = conn.clone();
    let killing = tokio::spawn(async move {
        let mut c = killer_conn;
        let mut dropped = 0u64;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if let Ok(n) = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .query_async::<u64>(&mut c)
                .await
            {
                dropped += n;
            }
        }
        dropped
    });
    let mut rng = StdRng::seed_from_u64(2026);
    let mut pending_at_kills = 0u64;
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        victim.kill().expect("SIGKILL");
        let _ = victim.wait();
        pending_at_kills += pending_of(&mut conn, ks, &format!("victim-{i}")).await;
        victim = streamer(&url, &format!("victim-{}", i + 1));
    }
    eprintln!("entries left pending by the killed streamer: {pending_at_kills}");
    let dropped = killing.await.unwrap();
    assert!(dropped > 0, "connections were dropped");

    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let p = streamer::progress::progress(&mut conn, ks).await.unwrap();
        if p.iter().all(|s| s.caught_up()) {
            break;
        }
        assert!(Instant::now() < deadline, "streamers did not catch up: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for mut child in [stable, victim] {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();
    }
    stable = streamer(&url, "fresh"); // a fresh process must find nothing left to do
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stable.kill();
    let _ = stable.wait();

    let report = streamer::verify::verify(&mut conn, ks, &Default::default())
        .await
        .unwrap();
    assert_eq!(report.events, EVENTS as u64);
    assert!(report.counters_checked > 10_000, "{report:?}");
    assert!(
        report.counters.is_empty(),
        "counter differences: {:?}",
        &report.counters[..report.counters.len().min(10)]
    );
    assert!(
        report.uniques.is_empty(),
        "visitor differences: {:?}",
        &report.uniques[..report.uniques.len().min(10)]
    );
    let applied: i64 = {
        let mut total = 0;
        for s in Shard::all() {
            let v: Option<i64> = redis::cmd("HGET")
                .arg(ks.applied_key(s))
                .arg("events")
                .query_async(&mut conn)
                .await
                .unwrap();
            total += v.unwrap_or(0);
        }
        total
    };
    assert_eq!(applied, EVENTS as i64, "each entry applied exactly once");
}
