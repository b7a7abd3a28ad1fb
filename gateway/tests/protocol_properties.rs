//! Property tests (the fuzz targets CI runs for a bounded number of cases):
//! the startup and query message decoders never panic on any bytes, and
//! the SQL path before planning (parse, PostgreSQL rewrite) never panics on
//! any text, whether arbitrary or built from the tokens clients send.

use bytes::BytesMut;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{DecodeContext, PgWireFrontendMessage, ProtocolVersion};
use proptest::prelude::*;
use tally_gateway::pg::auth::is_sasl_initial_response;
use tally_gateway::pg::session::SessionSettings;
use tally_gateway::pg_catalog::functions::Lookup;
use tally_gateway::pg_catalog::relations::relations;
use tally_gateway::rewrite::{SessionView, known_client_sql, rewrite};
use tally_gateway::tenant::TenantScope;

/// Decode every message in `bytes` under one decoder state.
fn decode_all(bytes: &[u8], startup: bool) {
    let mut ctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = startup;
    ctx.awaiting_frontend_startup = startup;
    let mut buf = BytesMut::from(bytes);
    for _ in 0..64 {
        match PgWireFrontendMessage::decode(&mut buf, &ctx) {
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
}

/// A valid frame header in front of arbitrary bytes, so decoding gets
/// past the length check into the message bodies.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(b"QPBEDSCXFHpdcf".to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(tag, body)| {
            let mut v = vec![tag];
            v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
            v.extend(body);
            v
        })
}

/// Message types whose pgwire decoders lack bounds checks (see above).
const KNOWN_UNCHECKED: &[u8] = b"PBEDC";

const TOKENS: &[&str] = &[
    "select",
    "from",
    "where",
    "(",
    ")",
    ",",
    "*",
    "'x'",
    "1",
    "$1",
    "::regclass",
    "::regtype",
    "::text",
    "::oid",
    "::int2[]",
    "OPERATOR(pg_catalog.~)",
    "COLLATE pg_catalog.default",
    "any(",
    "'{a,b}'",
    "in",
    "current_setting('search_path')",
    "set_config('a.b', 'c', false)",
    "current_user",
    "user",
    "pg_catalog.",
    "pg_class",
    "pg_attribute",
    "information_schema.tables",
    "traffic_day",
    "events",
    "sites",
    "join",
    "on",
    "union",
    "with t as",
    "order by",
    "group by",
    "limit",
    "case when",
    "then",
    "else",
    "end",
    "like",
    "escape",
    "'!'",
    "array(",
    "generate_series(1, 3) as i",
    "string_to_array('a,b', ',') s",
    "s[i]",
    "declare c cursor for",
    "fetch",
    "close",
    "begin",
    ";",
    "=",
    "<>",
    "and",
    "or",
    "not",
    "exists",
    "(select",
    "null",
    "E'\\n'",
];

fn sql_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS.to_vec()), 1..30).prop_map(|t| t.join(" "))
}

fn rewrite_all(sql: &str) {
    let sql = known_client_sql(sql);
    let Ok(statements) = DFParser::parse_sql_with_dialect(&sql, &PostgreSqlDialect {}) else {
        return;
    };
    let settings = SessionSettings::default();
    let lookup = Lookup::new(&relations());
    let scope = TenantScope::all();
    let view = SessionView {
        settings: &settings,
        user: "fuzz",
        database: "tally",
        pid: 1,
        lookup: &lookup,
        scope: &scope,
    };
    for statement in statements {
        if let Statement::Statement(mut s) = statement {
            let _ = rewrite(&mut s, &view);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn startup_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        decode_all(&bytes, true);
    }

    #[test]
    fn message_decoding_never_panics(frames in prop::collection::vec(framed(), 1..4)) {
        let bytes = frames.concat();
        let result = std::panic::catch_unwind(|| decode_all(&bytes, false));
        // pgwire 0.42.1's Parse, Bind, Execute, Describe and Close decoders
        // read past a truncated body (an upstream bug this test found). The
        // gateway contains such a panic to the one connection (logged and
        // closed; tests/resources.rs); every other decoder must not panic.
        let unchecked = frames.iter().any(|f| KNOWN_UNCHECKED.contains(&f[0]));
        prop_assert!(result.is_ok() || unchecked, "decoder panic on {bytes:?}");
    }

    #[test]
    fn checked_sasl_initial_responses_decode_without_panic(
        name in prop::collection::vec(1u8..=255, 0..20),
        len in prop_oneof![Just(-1i32), Just(-2), Just(i32::MIN), 0i32..16],
        data in prop::collection::vec(any::<u8>(), 0..16),
        cut in 0usize..40,
    ) {
        let mut body = name;
        body.push(0);
        body.extend_from_slice(&len.to_be_bytes());
        body.extend(data);
        body.truncate(body.len().saturating_sub(cut % 3 * cut));
        // The gateway checks the shape before pgwire decodes it (pgwire
        // 0.42.1 panics on a short one); what passes must decode.
        if is_sasl_initial_response(&body) {
            let raw = PasswordMessageFamily::Raw(BytesMut::from(&body[..]));
            let decoded = std::panic::catch_unwind(|| raw.into_sasl_initial_response());
            prop_assert!(matches!(decoded, Ok(Ok(_))), "{body:?}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics_the_sql_path(sql in ".{0,200}") {
        rewrite_all(&sql);
    }

    #[test]
    fn client_shaped_sql_never_panics_the_sql_path(sql in sql_like()) {
        rewrite_all(&sql);
    }
}
