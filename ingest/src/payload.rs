//! Decoding and validation of incoming events.
//!
//! Pure functions from request bytes to a validated event (everything but the
//! visitor id, which needs the daily salt from Redis). Kept free of I/O so the
//! rules are unit- and property-tested directly. Field names follow
//! Plausible's tracker format (`n`, `u`, `d`, `r`) with long aliases, so
//! existing trackers and server-side senders can post as they are.

use crate::page_url::{self, PageUrls};
use schema::Event;
use schema::event::{Device, Revenue};
use schema::site::normalize_site;
use serde::Deserialize;

/// Documented input limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest event name, in characters.
    pub max_name_chars: usize,
    /// Longest url, in bytes.
    pub max_url_bytes: usize,
    /// Referrers longer than this are truncated (as Plausible does).
    pub max_referrer_bytes: usize,
    /// Oldest accepted client timestamp, relative to now.
    pub max_past_ms: i64,
    /// Furthest accepted client timestamp into the future (clock skew).
    pub max_future_ms: i64,
    /// Most custom properties per event.
    pub max_props: usize,
    /// Longest property name, in bytes.
    pub max_prop_key_bytes: usize,
    /// Longest property value, in bytes.
    pub max_prop_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_chars: 120,
            max_url_bytes: 2000,
            max_referrer_bytes: 2000,
            max_past_ms: 72 * 3_600_000,
            max_future_ms: 5 * 60_000,
            max_props: 30,
            max_prop_key_bytes: 300,
            max_prop_value_bytes: 2000,
        }
    }
}

/// The JSON body of `POST /api/event`.
#[derive(Debug, Deserialize)]
pub struct RawEvent {
    #[serde(alias = "d", alias = "domain")]
    pub site: Option<String>,
    #[serde(alias = "n")]
    pub name: Option<String>,
    #[serde(alias = "u")]
    pub url: Option<String>,
    #[serde(alias = "r")]
    pub referrer: Option<String>,
    /// Client time in milliseconds since the Unix epoch.
    #[serde(alias = "ts", alias = "timestamp")]
    pub timestamp_ms: Option<i64>,
    /// Custom properties: an object of strings (numbers and booleans are
    /// accepted and kept as their text).
    #[serde(alias = "p", alias = "m", alias = "meta")]
    pub props: Option<serde_json::Map<String, serde_json::Value>>,
    /// `{"amount": "12.99" | 12.99, "currency": "EUR"}`.
    #[serde(rename = "$", alias = "revenue")]
    pub revenue: Option<RawRevenue>,
    /// The tracker's returning-visitor flag: `true`/`1` when the browser had
    /// visited the site before, `false`/`0` on a first visit. (Not `w`:
    /// Plausible's older trackers send the screen width there.)
    #[serde(alias = "ret")]
    pub returning: Option<serde_json::Value>,
    /// Plausible's `interactive`: `false` marks a custom event that does not
    /// make its visit a non-bounce.
    #[serde(alias = "i")]
    pub interactive: Option<bool>,
    /// Engagement pings: milliseconds the page was visible.
    #[serde(alias = "e")]
    pub engaged_ms: Option<u64>,
    /// Engagement pings: deepest scroll, percent of the page.
    #[serde(alias = "sd")]
    pub scroll_depth: Option<u64>,
    /// Batch endpoint only: the address of the visitor a server forwards
    /// the event for. `POST /api/event` ignores it (the sender's own address
    /// counts there), as it ignores any field it does not know.
    pub ip: Option<String>,
    /// Batch endpoint only: the forwarded visitor's user agent.
    #[serde(alias = "userAgent")]
    pub user_agent: Option<String>,
}

/// Longest engagement time accepted (Plausible's: under 30 days).
pub const MAX_ENGAGED_MS: u64 = 30 * 86_400_000;

/// Revenue as sent.
#[derive(Debug, Deserialize)]
pub struct RawRevenue {
    pub amount: serde_json::Value,
    pub currency: String,
}

/// Why an event was refused; each becomes a 400 with this text as reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("body is not a JSON event: {0}")]
    Json(String),
    #[error("missing field {0:?}")]
    Missing(&'static str),
    #[error("event name is longer than {0} characters")]
    NameTooLong(usize),
    #[error("event name contains control characters")]
    NameInvalid,
    #[error("url is longer than {0} bytes")]
    UrlTooLong(usize),
    #[error("url is not an absolute http(s) URL: {0}")]
    UrlInvalid(String),
    #[error("invalid site: {0}")]
    Site(String),
    #[error("timestamp {ts_ms} is outside the accepted window ({window})")]
    Timestamp { ts_ms: i64, window: &'static str },
    #[error("too many props (at most {0})")]
    TooManyProps(usize),
    #[error("prop {0:?}: {1}")]
    Prop(String, String),
    #[error("revenue: {0}")]
    Revenue(String),
    #[error("returning must be true, false, 1 or 0")]
    Returning,
}

/// Decode a request body (JSON, whatever the content type).
pub fn decode(body: &[u8]) -> Result<RawEvent, Rejection> {
    serde_json::from_slice(body).map_err(|e| Rejection::Json(e.to_string()))
}

/// Validate and normalise a decoded event received at `now_ms`. The result
/// carries what the request body says; the caller adds the visitor id and
/// the enrichment from headers (user agent, country).
pub fn validate(raw: RawEvent, now_ms: i64, limits: &Limits) -> Result<Event, Rejection> {
    validate_with(raw, now_ms, limits, None)
}

/// [`validate`], with the page URL from `urls`' cache when given.
pub fn validate_with(raw: RawEvent, now_ms: i64, limits: &Limits, urls: Option<&PageUrls>) -> Result<Event, Rejection> {
    let name = raw.name.ok_or(Rejection::Missing("name"))?;
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err(Rejection::Missing("name"));
    }
    if name.chars().count() > limits.max_name_chars {
        return Err(Rejection::NameTooLong(limits.max_name_chars));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::NameInvalid);
    }

    let url_text = raw.url.ok_or(Rejection::Missing("url"))?;
    if url_text.len() > limits.max_url_bytes {
        return Err(Rejection::UrlTooLong(limits.max_url_bytes));
    }
    let page = match urls {
        Some(urls) => urls.parse(&url_text)?,
        None => page_url::parse(&url_text)?,
    };
    let site_raw = match raw.site {
        Some(s) if !s.trim().is_empty() => s,
        _ => page.host,
    };
    let site = normalize_site(&site_raw).map_err(|e| Rejection::Site(e.to_string()))?;

    let mut referrer = raw.referrer.unwrap_or_default();
    truncate_at_char_boundary(&mut referrer, limits.max_referrer_bytes);

    let ts_ms = match raw.timestamp_ms {
        None => now_ms,
        Some(ts) if ts < now_ms - limits.max_past_ms => {
            return Err(Rejection::Timestamp {
                ts_ms: ts,
                window: "more than 72 hours in the past",
            });
        }
        Some(ts) if ts > now_ms + limits.max_future_ms => {
            return Err(Rejection::Timestamp {
                ts_ms: ts,
                window: "more than 5 minutes in the future",
            });
        }
        Some(ts) => ts,
    };

    let mut props = validate_props(raw.props, limits)?;
    if name == "engagement" {
        // The tracker's engagement fields become properties, so the raw
        // `events` table shows them without a column per tracker feature.
        if let Some(ms) = raw.engaged_ms {
            props.push(("engaged_ms".into(), ms.min(MAX_ENGAGED_MS).to_string()));
        }
        if let Some(sd) = raw.scroll_depth {
            props.push(("scroll_depth".into(), sd.min(100).to_string()));
        }
    }
    let revenue = raw.revenue.map(validate_revenue).transpose()?;
    let returning = match raw.returning {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Bool(b)) => Some(b),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(1) => Some(true),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(0) => Some(false),
        Some(_) => return Err(Rejection::Returning),
    };

    Ok(Event {
        ts_ms,
        site,
        name,
        url: page.url,
        referrer,
        visitor_id: 0,
        browser: String::new(),
        os: String::new(),
        device: Device::Other,
        country: String::new(),
        props,
        revenue,
        returning,
        interactive: raw.interactive.unwrap_or(true),
        session_id: 0,
    })
}

fn validate_props(
    props: Option<serde_json::Map<String, serde_json::Value>>,
    limits: &Limits,
) -> Result<Vec<(String, String)>, Rejection> {
    let Some(props) = props else { return Ok(Vec::new()) };
    if props.len() > limits.max_props {
        return Err(Rejection::TooManyProps(limits.max_props));
    }
    props
        .into_iter()
        .map(|(k, v)| {
            if k.is_empty() || k.len() > limits.max_prop_key_bytes {
                return Err(Rejection::Prop(
                    k,
                    format!("name must be 1 to {} bytes", limits.max_prop_key_bytes),
                ));
            }
            let text = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                _ => return Err(Rejection::Prop(k, "value must be a string, number or boolean".into())),
            };
            if text.len() > limits.max_prop_value_bytes {
                return Err(Rejection::Prop(
                    k,
                    format!("value is longer than {} bytes", limits.max_prop_value_bytes),
                ));
            }
            Ok((k, text))
        })
        .collect()
}

/// Most decimals kept in a revenue amount (exactness: no rounding, refused
/// beyond this).
pub const MAX_REVENUE_DECIMALS: usize = 6;

fn validate_revenue(raw: RawRevenue) -> Result<Revenue, Rejection> {
    let text = match raw.amount {
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return Err(Rejection::Revenue("amount must be a decimal number or string".into())),
    };
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let digits = int.strip_prefix('-').unwrap_or(int);
    let valid = !digits.is_empty()
        && digits.len() <= 12
        && digits.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= MAX_REVENUE_DECIMALS
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !valid {
        return Err(Rejection::Revenue(format!(
            "amount {text:?} is not a decimal with at most 12 integer digits and {MAX_REVENUE_DECIMALS} decimals"
        )));
    }
    let currency = raw.currency.trim().to_ascii_uppercase();
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Rejection::Revenue(format!(
            "currency {:?} is not an ISO 4217 code",
            raw.currency
        )));
    }
    let amount = if frac.trim_end_matches('0').is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{}", frac.trim_end_matches('0'))
    };
    Ok(Revenue { amount, currency })
}

fn truncate_at_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schema::event::Category;

    const NOW: i64 = 1_795_000_000_000;

    fn check(body: &str) -> Result<Event, Rejection> {
        validate(decode(body.as_bytes())?, NOW, &Limits::default())
    }

    #[test]
    fn accepts_tracker_and_long_forms() {
        let e = check(
            r#"{"n":"pageview","u":"https://www.Example.com/a/b?q=1#x","d":"example.com","r":"https://google.com/"}"#,
        )
        .unwrap();
        assert_eq!(e.site, "example.com");
        assert_eq!(e.path(), "/a/b");
        assert_eq!(e.ts_ms, NOW);
        assert_eq!(e.category(), Category::Pageview);
        let e = check(&format!(
            r#"{{"name":"purchase","url":"http://shop.io","domain":"shop.io","timestamp":{}}}"#,
            NOW - 1000
        ))
        .unwrap();
        assert_eq!(
            (e.path(), e.ts_ms, e.category()),
            ("/", NOW - 1000, Category::Ecommerce)
        );
    }

    #[test]
    fn reads_plausibles_interactive_flag() {
        let e = check(r#"{"n":"autoplay","u":"https://a.io/v","i":false}"#).unwrap();
        assert!(!e.interactive);
        let e = check(r#"{"name":"autoplay","url":"https://a.io/v","interactive":true}"#).unwrap();
        assert!(e.interactive);
        assert!(
            check(r#"{"n":"signup","u":"https://a.io/"}"#).unwrap().interactive,
            "default"
        );
        assert!(matches!(
            check(r#"{"n":"x","u":"https://a.io/","i":"no"}"#),
            Err(Rejection::Json(_))
        ));
    }

    #[test]
    fn derives_site_from_url_host() {
        let e = check(r#"{"n":"pageview","u":"https://www.blog.dev/x"}"#).unwrap();
        assert_eq!(e.site, "blog.dev");
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert_eq!(check(r#"{"u":"https://a.io"}"#), Err(Rejection::Missing("name")));
        assert_eq!(
            check(r#"{"n":"  ","u":"https://a.io"}"#),
            Err(Rejection::Missing("name"))
        );
        assert_eq!(check(r#"{"n":"x"}"#), Err(Rejection::Missing("url")));
        assert!(matches!(
            check(r#"{"n":"x","u":"ftp://a.io/"}"#),
            Err(Rejection::UrlInvalid(_))
        ));
        assert!(matches!(
            check(r#"{"n":"x","u":"/relative"}"#),
            Err(Rejection::UrlInvalid(_))
        ));
        assert!(matches!(
            check(r#"{"n":"x","u":"https://a.io","d":"a:b"}"#),
            Err(Rejection::Site(_))
        ));
        assert!(matches!(check("not json"), Err(Rejection::Json(_))));
        let long = "e".repeat(121);
        assert_eq!(
            check(&format!(r#"{{"n":"{long}","u":"https://a.io"}}"#)),
            Err(Rejection::NameTooLong(120))
        );
        let long_url = format!("https://a.io/{}", "p".repeat(2000));
        assert_eq!(
            check(&format!(r#"{{"n":"x","u":"{long_url}"}}"#)),
            Err(Rejection::UrlTooLong(2000))
        );
    }

    #[test]
    fn enforces_the_timestamp_window() {
        let at = |ts: i64| check(&format!(r#"{{"n":"x","u":"https://a.io","ts":{ts}}}"#));
        assert!(at(NOW - 72 * 3_600_000).is_ok());
        assert!(matches!(at(NOW - 72 * 3_600_000 - 1), Err(Rejection::Timestamp { .. })));
        assert!(at(NOW + 300_000).is_ok());
        assert!(matches!(at(NOW + 300_001), Err(Rejection::Timestamp { .. })));
    }

    #[test]
    fn truncates_long_referrers_on_a_char_boundary() {
        let r = "é".repeat(1500); // 3000 bytes
        let e = check(&format!(r#"{{"n":"x","u":"https://a.io","r":"{r}"}}"#)).unwrap();
        assert_eq!(e.referrer.len(), 2000);
    }

    #[test]
    fn never_panics_on_arbitrary_bytes() {
        // A cheap deterministic fuzz: every prefix and byte flip of a valid body.
        let body = br#"{"n":"pageview","u":"https://a.io/x","d":"a.io","r":"","ts":1795000000000}"#;
        for i in 0..body.len() {
            let _ = decode(&body[..i]).map(|r| validate(r, NOW, &Limits::default()));
            for flip in [0x00u8, 0x22, 0x5c, 0xff, b'9'] {
                let mut b = body.to_vec();
                b[i] = flip;
                let _ = decode(&b).map(|r| validate(r, NOW, &Limits::default()));
            }
        }
    }
}
