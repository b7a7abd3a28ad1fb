//! `GET /t.js`: the tracker script, minified, built into the binary.
//!
//! The source is `ingest/tracker/t.js`; `t.min.js` is its terser output
//! (checked to be current by the browser test). The script is compressed
//! once at first use and served gzipped to clients that accept it, with an
//! ETag so that repeat loads are a 304.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::sync::LazyLock;

/// The minified tracker.
pub const TRACKER_JS: &str = include_str!("../tracker/t.min.js");

struct Compiled {
    gzip: Vec<u8>,
    etag: HeaderValue,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail; an empty body would only disable gzip.
    let gzip = enc
        .write_all(TRACKER_JS.as_bytes())
        .and_then(|()| enc.finish())
        .unwrap_or_default();
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(TRACKER_JS, &mut h);
    let etag = HeaderValue::from_str(&format!("\"{:016x}\"", std::hash::Hasher::finish(&h)))
        .unwrap_or(HeaderValue::from_static("\"tally\""));
    Compiled { gzip, etag }
});

/// The gzipped tracker (what a browser downloads).
pub fn tracker_gzip() -> &'static [u8] {
    &COMPILED.gzip
}

/// Serve the tracker.
pub async fn serve(headers: HeaderMap) -> Response {
    let c = &*COMPILED;
    let mut resp = if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == c.etag.as_bytes())
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if !c.gzip.is_empty()
        && headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
    {
        let mut r = c.gzip.clone().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        TRACKER_JS.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::ETAG, c.etag.clone());
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_is_at_most_2_kb_gzipped() {
        let n = tracker_gzip().len();
        assert!(n > 500, "gzip produced {n} bytes");
        assert!(n <= 2048, "t.min.js is {n} bytes gzipped (budget 2048)");
    }

    #[test]
    fn the_queue_stub_and_attributes_are_in_the_build() {
        for needle in ["data-site", "data-api", "tally_ignore", "sendBeacon", "keepalive", ".q"] {
            assert!(TRACKER_JS.contains(needle), "{needle}");
        }
    }
}
