//! The gateway's short-lived result cache: a repeated statement is answered
//! from memory within the TTL, a different statement or different bound
//! parameters are not, and the cache can be turned off (as the other tests
//! run).

mod common;

use common::Stack;

const SITE: &str = "cache.test";

async fn scalar(c: &tokio_postgres::Client, sql: &str) -> i64 {
    let rows = c.simple_query(sql).await.expect("query");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .expect("one value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_statements_are_answered_from_the_cache_within_its_ttl() {
    // A TTL far longer than the test, so what is cached stays cached.
    let stack = Stack::start_with_gateway(&[SITE, "other.test"], |g| g.result_cache_ms = 600_000).await;
    let c = stack.pg().await;
    let t = common::yesterday_at(2);
    stack.post_pageviews(SITE, &["/"], t, "10.7.0").await;
    let sql = format!("select sum(pageviews) from traffic_day where site = '{SITE}'");
    assert_eq!(scalar(&c, &sql).await, 1);

    stack.post_pageviews(SITE, &["/x"], t + 60_000, "10.7.1").await;
    // The same statement: the cached answer.
    assert_eq!(scalar(&c, &sql).await, 1);
    // A different statement: computed now.
    let other = format!("select sum(pageviews) as total from traffic_day where site = '{SITE}'");
    assert_eq!(scalar(&c, &other).await, 2);

    // Bound parameters are part of the key.
    let stmt = c
        .prepare("select coalesce(sum(pageviews), 0) from traffic_day where site = $1")
        .await
        .expect("prepare");
    let mine: i64 = c.query_one(&stmt, &[&SITE]).await.expect("run").get(0);
    let theirs: i64 = c.query_one(&stmt, &[&"other.test"]).await.expect("run").get(0);
    assert_eq!((mine, theirs), (2, 0));
    stack.stop().await;
}
