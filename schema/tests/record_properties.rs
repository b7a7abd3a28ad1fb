//! Property tests of the stream record: decoding arbitrary field/value pairs
//! never panics, and every event survives encode/decode unchanged.

use proptest::prelude::*;
use tally_schema::Event;
use tally_schema::event::{ABSOLUTE_TS_MIN, Device, Revenue};

const SEPARATOR: char = '\u{1e}';

fn event() -> impl Strategy<Value = Event> {
    (
        ABSOLUTE_TS_MIN..4_102_444_800_000i64,
        "[a-z0-9-]{1,12}\\.[a-z]{2,5}",
        "[a-z_]{1,20}",
        "(/[a-zA-Z0-9._~-]{0,10}){1,3}(\\?[a-z]=[a-z0-9]{0,5})?",
        prop::bool::ANY,
        any::<u64>(),
        prop::collection::btree_map("[a-z]{1,8}", ".{0,12}", 0..4),
        prop::option::of(("[0-9]{1,6}(\\.[0-9]{1,6})?", "[A-Z]{3}")),
    )
        .prop_map(|(ts, site, name, path, abs, visitor, props, revenue)| {
            let mut e = Event::pageview(ts, &site, &path, visitor);
            e.name = name;
            if abs {
                e.url = format!("http://www.{site}{path}");
            }
            e.device = Device::Mobile;
            e.props = props.into_iter().collect();
            e.revenue = revenue.map(|(amount, currency)| Revenue { amount, currency });
            e
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn round_trip(e in event()) {
        let fields = e.to_fields();
        let back = Event::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap();
        prop_assert_eq!(back, e);
    }

    #[test]
    fn packed_round_trip(e in event(), referrer in ".{0,8}") {
        let mut e = e;
        e.referrer = referrer;
        match e.to_packed_fields() {
            Some(fields) => {
                let back = Event::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap();
                prop_assert_eq!(back, e);
            }
            None => prop_assert!(e.referrer.contains(SEPARATOR), "unpackable without the separator"),
        }
    }

    #[test]
    fn arbitrary_entries_never_panic(pairs in prop::collection::vec((prop::sample::select(vec!["t", "e", "s", "n", "u", "r", "v", "a", "b", "o", "d", "c", "p", "$", "w", "x", "i"]), prop::collection::vec(any::<u8>(), 0..40)), 0..16)) {
        let _ = Event::from_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
        let _ = Event::from_entry(Some("18446744073709551615-0"), pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())));
    }

    #[test]
    fn relative_times_round_trip(e in event(), back in -300_000_000i64..300_000_000, seq in 0u64..1000) {
        // As ingest's append script stores it: t relative to the id's ms.
        let id_ms = e.ts_ms - back;
        let fields: Vec<(&str, String)> = e
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k, if k == "t" { back.to_string() } else { v }))
            .collect();
        let id = format!("{id_ms}-{seq}");
        let decoded = Event::from_entry(Some(&id), fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap();
        prop_assert_eq!(decoded, e);
    }
}
