//! Enrichment reaches the stream: browser, OS, device, country (from the
//! configured CDN header), props, exact revenue, and the derived source and
//! UTM fields; bots are answered 202 but not stored.

mod common;

use common::Stack;
use schema::event::{Category, Device, Revenue};
use schema::source::Channel;
use schema::{Event, Shard};

const CHROME: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

async fn stream_events(stack: &Stack, site: &str) -> Vec<Event> {
    let mut conn = stack.conn.clone();
    schema::entry::range(&mut conn, &Shard::of_site(site).stream_key(), "-", "+", 100_000)
        .await
        .expect("XRANGE")
        .into_iter()
        .flat_map(|entry| entry.events.expect("decodable entry"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriched_fields_are_stored_and_bots_dropped() {
    let stack = Stack::start(&["enrich.test"]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/event", stack.ingest_url);
    let resp = http
        .post(&url)
        .header("content-type", "text/plain")
        .header("user-agent", CHROME)
        .header("x-forwarded-for", "203.0.113.9")
        .header("cf-ipcountry", "de")
        .body(
            r#"{"n":"purchase","u":"https://enrich.test/checkout?utm_source=newsletter&utm_medium=email&utm_campaign=autumn",
                "r":"https://mail.google.com/","p":{"plan":"pro","seats":3},"$":{"amount":"49.90","currency":"eur"}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);

    let bot = http
        .post(&url)
        .header(
            "user-agent",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        )
        .body(r#"{"n":"pageview","u":"https://enrich.test/"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bot.status(), 202);
    assert_eq!(
        bot.headers().get("x-tally-dropped").and_then(|v| v.to_str().ok()),
        Some("bot")
    );

    let events = stream_events(&stack, "enrich.test").await;
    assert_eq!(events.len(), 1, "the bot's event is not stored");
    let e = &events[0];
    assert_eq!(
        (e.browser.as_str(), e.device, e.country.as_str()),
        ("Chrome", Device::Desktop, "DE")
    );
    assert!(e.os.starts_with("Windows"), "{}", e.os);
    assert_eq!(
        e.props,
        vec![
            ("plan".to_owned(), "pro".to_owned()),
            ("seats".to_owned(), "3".to_owned())
        ]
    );
    assert_eq!(
        e.revenue,
        Some(Revenue {
            amount: "49.9".into(),
            currency: "EUR".into()
        })
    );
    assert_eq!(e.category(), Category::Ecommerce);
    assert_eq!(e.path(), "/checkout");
    let (source, utm) = (e.source(), e.utm());
    assert_eq!((source.name.as_str(), source.channel), ("newsletter", Channel::Email));
    assert_eq!((utm.medium.as_str(), utm.campaign.as_str()), ("email", "autumn"));
    stack.stop().await;
}
