//! The apply script against a real Redis: a batch is counted once whatever
//! happens to it (retried, replayed, partly claimed by another consumer, or
//! left behind by a dead consumer and reclaimed).

use harness::RedisServer;
use redis::Value;
use schema::ops::CancellationToken;
use schema::report::{Report, code};
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use schema::{Event, Grain, Keyspace, Shard};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tally_streamer::aggregate::{Deltas, Retention, aggregate};
use tally_streamer::apply::{ApplyOutcome, Batch, apply_batch};
use tally_streamer::consumer::{ConsumerOptions, ensure_group, run_shard};

const SITE: &str = "exactly.test";
const TS: i64 = 1_795_000_000_000;

async fn setup() -> (RedisServer, RedisConn, Shard, Keyspace) {
    let server = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let conn = RedisConn::connect(&RedisTarget::parse(&server.url()).unwrap(), ConnectOptions::default())
        .await
        .unwrap();
    (server, conn, Shard::of_site(SITE), Keyspace::default())
}

fn event(i: i64) -> Event {
    Event::pageview(TS + i, SITE, &format!("/p{}", i % 3), i as u64 % 4)
}

async fn add(conn: &mut RedisConn, shard: Shard, n: i64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(shard.stream_key()).arg("*");
        for (k, v) in event(i).to_fields() {
            cmd.arg(k).arg(v);
        }
        ids.push(cmd.query_async::<String>(conn).await.unwrap());
    }
    ids
}

async fn read(conn: &mut RedisConn, ks: Keyspace, shard: Shard, consumer: &str, count: usize) -> Vec<String> {
    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(ks.group())
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(shard.stream_key())
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
    reply.keys.into_iter().flat_map(|k| k.ids).map(|i| i.id).collect()
}

/// The batch of the entries `ids`, one event each, with deltas `d`.
fn one_event_each<'a>(ids: &'a [String], d: &'a Deltas) -> Batch<'a> {
    Batch {
        ids,
        events: ids.len(),
        deltas: d,
    }
}

fn deltas_for(ids: &[String], all: &[String]) -> Deltas {
    let events: Vec<Event> = ids
        .iter()
        .map(|id| event(all.iter().position(|x| x == id).unwrap() as i64))
        .collect();
    aggregate(&events, Keyspace::default(), Retention::default())
}

async fn pageviews(conn: &mut RedisConn, ks: Keyspace) -> i64 {
    let key = ks.report_key(Report::Traffic, Grain::Day, SITE, TS);
    let v: Option<i64> = redis::cmd("HGET")
        .arg(key)
        .arg(code::PAGEVIEWS)
        .query_async(conn)
        .await
        .unwrap();
    v.unwrap_or(0)
}

async fn pending(conn: &mut RedisConn, ks: Keyspace, shard: Shard) -> i64 {
    let v: Vec<Value> = redis::cmd("XPENDING")
        .arg(shard.stream_key())
        .arg(ks.group())
        .query_async(conn)
        .await
        .unwrap();
    redis::from_redis_value(v[0].clone()).unwrap()
}

/// Apply the entries `ids` as consumer "c1", one event each with deltas `d`.
async fn apply_as_c1(conn: &mut RedisConn, ks: Keyspace, shard: Shard, ids: &[String], d: &Deltas) -> ApplyOutcome {
    let batch = one_event_each(ids, d);
    apply_batch(conn, ks, shard, "c1", batch, Retention::default())
        .await
        .unwrap()
}

/// Wait, at most 15 s, until nothing is pending and the day's pageviews
/// reach `want`.
async fn wait_applied(conn: &mut RedisConn, ks: Keyspace, shard: Shard, want: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while pending(conn, ks, shard).await > 0 || pageviews(conn, ks).await < want {
        assert!(Instant::now() < deadline, "{what} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_replayed_batch_is_not_counted_twice() {
    let (_server, mut conn, shard, ks) = setup().await;
    let all = add(&mut conn, shard, 10).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 10).await;
    let d = deltas_for(&ids, &all);
    let batch = one_event_each(&ids, &d);
    assert_eq!(
        apply_batch(&mut conn, ks, shard, "c1", batch, Retention::default())
            .await
            .unwrap(),
        ApplyOutcome::Applied(10)
    );
    // The same call again (a retry after a lost reply, or a replay).
    assert_eq!(
        apply_batch(&mut conn, ks, shard, "c1", batch, Retention::default())
            .await
            .unwrap(),
        ApplyOutcome::NotPending
    );
    assert_eq!(pageviews(&mut conn, ks).await, 10);
    assert_eq!(pending(&mut conn, ks, shard).await, 0);
}

#[tokio::test]
async fn a_partly_claimed_batch_is_split_exactly() {
    let (_server, mut conn, shard, ks) = setup().await;
    let all = add(&mut conn, shard, 6).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 6).await;
    // c2 claims two of c1's entries before c1 applies.
    let stolen = vec![ids[1].clone(), ids[4].clone()];
    let _: Value = redis::cmd("XCLAIM")
        .arg(shard.stream_key())
        .arg(ks.group())
        .arg("c2")
        .arg(0)
        .arg(&stolen)
        .arg("JUSTID")
        .query_async(&mut conn)
        .await
        .unwrap();
    let outcome = apply_batch(
        &mut conn,
        ks,
        shard,
        "c1",
        one_event_each(&ids, &deltas_for(&ids, &all)),
        Retention::default(),
    )
    .await
    .unwrap();
    let kept: Vec<String> = ids.iter().filter(|i| !stolen.contains(i)).cloned().collect();
    assert_eq!(outcome, ApplyOutcome::Partial(kept.clone()));
    assert_eq!(pageviews(&mut conn, ks).await, 0, "nothing applied by a refused call");
    assert_eq!(
        apply_batch(
            &mut conn,
            ks,
            shard,
            "c1",
            one_event_each(&kept, &deltas_for(&kept, &all)),
            Retention::default()
        )
        .await
        .unwrap(),
        ApplyOutcome::Applied(4)
    );
    assert_eq!(
        apply_batch(
            &mut conn,
            ks,
            shard,
            "c2",
            one_event_each(&stolen, &deltas_for(&stolen, &all)),
            Retention::default()
        )
        .await
        .unwrap(),
        ApplyOutcome::Applied(2)
    );
    assert_eq!(pageviews(&mut conn, ks).await, 6);
    assert_eq!(pending(&mut conn, ks, shard).await, 0);
}

/// Call the apply script for the one pending entry `id` with a single `H`
/// op of `pairs` on `key`.
async fn add_counters(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    id: &str,
    key: &str,
    pairs: &[(String, String)],
) -> redis::RedisResult<Value> {
    let script = redis::Script::new(include_str!("../src/apply.lua"));
    let mut inv = script.prepare_invoke();
    inv.key(shard.stream_key()).key(ks.applied_key(shard)).key(key);
    inv.arg(ks.group()).arg("c1").arg(1).arg(1).arg(id);
    inv.arg(0).arg(0); // no sessions
    inv.arg("H").arg(3).arg(0).arg(pairs.len());
    for (f, v) in pairs {
        inv.arg(f).arg(v);
    }
    inv.invoke_async(conn).await
}

#[tokio::test]
async fn malformed_ops_are_refused_before_any_write() {
    let (_server, mut conn, shard, ks) = setup().await;
    add(&mut conn, shard, 1).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 1).await;
    let key = ks.report_key(Report::Traffic, Grain::Day, SITE, TS);
    // Each a value that HINCRBY refuses: a fraction, and texts that Lua's
    // tonumber reads as integers (exponent, hex, past 2^63, leading zeros),
    // which must not pass the check and fail after the first write.
    for bad in [
        "1.5",
        "1e3",
        "0x10",
        "9223372036854775808",
        "-9223372036854775809",
        "007",
        "-0",
        " 1",
        "",
    ] {
        let pairs = [(code::PAGEVIEWS, "1"), (code::EVENTS, bad)].map(|(f, v)| (f.to_string(), v.to_string()));
        let r = add_counters(&mut conn, ks, shard, &ids[0], &key, &pairs).await;
        let err = r.expect_err("non-integer delta refused");
        assert!(
            err.to_string().contains("non-integer value"),
            "{bad:?} refused for its value: {err}"
        );
        assert_eq!(
            pageviews(&mut conn, ks).await,
            0,
            "{bad:?}: the valid first op was not written"
        );
        assert_eq!(
            pending(&mut conn, ks, shard).await,
            1,
            "{bad:?}: and the entry stays pending"
        );
    }
}

#[tokio::test]
async fn entries_of_a_dead_consumer_are_reclaimed_and_applied_once() {
    let (_server, mut conn, shard, ks) = setup().await;
    add(&mut conn, shard, 30).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    // "dead" reads 20 entries and never applies them.
    assert_eq!(read(&mut conn, ks, shard, "dead", 20).await.len(), 20);
    let mut opts = ConsumerOptions::new("alive".into());
    opts.claim_idle = Duration::from_millis(200);
    opts.claim_every = Duration::from_millis(100);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_shard(conn.clone(), ks, shard, opts, stop.clone()));
    wait_applied(&mut conn, ks, shard, 30, "reclaim").await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(pageviews(&mut conn, ks).await, 30);
}

/// Calls go by the script's hash; Redis forgets its scripts on a restart
/// without persistence, a failover or `SCRIPT FLUSH`. A refused call loads
/// the script and is sent again, on the serial path and in the consume loop.
#[tokio::test]
async fn calls_after_a_script_flush_load_the_script_again() {
    let (_server, mut conn, shard, ks) = setup().await;
    let all = add(&mut conn, shard, 5).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 5).await;
    let d = deltas_for(&ids, &all);
    assert_eq!(
        apply_as_c1(&mut conn, ks, shard, &ids, &d).await,
        ApplyOutcome::Applied(5)
    );

    let stop = CancellationToken::new();
    let task = tokio::spawn(run_shard(
        conn.clone(),
        ks,
        shard,
        ConsumerOptions::new("c2".into()),
        stop.clone(),
    ));
    for (round, want) in [(1, 10), (2, 15)] {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
        add(&mut conn, shard, 5).await;
        wait_applied(&mut conn, ks, shard, want, &format!("round {round}")).await;
    }
    stop.cancel();
    task.await.unwrap();
    assert_eq!(pageviews(&mut conn, ks).await, 15);
}

/// A key's lifetime runs from its first write: later batches leave it as it
/// is (renewing it would be one more write per key and batch), and a
/// counter hash deleted because all its fields returned to zero gets one
/// again when it is written anew.
#[tokio::test]
async fn lifetimes_are_set_by_the_first_write_only() {
    let (_server, mut conn, shard, ks) = setup().await;
    let all = add(&mut conn, shard, 10).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let key = ks.report_key(Report::Traffic, Grain::Minute, SITE, TS);
    let ttl = |mut conn: RedisConn, key: String| async move {
        redis::cmd("TTL").arg(key).query_async::<i64>(&mut conn).await.unwrap()
    };
    for (round, count) in [(1, 4), (2, 6)] {
        let ids = read(&mut conn, ks, shard, "c1", count).await;
        let d = deltas_for(&ids, &all);
        let outcome = apply_as_c1(&mut conn, ks, shard, &ids, &d).await;
        assert_eq!(outcome, ApplyOutcome::Applied(count), "round {round}");
        let left = ttl(conn.clone(), key.clone()).await;
        if round == 1 {
            let minute_ttl = i64::try_from(Retention::default().for_grain(Grain::Minute)).unwrap();
            assert!(
                (minute_ttl - 5..=minute_ttl).contains(&left),
                "first write sets the lifetime: {left}"
            );
            let _: () = redis::cmd("EXPIRE")
                .arg(&key)
                .arg(1000)
                .query_async(&mut conn)
                .await
                .unwrap();
        } else {
            assert!((990..=1000).contains(&left), "a later write keeps the lifetime: {left}");
        }
    }
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    add(&mut conn, shard, 2).await;
    let ids = read(&mut conn, ks, shard, "c1", 2).await;
    let events: Vec<Event> = (0..2).map(event).collect();
    let d = aggregate(&events, ks, Retention::default());
    assert_eq!(
        apply_as_c1(&mut conn, ks, shard, &ids, &d).await,
        ApplyOutcome::Applied(2)
    );
    assert!(
        ttl(conn.clone(), key.clone()).await > 1000,
        "a key written anew gets a lifetime"
    );
}

#[tokio::test]
async fn counters_are_added_exactly_over_the_whole_integer_range() {
    let (_server, mut conn, shard, ks) = setup().await;
    let key = ks.report_key(Report::Pages, Grain::Day, SITE, TS);
    let stored: Vec<(&str, i64)> = vec![
        ("small", 41),
        ("to_zero", 5),
        ("huge", 9_000_000_000_000_000),
        ("near_exact_limit", 999_999_999_999_999),
        ("negative", -7),
    ];
    for (f, v) in &stored {
        let _: () = redis::cmd("HSET")
            .arg(&key)
            .arg(*f)
            .arg(*v)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    // A change to each stored field, new fields (one with a delta beyond a
    // double's exact range), and over a thousand fields in one op.
    let mut pairs: Vec<(String, i64)> = vec![
        ("small".into(), 1),
        ("to_zero".into(), -5),
        ("huge".into(), 7),
        ("near_exact_limit".into(), 1),
        ("negative".into(), -1_000_000_000_000_000),
        ("new_huge".into(), 4_611_686_018_427_387_905),
        // The ends of the range pass the script's check.
        ("new_max".into(), i64::MAX),
        ("new_min".into(), i64::MIN),
    ];
    pairs.extend((0..1203).map(|i| (format!("f{i}"), i - 600)));
    let mut want: BTreeMap<String, i64> = stored.iter().map(|(f, v)| (f.to_string(), *v)).collect();
    for (f, d) in &pairs {
        *want.entry(f.clone()).or_default() += d;
    }
    want.retain(|_, v| *v != 0);

    add(&mut conn, shard, 1).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 1).await;
    let text: Vec<(String, String)> = pairs.iter().map(|(f, d)| (f.clone(), d.to_string())).collect();
    let r = add_counters(&mut conn, ks, shard, &ids[0], &key, &text).await.unwrap();
    assert_eq!(r, Value::Int(1), "applied");
    let got: BTreeMap<String, i64> = redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(got.len(), want.len(), "fields back at 0 are removed, no other");
    let wrong: Vec<_> = want.iter().filter(|(f, v)| got.get(*f) != Some(v)).collect();
    assert!(wrong.is_empty(), "fields not at their sums: {wrong:?}");
    assert_eq!(got["huge"], 9_000_000_000_000_007);
    assert_eq!(got["near_exact_limit"], 1_000_000_000_000_000);
    assert_eq!(got["negative"], -1_000_000_000_000_007);
    assert_eq!((got["new_max"], got["new_min"]), (i64::MAX, i64::MIN));
    assert!(!got.contains_key("to_zero") && !got.contains_key("f600"));
}

#[tokio::test]
async fn a_stored_counter_that_is_not_a_number_fails_the_call() {
    let (_server, mut conn, shard, ks) = setup().await;
    let key = ks.report_key(Report::Pages, Grain::Day, SITE, TS);
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("bad")
        .arg("x1")
        .query_async(&mut conn)
        .await
        .unwrap();
    add(&mut conn, shard, 1).await;
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let ids = read(&mut conn, ks, shard, "c1", 1).await;
    let pairs = vec![("bad".to_string(), "1".to_string())];
    let err = add_counters(&mut conn, ks, shard, &ids[0], &key, &pairs)
        .await
        .expect_err("HINCRBY's refusal");
    assert!(err.to_string().contains("not an integer"), "{err}");
    assert_eq!(pending(&mut conn, ks, shard).await, 1, "the entry stays pending");
}
