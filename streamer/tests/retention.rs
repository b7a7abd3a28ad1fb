//! Stream retention never drops what a consumer group has not applied, and
//! idle consumers with nothing pending are removed.

use harness::RedisServer;
use schema::ops::CancellationToken;
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use schema::{Event, Keyspace, Shard};
use std::time::{Duration, Instant};
use tally_streamer::consumer::{ConsumerOptions, ensure_group, run_shard};
use tally_streamer::retention::{remove_stale_consumers, trim_shard};

const SITE: &str = "retain.test";

async fn len(conn: &mut RedisConn, shard: Shard) -> u64 {
    redis::cmd("XLEN")
        .arg(shard.stream_key())
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn trims_only_what_every_group_has_applied() {
    let server = RedisServer::start_ephemeral().expect("redis-server must be installed");
    let mut conn = RedisConn::connect(&RedisTarget::parse(&server.url()).unwrap(), ConnectOptions::default())
        .await
        .unwrap();
    // Small listpack nodes, so approximate trimming can drop whole nodes.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(5)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (shard, ks) = (Shard::of_site(SITE), Keyspace::default());
    let now = chrono::Utc::now().timestamp_millis() as u64;
    let old = now - 10 * 3_600_000;
    for i in 0..10u64 {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(shard.stream_key()).arg(format!("{}-{}", old, i + 1));
        for (k, v) in Event::pageview(old as i64, SITE, "/old", i).to_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
    }
    for i in 0..5u64 {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(shard.stream_key()).arg("*");
        for (k, v) in Event::pageview(now as i64, SITE, "/new", i).to_fields() {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd.query_async(&mut conn).await.unwrap();
    }
    ensure_group(&mut conn, ks, shard).await.unwrap();
    let hour = Duration::from_secs(3600);

    // Nothing applied yet: the old entries are past retention but kept.
    trim_shard(&mut conn, shard, hour, now).await.unwrap();
    assert_eq!(len(&mut conn, shard).await, 15);

    // Apply everything, then trim: the old entries go, the new stay.
    let mut opts = ConsumerOptions::new("c1".into());
    opts.claim_every = Duration::from_secs(3600);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_shard(conn.clone(), ks, shard, opts, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = tally_streamer::progress::progress(&mut conn, ks).await.unwrap();
        if p.iter().all(|s| s.caught_up()) {
            break;
        }
        assert!(Instant::now() < deadline, "not applied in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    task.await.unwrap();
    trim_shard(&mut conn, shard, hour, now).await.unwrap();
    assert_eq!(len(&mut conn, shard).await, 5);

    // c1 has nothing pending; with a zero idle bound it is removed.
    let gone = remove_stale_consumers(&mut conn, shard, &ks.group(), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gone, vec!["c1".to_owned()]);
}
