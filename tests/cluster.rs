//! The whole stack on a real 3-master Redis Cluster: ingest, two streamers
//! and the gateway all use the redis crate's cluster client, and the SQL
//! results are exact. Every key a command, pipeline or script touches carries
//! one shard's hash tag, so nothing crosses slots. A replay there rebuilds
//! the same figures into a new version and removes the old one from every
//! master.

mod common;

use common::Stack;
use harness::RedisCluster;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_unchanged_on_redis_cluster() {
    let cluster = RedisCluster::start(3).expect("redis-server and redis-cli must be installed");
    let url = cluster.url();
    let node_addrs: Vec<_> = cluster.nodes().iter().map(|n| n.addr()).collect();
    let sites = tally::loadgen::site_names(8);
    let site_refs: Vec<&str> = sites.iter().map(String::as_str).collect();
    let stack = Stack::start_on(Box::new(cluster), &url, &site_refs, 2).await;
    assert!(stack.conn.is_cluster());

    let report = stack.loadgen(1_500, 8, 2, 7).await;
    assert_eq!(report.accepted, 1_500, "{report:?}");
    stack.wait_caught_up(Duration::from_secs(60)).await;

    let pg = stack.pg().await;
    // Aggregates equal a recount of the raw streams, site by site.
    let from_streams = pg
        .query(
            "select site, count(*) from events where name <> 'engagement' group by site order by site",
            &[],
        )
        .await
        .expect("events");
    let from_keymap = pg
        .query(
            "select site, sum(events) from traffic_day group by site order by site",
            &[],
        )
        .await
        .expect("traffic");
    let a: Vec<(String, i64)> = from_streams.iter().map(|r| (r.get(0), r.get(1))).collect();
    let b: Vec<(String, i64)> = from_keymap.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(a, b);
    assert_eq!(b.iter().map(|(_, n)| n).sum::<i64>(), 1_500);
    let pages: i64 = pg
        .query_one("select sum(pageviews) from pages_hour", &[])
        .await
        .unwrap()
        .get(0);
    let views: i64 = pg
        .query_one("select count(*) from events where name = 'pageview'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pages, views);
    let uv: i64 = pg
        .query_one(
            &format!(
                "select visitors from unique_visitors('{}', now() - interval '3 hours', now())",
                sites[0]
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(uv > 0);

    // The data really is spread over the masters.
    let mut holding = 0;
    for addr in node_addrs {
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        if keys > 0 {
            holding += 1;
        }
    }
    assert!(holding >= 2, "keys on {holding} of 3 masters");

    // A replay on the cluster (its key scans visit every master) rebuilds
    // the same figures into v2 and removes v1 from all of them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
        .arg("replay")
        .env("REDIS_URL", &stack.redis_url)
        .env("TALLY_LOG", "warn")
        .output()
        .expect("run tally replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replayed: i64 = pg
        .query_one("select sum(pageviews) from pages_hour", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, pages);
    let mut conn = stack.conn.clone();
    assert_eq!(schema::store::active_keyspace(&mut conn).await.unwrap().version, 2);
    assert_eq!(
        schema::store::scan_keys(&mut conn, "tally:v1:*").await.unwrap(),
        Vec::<String>::new()
    );
    assert!(
        !schema::store::scan_keys(&mut conn, "tally:v2:*")
            .await
            .unwrap()
            .is_empty()
    );
    drop(pg);
    stack.stop().await;
}
