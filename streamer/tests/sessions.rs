//! Session merges in the apply script against a real Redis: the events of
//! many sessions, applied in shuffled batches (so a session's events arrive
//! out of order and split over calls), give exactly the counters that the
//! independent Rust recompute gives for the complete set of events.

use harness::RedisServer;
use redis::Value;
use schema::ops::CancellationToken;
use schema::report::{Report, code};
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use schema::{Event, Grain, Keyspace, Shard};
use std::collections::HashMap;
use tally_streamer::aggregate::{Retention, aggregate};
use tally_streamer::apply::{ApplyOutcome, Attempt, Batch, apply_batch, read_states, try_apply};
use tally_streamer::consumer::{ConsumerOptions, ensure_group, run_shard};
use tally_streamer::verify::{VerifyScope, verify};

const SITE: &str = "sessions.test";
const T0: i64 = 1_795_000_000_000;

/// A small deterministic generator (no test may depend on chance).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// 60 sessions of 1 to 6 events each: page views on a few paths, some
/// custom events, a few with revenue, spread over two hours.
fn events() -> Vec<Event> {
    let mut rng = Lcg(7);
    let mut out = Vec::new();
    for s in 1..=60u64 {
        let visitor = 1000 + s % 45;
        let start = T0 + rng.below(2 * 3_600_000) as i64;
        let n = 1 + rng.below(6);
        let mut t = start;
        for i in 0..n {
            let path = format!("/p{}", rng.below(5));
            let mut e = Event::pageview(t, SITE, &path, visitor);
            e.session_id = s;
            e.browser = if visitor % 2 == 0 {
                "Chrome".into()
            } else {
                "Firefox".into()
            };
            e.country = if visitor % 3 == 0 { "DE".into() } else { String::new() };
            if i == 0 && s % 4 == 0 {
                e.referrer = "https://www.google.com/".into();
            }
            if i > 0 && rng.below(4) == 0 {
                e.name = if rng.below(2) == 0 { "add_to_cart" } else { "signup" }.into();
                e.props = vec![("plan".into(), format!("p{}", rng.below(2)))];
            }
            if i > 0 && rng.below(10) == 0 {
                e.name = "purchase".into();
                e.revenue = Some(schema::event::Revenue {
                    amount: "19.99".into(),
                    currency: "EUR".into(),
                });
            }
            e.returning = Some(visitor % 5 == 0);
            out.push(e);
            t += 1000 * (1 + rng.below(600)) as i64;
        }
    }
    out
}

/// The batch of the entries `ids`, one event each, with deltas `d`.
fn one_event_each<'a>(ids: &'a [String], d: &'a tally_streamer::aggregate::Deltas) -> Batch<'a> {
    Batch {
        ids,
        events: ids.len(),
        deltas: d,
    }
}

async fn connect(server: &RedisServer) -> RedisConn {
    RedisConn::connect(&RedisTarget::parse(&server.url()).unwrap(), ConnectOptions::default())
        .await
        .unwrap()
}

/// Append `e` to its shard stream; its entry id.
async fn xadd(conn: &mut RedisConn, e: &Event) -> String {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(Shard::of_site(&e.site).stream_key()).arg("*");
    for (k, v) in e.to_fields() {
        cmd.arg(k).arg(v);
    }
    cmd.query_async(conn).await.unwrap()
}

/// Create the group and read every entry of the site's shard as consumer c1.
async fn read_as_c1(conn: &mut RedisConn) -> Vec<String> {
    let (ks, shard) = (Keyspace::default(), Shard::of_site(SITE));
    ensure_group(conn, ks, shard).await.unwrap();
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(ks.group())
        .arg("c1")
        .arg("COUNT")
        .arg(10_000)
        .arg("STREAMS")
        .arg(shard.stream_key())
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    reply.keys.into_iter().flat_map(|k| k.ids).map(|i| i.id).collect()
}

/// XADD the events in a shuffled order, read them all as one consumer, and
/// apply them in shuffled batches of random sizes.
async fn apply_shuffled(conn: &mut RedisConn, seed: u64) {
    let ks = Keyspace::default();
    let shard = Shard::of_site(SITE);
    let mut rng = Lcg(seed);
    let mut evs = events();
    for i in (1..evs.len()).rev() {
        evs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut by_id = HashMap::new();
    for e in &evs {
        by_id.insert(xadd(conn, e).await, e.clone());
    }
    let ids = read_as_c1(conn).await;
    assert_eq!(ids.len(), evs.len());
    // Cut into batches of 1..=40 consecutive ids, applied in shuffled order.
    let mut batches = Vec::new();
    let mut rest = &ids[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(40) as usize).min(rest.len());
        batches.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    for i in (1..batches.len()).rev() {
        batches.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for batch in batches {
        let events: Vec<Event> = batch.iter().map(|id| by_id[id].clone()).collect();
        let d = aggregate(&events, ks, Retention::default());
        let outcome = apply_batch(conn, ks, shard, "c1", one_event_each(&batch, &d), Retention::default())
            .await
            .unwrap();
        assert_eq!(outcome, ApplyOutcome::Applied(batch.len()));
    }
}

/// The recompute of the site from the stream, asserted equal to the key-map.
async fn verified(conn: &mut RedisConn) -> tally_streamer::verify::VerifyReport {
    let scope = VerifyScope {
        site: Some(SITE.into()),
        ..Default::default()
    };
    let report = verify(conn, Keyspace::default(), &scope).await.unwrap();
    assert!(
        report.ok(),
        "counters: {:?}\nuniques: {:?}",
        report.counters,
        report.uniques
    );
    report
}

async fn traffic_day(conn: &mut RedisConn) -> HashMap<String, i64> {
    let key = Keyspace::default().report_key(Report::Traffic, Grain::Day, SITE, T0);
    redis::cmd("HGETALL").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn shuffled_batches_give_the_recomputed_counters() {
    let server = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let mut conn = connect(&server).await;
    apply_shuffled(&mut conn, 11).await;
    let report = verified(&mut conn).await;
    assert!(report.counters_checked > 100, "{}", report.counters_checked);

    // The definitions, checked directly on the complete event set.
    let events = events();
    let sessions = tally_streamer::sessions::sessions(&events);
    let traffic = traffic_day(&mut conn).await;
    assert_eq!(traffic[code::VISITS], 60);
    assert_eq!(traffic[code::VISITS], sessions.len() as i64);
    let bounces = sessions.values().filter(|s| s.is_bounce()).count() as i64;
    assert!(bounces > 0);
    assert_eq!(traffic.get(code::BOUNCES).copied().unwrap_or(0), bounces);
    let duration: i64 = sessions.values().map(|s| s.duration_secs()).sum();
    assert_eq!(traffic[code::DURATION], duration);
    assert_eq!(traffic[code::EVENTS], events.len() as i64);
}

#[tokio::test]
async fn different_orders_give_identical_key_maps() {
    let a = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let b = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let (mut ca, mut cb) = (connect(&a).await, connect(&b).await);
    apply_shuffled(&mut ca, 1).await;
    apply_shuffled(&mut cb, 2).await;
    let ks = Keyspace::default();
    for report in [
        Report::Traffic,
        Report::Pages,
        Report::Sources,
        Report::Devices,
        Report::Locations,
    ] {
        for grain in Grain::ALL {
            for b_ms in grain.buckets(T0, T0 + 4 * 3_600_000) {
                let key = ks.report_key(report, grain, SITE, b_ms);
                let x: HashMap<String, i64> = redis::cmd("HGETALL").arg(&key).query_async(&mut ca).await.unwrap();
                let y: HashMap<String, i64> = redis::cmd("HGETALL").arg(&key).query_async(&mut cb).await.unwrap();
                assert_eq!(x, y, "{key}");
            }
        }
    }
}

/// A batch merged with session facts that another consumer changed in the
/// meantime is refused as a whole (nothing written, its entries still
/// pending), and merged again from the fresh facts it counts the visit once.
#[tokio::test]
async fn a_merge_with_stale_session_facts_is_refused_and_redone() {
    let server = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let mut conn = connect(&server).await;
    let ks = Keyspace::default();
    let shard = Shard::of_site(SITE);
    let mut first = Event::pageview(T0, SITE, "/landing", 5);
    first.session_id = 77;
    let mut second = Event::pageview(T0 + 40_000, SITE, "/pricing", 5);
    second.session_id = 77;
    for e in [&first, &second] {
        xadd(&mut conn, e).await;
    }
    let ids = read_as_c1(&mut conn).await;
    let (a, b) = (vec![ids[0].clone()], vec![ids[1].clone()]);
    let (da, db) = (
        aggregate([&first], ks, Retention::default()),
        aggregate([&second], ks, Retention::default()),
    );

    let (batch_a, batch_b) = (one_event_each(&a, &da), one_event_each(&b, &db));
    // Batch b reads the (absent) facts; batch a is applied before b's call.
    let stale = read_states(&mut conn, ks, &db).await.unwrap();
    assert_eq!(stale.states, vec![None]);
    assert_eq!(
        apply_batch(&mut conn, ks, shard, "c1", batch_a, Retention::default())
            .await
            .unwrap(),
        ApplyOutcome::Applied(1)
    );
    let after_a = traffic_day(&mut conn).await;
    assert_eq!(
        try_apply(&mut conn, ks, shard, "c1", batch_b, &stale, Retention::default())
            .await
            .unwrap(),
        Attempt::Conflict
    );
    assert_eq!(traffic_day(&mut conn).await, after_a, "a refused call writes nothing");
    let pending: Vec<Value> = redis::cmd("XPENDING")
        .arg(shard.stream_key())
        .arg(ks.group())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(redis::from_redis_value::<i64>(pending[0].clone()).unwrap(), 1);

    assert_eq!(
        apply_batch(&mut conn, ks, shard, "c1", batch_b, Retention::default())
            .await
            .unwrap(),
        ApplyOutcome::Applied(1)
    );
    let traffic = traffic_day(&mut conn).await;
    assert_eq!(traffic[code::VISITS], 1, "{traffic:?}");
    assert_eq!(traffic.get(code::BOUNCES), None, "two page views: no bounce");
    assert_eq!(traffic[code::DURATION], 40);
    let pages: HashMap<String, i64> = redis::cmd("HGETALL")
        .arg(ks.report_key(Report::Pages, Grain::Day, SITE, T0))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pages["en\u{1f}/landing"], 1);
    assert_eq!(pages["ex\u{1f}/pricing"], 1);
    assert_eq!(pages.get("ex\u{1f}/landing"), None, "the old exit was replaced");
}

/// Two consume loops on one shard, in batches of a few events, so that
/// each merges into visits the other is merging into: the pipelined loop
/// reads a batch's visit states before the other loop's call lands, its
/// own call is then refused as a conflict and the batch goes to the serial
/// path. However the calls interleave, every event is applied once and the
/// key-map equals the recompute.
#[tokio::test]
async fn two_pipelined_loops_on_one_shard_apply_every_event_once() {
    let server = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let mut conn = connect(&server).await;
    let (ks, shard) = (Keyspace::default(), Shard::of_site(SITE));
    let mut rng = Lcg(5);
    let mut evs = events();
    for i in (1..evs.len()).rev() {
        evs.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for e in &evs {
        xadd(&mut conn, e).await;
    }
    let shutdown = CancellationToken::new();
    let mut loops = Vec::new();
    for name in ["c1", "c2"] {
        let mut opts = ConsumerOptions::new(name.into());
        opts.batch = 7;
        // No reclaiming: every batch must be applied by the loop that read
        // it, not rescued later from the pending list.
        opts.claim_idle = std::time::Duration::from_secs(3600);
        loops.push(tokio::spawn(run_shard(
            connect(&server).await,
            ks,
            shard,
            opts,
            shutdown.clone(),
        )));
    }
    // Bounded wait for both loops to have applied every event.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let applied: Option<i64> = redis::cmd("HGET")
            .arg(ks.applied_key(shard))
            .arg("events")
            .query_async(&mut conn)
            .await
            .unwrap();
        if applied == Some(evs.len() as i64) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "applied {applied:?} of {} events",
            evs.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    for l in loops {
        l.await.unwrap();
    }
    let batches: i64 = redis::cmd("HGET")
        .arg(ks.applied_key(shard))
        .arg("batches")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(batches > 20, "small batches: {batches}");
    verified(&mut conn).await;
    assert_eq!(traffic_day(&mut conn).await[code::VISITS], 60);
}
