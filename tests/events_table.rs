//! The raw `events` table answers ad-hoc questions on the fly, as the
//! original design promises: abandoned carts (add_to_cart without purchase),
//! exact revenue, props, and filters pushed down to the streams.

mod common;

use common::Stack;
use tokio_postgres::SimpleQueryMessage;

const UA: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_carts_and_revenue_on_the_fly() {
    let stack = Stack::start(&["cart.test", "other.test"]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/event", stack.ingest_url);
    let send = |ip: &'static str, body: &'static str| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http
                .post(url)
                .header("user-agent", UA)
                .header("x-forwarded-for", ip)
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    // Visitor A buys, B abandons, C abandons on another site.
    send("198.51.100.1", r#"{"n":"pageview","u":"https://cart.test/p/1"}"#).await;
    send(
        "198.51.100.1",
        r#"{"n":"add_to_cart","u":"https://cart.test/p/1","p":{"product":"p1"}}"#,
    )
    .await;
    send(
        "198.51.100.1",
        r#"{"n":"purchase","u":"https://cart.test/checkout","$":{"amount":"10.50","currency":"EUR"}}"#,
    )
    .await;
    send(
        "198.51.100.2",
        r#"{"n":"pageview","u":"https://cart.test/p/2?utm_source=ads&utm_medium=cpc"}"#,
    )
    .await;
    send(
        "198.51.100.2",
        r#"{"n":"add_to_cart","u":"https://cart.test/p/2","p":{"product":"p2"}}"#,
    )
    .await;
    send("198.51.100.3", r#"{"n":"add_to_cart","u":"https://other.test/x"}"#).await;
    send(
        "198.51.100.4",
        r#"{"n":"purchase","u":"https://cart.test/checkout","$":{"amount":5,"currency":"USD"}}"#,
    )
    .await;

    let pg = stack.pg().await;
    let count: i64 = pg
        .query_one("select count(*) from events where site = $1", &[&"cart.test"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 6);

    // The design's example: carts without a purchase, per visitor.
    let abandoned = pg
        .simple_query(
            "select e.props from events e join ( \
                 select visitor_id from events \
                 where site = 'cart.test' and ts >= now() - interval '1 hour' \
                 group by visitor_id \
                 having sum(case when name = 'add_to_cart' then 1 else 0 end) > 0 \
                    and sum(case when name = 'purchase' then 1 else 0 end) = 0 \
             ) a on e.visitor_id = a.visitor_id \
             where e.site = 'cart.test' and e.name = 'add_to_cart'",
        )
        .await
        .unwrap();
    assert_eq!(rows(&abandoned), vec![vec![Some(r#"{"product":"p2"}"#.to_owned())]]);

    // Exact revenue per currency, as numeric.
    let revenue = pg
        .simple_query("select currency, sum(revenue) from events where category = 'ecommerce' and revenue is not null group by currency order by currency")
        .await
        .unwrap();
    assert_eq!(
        rows(&revenue),
        vec![
            vec![Some("EUR".to_owned()), Some("10.500000".to_owned())],
            vec![Some("USD".to_owned()), Some("5.000000".to_owned())],
        ]
    );

    // Derived columns and a time range that excludes everything.
    let paid = pg
        .simple_query(
            "select source, channel, utm_medium, path from events where site = 'cart.test' and channel = 'paid'",
        )
        .await
        .unwrap();
    assert_eq!(
        rows(&paid),
        vec![vec![
            Some("ads".into()),
            Some("paid".into()),
            Some("cpc".into()),
            Some("/p/2".into())
        ]]
    );
    let none: i64 = pg
        .query_one("select count(*) from events where ts < now() - interval '5 days'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, 0);
    let other: i64 = pg
        .query_one("select count(*) from events where site in ('other.test')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(other, 1);
    // Pushdown: one site reads one shard stream, no site reads all 16.
    let plan = |sql: &'static str| {
        let pg = &pg;
        async move {
            rows(&pg.simple_query(sql).await.unwrap())
                .into_iter()
                .flatten()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let one = plan("explain select count(*) from events where site = 'cart.test'").await;
    assert!(one.contains("StreamingTableExec: partition_sizes=1"), "{one}");
    let all = plan("explain select count(*) from events").await;
    assert!(all.contains("StreamingTableExec: partition_sizes=16"), "{all}");
    drop(pg);
    stack.stop().await;
}
