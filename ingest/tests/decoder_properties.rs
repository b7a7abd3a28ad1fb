//! Property tests: the request decoder never panics, whatever the bytes, and
//! every event it accepts satisfies the documented limits.

use proptest::prelude::*;
use tally_ingest::payload::{Limits, decode, validate};

const NOW: i64 = 1_795_000_000_000;

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,40}".prop_map(serde_json::Value::String),
        "https?://[a-z.]{1,20}(/[a-z0-9?=&#%]{0,30})?".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z$]{1,12}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like events, with arbitrary values in the known keys.
fn event_like() -> impl Strategy<Value = String> {
    let keys = prop::sample::select(vec![
        "n",
        "name",
        "u",
        "url",
        "d",
        "domain",
        "site",
        "r",
        "referrer",
        "ts",
        "timestamp",
        "p",
        "props",
        "$",
        "revenue",
    ]);
    prop::collection::btree_map(keys, json_value(), 0..8)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()).to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(raw) = decode(&bytes) {
            let _ = validate(raw, NOW, &Limits::default());
        }
    }

    #[test]
    fn accepted_events_respect_the_limits(body in event_like()) {
        let limits = Limits::default();
        if let Ok(e) = decode(body.as_bytes()).and_then(|r| validate(r, NOW, &limits)) {
            prop_assert!(!e.name.is_empty() && e.name.chars().count() <= limits.max_name_chars);
            prop_assert!(e.url.starts_with("http://") || e.url.starts_with("https://"));
            prop_assert!(e.path().starts_with('/'));
            prop_assert!(e.referrer.len() <= limits.max_referrer_bytes);
            prop_assert!(e.ts_ms >= NOW - limits.max_past_ms && e.ts_ms <= NOW + limits.max_future_ms);
            prop_assert!(e.props.len() <= limits.max_props);
            prop_assert!(schema::site::normalize_site(&e.site).as_deref() == Ok(e.site.as_str()));
        }
    }
}
