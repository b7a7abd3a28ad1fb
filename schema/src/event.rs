//! The event record as stored in a shard stream.
//!
//! Ingest validates and enriches an incoming event and appends its record to
//! a stream entry (one entry holds the records of the events written
//! together, see [`crate::entry`]); the streamer and the gateway decode it.
//! The record is kept small because the streams are the retained log:
//!
//! - one-letter field names, always the same fields in the same order;
//! - the event time relative to the entry id's milliseconds (ingest's append
//!   script sets both), a small integer for live events; a value of 10^11 or
//!   more in magnitude is an absolute time (older records, and entries whose
//!   id the script could not choose);
//! - the URL relative to the site when it is `https://<site>/...` (the
//!   common case), the full URL otherwise; nothing is lost either way;
//! - the visitor and session ids as signed 64-bit integers, which a listpack
//!   stores as integers rather than as 16 hex characters;
//! - the commonest values shortest: an empty name is a page view; browser,
//!   OS and device type share one field (`a`), the returning flag and the
//!   non-interactive mark another (`w`);
//! - what can be derived is not stored: the path, the category, the referrer
//!   source and the UTM fields are computed on decode (see [`crate::source`]),
//!   so a replay with improved rules re-derives them from the raw facts;
//! - as ingest stores it ([`Event::to_packed_fields`]), the nine text values
//!   between the time and the session packed into one field `e`, joined by
//!   U+001E, so that Redis parses, copies and logs two argument pairs per
//!   event (`v`, `e`) instead of ten. An event with U+001E in a value (a
//!   referrer is kept as sent) is stored with the twelve fields.
//!
//! Decoding tolerates missing fields, ignores unknown ones, and still reads
//! the earlier layout (separate `b`, `o`, `d` and `x` fields, absolute `t`,
//! the name always spelled out).

use crate::source::{self, Source, Utm};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// What kind of event this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    Pageview,
    Engagement,
    Ecommerce,
    Custom,
}

/// Event names that count as e-commerce (GA4's recommended names).
pub const ECOMMERCE_EVENTS: &[&str] = &[
    "add_to_cart",
    "remove_from_cart",
    "begin_checkout",
    "add_payment_info",
    "purchase",
    "refund",
];

impl Category {
    /// The category of an event: by name, and any event carrying revenue is
    /// e-commerce.
    pub fn of(name: &str, has_revenue: bool) -> Category {
        match name {
            "pageview" => Category::Pageview,
            "engagement" => Category::Engagement,
            n if has_revenue || ECOMMERCE_EVENTS.contains(&n) => Category::Ecommerce,
            _ => Category::Custom,
        }
    }

    /// The category of an event name without revenue.
    pub fn of_name(name: &str) -> Category {
        Category::of(name, false)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Category::Pageview => "pageview",
            Category::Engagement => "engagement",
            Category::Ecommerce => "ecommerce",
            Category::Custom => "custom",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Revenue of an event: an exact decimal amount in a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revenue {
    /// Decimal text, e.g. `12.99` (no exponent, at most 6 decimals).
    pub amount: String,
    /// ISO 4217 code, upper case.
    pub currency: String,
}

/// Device class, from the user agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Desktop,
    Mobile,
    Tablet,
    Other,
}

impl Device {
    pub const fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Tablet => "tablet",
            Device::Other => "other",
        }
    }
}

impl FromStr for Device {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "desktop" => Device::Desktop,
            "mobile" => Device::Mobile,
            "tablet" => Device::Tablet,
            "other" | "" => Device::Other,
            _ => return Err(DecodeError::Invalid(field::DEVICE)),
        })
    }
}

/// One validated, enriched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Site domain, e.g. `example.com`.
    pub site: String,
    /// `pageview`, `engagement` or a custom event name.
    pub name: String,
    /// Absolute page URL.
    pub url: String,
    /// Referrer URL, empty when there was none.
    pub referrer: String,
    /// Cookieless visitor id: keyed hash of (daily salt, site, IP, user agent).
    pub visitor_id: u64,
    pub browser: String,
    pub os: String,
    pub device: Device,
    /// ISO 3166-1 alpha-2 country code, empty when unknown.
    pub country: String,
    /// Custom properties, string to string, in the order sent.
    pub props: Vec<(String, String)>,
    pub revenue: Option<Revenue>,
    /// Whether the browser had visited the site before (the tracker's
    /// first-seen marker); `None` when the sender did not say.
    pub returning: Option<bool>,
    /// Whether a custom event is an interaction, which makes its visit not a
    /// bounce. Plausible's `interactive: false` (`i: false`) marks one that
    /// is not (an automatic or background event). Page views and engagement
    /// pings ignore it.
    pub interactive: bool,
    /// Session id assigned by ingest (30 minutes of inactivity end a
    /// session); 0 for none.
    pub session_id: u64,
}

/// Why a stream entry could not be decoded into an [`Event`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("stream entry lacks field {0:?}")]
    Missing(&'static str),
    #[error("stream entry has an invalid value in field {0:?}")]
    Invalid(&'static str),
}

mod field {
    pub const TS: &str = "t";
    pub const SITE: &str = "s";
    pub const NAME: &str = "n";
    pub const URL: &str = "u";
    pub const REFERRER: &str = "r";
    pub const VISITOR: &str = "v";
    /// browser, OS and device type, separated by U+001F.
    pub const AGENT: &str = "a";
    pub const COUNTRY: &str = "c";
    pub const PROPS: &str = "p";
    pub const REVENUE: &str = "$";
    /// `1` returning, `0` new, empty unknown; then `x` if not interactive.
    pub const FLAGS: &str = "w";
    pub const SESSION: &str = "i";
    /// The values of `s` to `w` but `v`, in that order, joined by U+001E:
    /// the packed record (see [`super::Event::to_packed_fields`]).
    pub const PACKED: &str = "e";
    // The earlier layout's separate fields (also b browser, o OS), still
    // decoded.
    pub const DEVICE: &str = "d";
    pub const INTERACTIVE: &str = "x";
}

/// Event times of at least this magnitude in the `t` field are absolute
/// (1973-03-03 onwards); smaller ones are relative to the entry id.
pub const ABSOLUTE_TS_MIN: i64 = 100_000_000_000;

/// The name stored as an empty string.
const PAGEVIEW: &str = "pageview";

/// A visit (session) ends after this long without events (Plausible's 30
/// minutes). Ingest applies it when it assigns session ids; the streamer
/// takes the ids as given.
pub const SESSION_TIMEOUT_MS: i64 = 30 * 60_000;

/// Number of fields of a stream record.
pub const RECORD_FIELDS: usize = 12;

/// Number of fields of a packed stream record (`t`, `v`, `e`, `i`).
pub const PACKED_FIELDS: usize = 4;

/// Separator of the values in a packed record's `e` (U+001E, the ASCII
/// record separator).
const PACK_SEPARATOR: char = '\u{1e}';

/// `s` split at each `sep`, as `str::split` does. `sep` is an ASCII byte,
/// so every piece ends on a character boundary. A plain byte loop: for the
/// short values of a record `str::split`'s searcher, which sets up a
/// `memchr` per value, was 3 % of the streamer's instructions.
fn split_ascii(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    debug_assert!(sep.is_ascii());
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.bytes().position(|b| b == sep) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Decode slots of the values packed into `e`, in their order (`s`, `n`,
/// `u`, `r`, `a`, `c`, `p`, `$`, `w`).
const PACKED_SLOTS: [usize; 9] = [1, 2, 3, 4, 15, 9, 10, 11, 12];

/// Split a URL into the part after `https://<site>`, if it has that prefix.
fn relative_to_site<'a>(url: &'a str, site: &str) -> Option<&'a str> {
    url.strip_prefix("https://")?
        .strip_prefix(site)
        .filter(|rest| rest.starts_with('/'))
}

impl Event {
    /// Path of the page (`/` at least), without query or fragment.
    pub fn path(&self) -> &str {
        // Byte scans for ASCII delimiters (the slices stay on character
        // boundaries): the streamer asks for the path of every event, and a
        // substring search set up per call was most of its cost.
        let url = self.url.as_str();
        let rest = match source::after_http_scheme(url).or_else(|| {
            let i = url.as_bytes().windows(3).position(|w| w == b"://")?;
            Some(&url[i + 3..])
        }) {
            Some(after) => after.bytes().position(|b| b == b'/').map_or("/", |j| &after[j..]),
            None => url,
        };
        let end = rest.bytes().position(|b| b == b'?' || b == b'#').unwrap_or(rest.len());
        if end == 0 { "/" } else { &rest[..end] }
    }

    /// The props as a JSON object (`{}` when there are none).
    pub fn props_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .props
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        serde_json::Value::Object(map).to_string()
    }

    pub fn category(&self) -> Category {
        Category::of(&self.name, self.revenue.is_some())
    }

    /// Where the visit came from (derived from referrer and UTM tags).
    pub fn source(&self) -> Source {
        self.source_and_utm().0
    }

    /// [`Event::source`] and [`Event::utm`] together, the page's query
    /// string parsed once for both.
    pub fn source_and_utm(&self) -> (Source, Utm) {
        let utm = self.utm();
        (source::classify(&self.site, &self.referrer, &utm, &self.url), utm)
    }

    /// UTM tags of the page URL.
    pub fn utm(&self) -> Utm {
        source::utm(&self.url)
    }

    /// The stream entry's field/value pairs, always in the same order.
    ///
    /// The session id is always the last pair, so that ingest's append
    /// script can put the session it assigned there.
    pub fn to_fields(&self) -> [(&'static str, String); RECORD_FIELDS] {
        let mut values = self.values().into_iter();
        Event::field_names().map(|n| (n, values.next().map(Cow::into_owned).unwrap_or_default()))
    }

    /// The record's values in the order of [`Event::field_names`], borrowed
    /// where the event holds them as stored, so that the packed record is
    /// written without a string per field.
    fn values(&self) -> [Cow<'_, str>; RECORD_FIELDS] {
        let url = relative_to_site(&self.url, &self.site).unwrap_or(&self.url);
        let props = if self.props.is_empty() {
            Cow::Borrowed("")
        } else {
            Cow::Owned(self.props_json())
        };
        let revenue = match &self.revenue {
            Some(r) => Cow::Owned(format!("{} {}", r.amount, r.currency)),
            None => Cow::Borrowed(""),
        };
        let flags = match (self.returning, self.interactive) {
            (Some(true), true) => "1",
            (Some(false), true) => "0",
            (None, true) => "",
            (Some(true), false) => "1x",
            (Some(false), false) => "0x",
            (None, false) => "x",
        };
        let name = if self.name == PAGEVIEW { "" } else { self.name.as_str() };
        // Numbers by `itoa` and the agent by hand: `to_string` and
        // `format!` cost ingest about 1,200 instructions per event here.
        let number = |n: i64| Cow::Owned(itoa::Buffer::new().format(n).to_owned());
        let device = self.device.as_str();
        let mut agent = String::with_capacity(self.browser.len() + self.os.len() + device.len() + 2);
        for (i, part) in [self.browser.as_str(), self.os.as_str(), device]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                agent.push('\u{1f}');
            }
            agent.push_str(part);
        }
        [
            number(self.ts_ms),
            Cow::Borrowed(self.site.as_str()),
            Cow::Borrowed(name),
            Cow::Borrowed(url),
            Cow::Borrowed(self.referrer.as_str()),
            number(self.visitor_id as i64),
            Cow::Owned(agent),
            Cow::Borrowed(self.country.as_str()),
            props,
            revenue,
            Cow::Borrowed(flags),
            number(self.session_id as i64),
        ]
    }

    /// The field names of [`Event::to_fields`], in its order (ingest's
    /// append script receives them once per call).
    pub fn field_names() -> [&'static str; RECORD_FIELDS] {
        [
            field::TS,
            field::SITE,
            field::NAME,
            field::URL,
            field::REFERRER,
            field::VISITOR,
            field::AGENT,
            field::COUNTRY,
            field::PROPS,
            field::REVENUE,
            field::FLAGS,
            field::SESSION,
        ]
    }

    /// The record as ingest stores it: four fields, `t`, the visitor `v`
    /// (an integer, which a listpack stores in 9 bytes rather than as 20
    /// characters), the other values of `s` to `w` of [`Event::to_fields`]
    /// joined by U+001E in `e`, then the session `i` (last, for the append
    /// script). Two `XADD` argument pairs instead of ten cost Redis less per
    /// event (`bench/append_cost.py`).
    /// `None` when a value contains U+001E (a referrer may: it is stored
    /// as sent); such an event is stored with [`Event::to_fields`].
    pub fn to_packed_fields(&self) -> Option<[(&'static str, String); PACKED_FIELDS]> {
        let [
            t,
            site,
            name,
            url,
            referrer,
            visitor,
            agent,
            country,
            props,
            revenue,
            flags,
            session,
        ] = self.values();
        let middle = [site, name, url, referrer, agent, country, props, revenue, flags];
        if middle.iter().any(|v| v.contains(PACK_SEPARATOR)) {
            return None;
        }
        let mut packed = String::with_capacity(middle.iter().map(|v| v.len() + 1).sum());
        for (i, v) in middle.iter().enumerate() {
            if i > 0 {
                packed.push(PACK_SEPARATOR);
            }
            packed.push_str(v);
        }
        Some([
            (field::TS, t.into_owned()),
            (field::VISITOR, visitor.into_owned()),
            (field::PACKED, packed),
            (field::SESSION, session.into_owned()),
        ])
    }

    /// The field names of [`Event::to_packed_fields`], in its order.
    pub fn packed_field_names() -> [&'static str; PACKED_FIELDS] {
        [field::TS, field::VISITOR, field::PACKED, field::SESSION]
    }

    /// Decode from the field/value pairs of a stream entry whose event time
    /// is absolute (as [`Event::to_fields`] writes it).
    pub fn from_fields<'a, I>(pairs: I) -> Result<Event, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        Event::from_entry(None, pairs)
    }

    /// Decode from the field/value pairs of the stream entry with id `id`
    /// (its milliseconds are the base of a relative event time).
    pub fn from_entry<'a, I>(id: Option<&str>, pairs: I) -> Result<Event, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        const SLOTS: usize = 16;
        let mut f: [Option<&str>; SLOTS] = [None; SLOTS];
        for (k, v) in pairs {
            let slot = match k {
                b"t" => 0,
                b"s" => 1,
                b"n" => 2,
                b"u" => 3,
                b"r" => 4,
                b"v" => 5,
                b"b" => 6,
                b"o" => 7,
                b"d" => 8,
                b"c" => 9,
                b"p" => 10,
                b"$" => 11,
                b"w" => 12,
                b"x" => 13,
                b"i" => 14,
                b"a" => 15,
                b"e" => {
                    let packed = std::str::from_utf8(v).map_err(|_| DecodeError::Invalid(field::PACKED))?;
                    let mut values = split_ascii(packed, PACK_SEPARATOR as u8);
                    for slot in PACKED_SLOTS {
                        f[slot] = Some(values.next().ok_or(DecodeError::Invalid(field::PACKED))?);
                    }
                    if values.next().is_some() {
                        return Err(DecodeError::Invalid(field::PACKED));
                    }
                    continue;
                }
                _ => continue,
            };
            f[slot] = Some(std::str::from_utf8(v).map_err(|_| DecodeError::Invalid("utf-8"))?);
        }
        let t: i64 = f[0]
            .ok_or(DecodeError::Missing(field::TS))?
            .parse()
            .map_err(|_| DecodeError::Invalid(field::TS))?;
        let ts_ms = if t.unsigned_abs() >= ABSOLUTE_TS_MIN as u64 {
            t
        } else {
            let (id_ms, _) = id
                .and_then(crate::keys::parse_stream_id)
                .ok_or(DecodeError::Invalid(field::TS))?;
            i64::try_from(id_ms)
                .ok()
                .and_then(|ms| ms.checked_add(t))
                .ok_or(DecodeError::Invalid(field::TS))?
        };
        let site = f[1].ok_or(DecodeError::Missing(field::SITE))?.to_owned();
        let name = match f[2].ok_or(DecodeError::Missing(field::NAME))? {
            "" => PAGEVIEW.to_owned(),
            n => n.to_owned(),
        };
        let url = match f[3].unwrap_or("/") {
            rel if rel.starts_with('/') => {
                // Not `format!`: this runs for every event read.
                let mut url = String::with_capacity(8 + site.len() + rel.len());
                url.push_str("https://");
                url.push_str(&site);
                url.push_str(rel);
                url
            }
            abs => abs.to_owned(),
        };
        let visitor_id = f[5]
            .ok_or(DecodeError::Missing(field::VISITOR))?
            .parse::<i64>()
            .map_err(|_| DecodeError::Invalid(field::VISITOR))? as u64;
        let (browser, os, device) = match f[15] {
            Some(agent) => {
                let mut parts = agent.splitn(3, '\u{1f}');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(b), Some(o), Some(d)) => (b, o, d),
                    _ => return Err(DecodeError::Invalid(field::AGENT)),
                }
            }
            None => (f[6].unwrap_or(""), f[7].unwrap_or(""), f[8].unwrap_or("")),
        };
        let props = match f[10].unwrap_or("") {
            "" => Vec::new(),
            json => match serde_json::from_str::<serde_json::Value>(json) {
                Ok(serde_json::Value::Object(m)) => m
                    .into_iter()
                    .map(|(k, v)| match v {
                        serde_json::Value::String(s) => (k, s),
                        other => (k, other.to_string()),
                    })
                    .collect(),
                _ => return Err(DecodeError::Invalid(field::PROPS)),
            },
        };
        let revenue = match f[11].unwrap_or("") {
            "" => None,
            text => {
                let (amount, currency) = text.split_once(' ').ok_or(DecodeError::Invalid(field::REVENUE))?;
                Some(Revenue {
                    amount: amount.to_owned(),
                    currency: currency.to_owned(),
                })
            }
        };
        let flags = f[12].unwrap_or("");
        let (returning, marked) = match flags.strip_suffix('x') {
            Some(r) => (r, true),
            None => (flags, false),
        };
        let returning = match returning {
            "" => None,
            "1" => Some(true),
            "0" => Some(false),
            _ => return Err(DecodeError::Invalid(field::FLAGS)),
        };
        // The earlier layout's separate mark; absent: interactive.
        let interactive = !marked
            && match f[13].unwrap_or("") {
                "" => true,
                "0" => false,
                _ => return Err(DecodeError::Invalid(field::INTERACTIVE)),
            };
        let session_id = match f[14].unwrap_or("") {
            "" => 0,
            text => text.parse::<i64>().map_err(|_| DecodeError::Invalid(field::SESSION))? as u64,
        };
        Ok(Event {
            ts_ms,
            site,
            name,
            url,
            referrer: f[4].unwrap_or("").to_owned(),
            visitor_id,
            browser: browser.to_owned(),
            os: os.to_owned(),
            device: device.parse()?,
            country: f[9].unwrap_or("").to_owned(),
            props,
            revenue,
            returning,
            interactive,
            session_id,
        })
    }

    /// A plain page view with no enrichment (tests, tools).
    pub fn pageview(ts_ms: i64, site: &str, path: &str, visitor_id: u64) -> Event {
        Event {
            ts_ms,
            site: site.to_owned(),
            name: "pageview".to_owned(),
            url: format!("https://{site}{path}"),
            referrer: String::new(),
            visitor_id,
            browser: String::new(),
            os: String::new(),
            device: Device::Other,
            country: String::new(),
            props: Vec::new(),
            revenue: None,
            returning: None,
            interactive: true,
            session_id: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            ts_ms: 1_795_000_000_000,
            site: "example.com".into(),
            name: "add_to_cart".into(),
            url: "https://example.com/shop?x=1".into(),
            referrer: "https://www.google.com/".into(),
            visitor_id: 0xdead_beef_0000_0001,
            browser: "Chrome".into(),
            os: "Windows 10".into(),
            device: Device::Desktop,
            country: "DE".into(),
            props: vec![("plan".into(), "pro".into()), ("a".into(), "1".into())],
            revenue: Some(Revenue {
                amount: "12.99".into(),
                currency: "EUR".into(),
            }),
            returning: Some(true),
            interactive: false,
            session_id: 0x7eed_0000_0000_0042,
        }
    }

    fn round_trip(e: &Event) -> Event {
        let fields = e.to_fields();
        Event::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))).unwrap()
    }

    #[test]
    fn round_trips_through_fields() {
        let mut e = sample();
        let back = round_trip(&e);
        // Props come back in key order (a JSON object); compare as sets.
        e.props.sort();
        let mut b = back.clone();
        b.props.sort();
        assert_eq!(b, e);
        assert_eq!(back.category(), Category::Ecommerce);
        assert_eq!(back.path(), "/shop");
        // The URL is stored relative to the site, and restored.
        assert_eq!(sample().to_fields()[3].1, "/shop?x=1");
        let mut other = sample();
        other.url = "http://www.example.com/".into();
        assert_eq!(other.to_fields()[3].1, "http://www.example.com/");
        assert_eq!(round_trip(&other).url, "http://www.example.com/");
    }

    #[test]
    fn packs_the_middle_values_into_one_field() {
        let mut e = sample();
        e.props.sort();
        let packed = e.to_packed_fields().expect("packable");
        let names: Vec<&str> = packed.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, Event::packed_field_names());
        assert_eq!(packed[0].1, "1795000000000");
        assert_eq!(packed[1].1, (0xdead_beef_0000_0001_u64 as i64).to_string());
        assert_eq!(packed[3].1, (0x7eed_0000_0000_0042_i64).to_string());
        let values: Vec<&str> = packed[2].1.split('\u{1e}').collect();
        assert_eq!(values.len(), 9);
        assert_eq!(
            &values[..4],
            ["example.com", "add_to_cart", "/shop?x=1", "https://www.google.com/"]
        );
        assert_eq!(values[4], "Chrome\u{1f}Windows 10\u{1f}desktop");
        // Relative time, as the append script stores it.
        let pairs = [
            ("t", "-5"),
            ("v", packed[1].1.as_str()),
            ("e", packed[2].1.as_str()),
            ("i", "42"),
        ];
        let mut back = Event::from_entry(
            Some("1795000000005-3"),
            pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )
        .unwrap();
        back.props.sort();
        assert_eq!(
            back,
            Event {
                session_id: 42,
                ..e.clone()
            }
        );
        // Too few or too many values are refused, not misread.
        for bad in ["a\u{1e}b", &format!("{}\u{1e}x", packed[2].1)] {
            let pairs = [("t", "1795000000000"), ("v", "1"), ("e", bad)];
            assert_eq!(
                Event::from_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))),
                Err(DecodeError::Invalid("e"))
            );
        }
        e.referrer = "https://a.test/\u{1e}".into();
        assert!(
            e.to_packed_fields().is_none(),
            "the separator in a value: stored unpacked"
        );
    }

    proptest::proptest! {
        #[test]
        fn split_ascii_splits_as_str_split(s in "[a\u{1e}\u{e9}\u{1f600}]{0,12}") {
            let want: Vec<&str> = s.split(PACK_SEPARATOR).collect();
            let got: Vec<&str> = split_ascii(&s, PACK_SEPARATOR as u8).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn derives_path_and_category() {
        let mut e = Event::pageview(0, "a.io", "/x/y?q=1#h", 1);
        assert_eq!(e.path(), "/x/y");
        for (url, path) in [
            ("https://a.io", "/"),
            ("https://a.io/", "/"),
            ("https://a.io?x=1", "/"),
            ("https://a.io#top", "/"),
            ("https://a.io/caf\u{e9}/\u{1f600}?q=\u{e9}", "/caf\u{e9}/\u{1f600}"),
            ("http://a.io:8080/p#x?y", "/p"),
            ("android-app://com.example/open?x", "/open"),
            ("https://a.io/p?next=http://b.io/q", "/p"),
            ("/relative/path?q", "/relative/path"),
            ("a.io/no-scheme", "a.io/no-scheme"),
            ("", "/"),
        ] {
            e.url = url.into();
            assert_eq!(e.path(), path, "{url:?}");
        }
        e.name = "signup".into();
        assert_eq!(e.category(), Category::Custom);
        e.revenue = Some(Revenue {
            amount: "1".into(),
            currency: "USD".into(),
        });
        assert_eq!(e.category(), Category::Ecommerce);
    }

    #[test]
    fn reports_missing_and_invalid_fields() {
        const T: &[u8] = b"1795000000000";
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", b"x"), (b"s", b"a.io"), (b"n", b"pageview"), (b"v", b"1")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("t")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", T), (b"n", b"pageview"), (b"v", b"1")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Missing("s")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", T), (b"s", b"a"), (b"n", b"x"), (b"v", b"1"), (b"p", b"[1]")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("p")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", T), (b"s", b"a"), (b"n", b"x"), (b"v", b"1"), (b"x", b"no")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("x")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", T), (b"s", b"a"), (b"n", b"x"), (b"v", b"1"), (b"a", b"Chrome")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("a")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", T), (b"s", b"a"), (b"n", b"x"), (b"v", b"1"), (b"w", b"2x")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("w")));
    }

    #[test]
    fn event_times_are_relative_to_the_entry_id() {
        let fields = sample().to_fields();
        let relative: Vec<(&str, String)> = fields
            .iter()
            .map(|(k, v)| (*k, if *k == "t" { "-1500".to_owned() } else { v.clone() }))
            .collect();
        let pairs = || relative.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        let e = Event::from_entry(Some("1795000001500-3"), pairs()).unwrap();
        assert_eq!(e.ts_ms, 1_795_000_000_000);
        assert_eq!(
            Event::from_fields(pairs()),
            Err(DecodeError::Invalid("t")),
            "no id, no base"
        );
        assert_eq!(Event::from_entry(Some("junk"), pairs()), Err(DecodeError::Invalid("t")));
        // Absolute times are taken as they are, with or without an id.
        let absolute = || fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        assert_eq!(
            Event::from_entry(Some("1-0"), absolute()).unwrap().ts_ms,
            1_795_000_000_000
        );
    }

    #[test]
    fn common_values_are_stored_short() {
        let view = Event::pageview(1_795_000_000_000, "a.io", "/", 1);
        let fields = view.to_fields();
        assert_eq!(fields[2], ("n", String::new()), "a page view's name is empty");
        assert_eq!(fields[6], ("a", "\u{1f}\u{1f}other".to_owned()));
        assert_eq!(fields[10], ("w", String::new()));
        assert_eq!(round_trip(&view), view);
        let names: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, Event::field_names());
        let s = sample().to_fields();
        assert_eq!(s[6], ("a", "Chrome\u{1f}Windows 10\u{1f}desktop".to_owned()));
        assert_eq!(s[10], ("w", "1x".to_owned()), "returning, not interactive");
    }

    #[test]
    fn records_of_the_earlier_layout_still_decode() {
        // Separate browser, OS, device and interactive fields, the name
        // spelled out, an absolute time; and before the interactive flag
        // existed, no x at all.
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"t", b"1795000000000"),
            (b"s", b"a"),
            (b"n", b"pageview"),
            (b"v", b"1"),
            (b"b", b"Firefox"),
            (b"o", b"Linux"),
            (b"d", b"mobile"),
            (b"w", b"0"),
            (b"x", b"0"),
            (b"i", b"9"),
        ];
        let e = Event::from_fields(pairs).unwrap();
        assert_eq!(
            (e.name.as_str(), e.browser.as_str(), e.os.as_str()),
            ("pageview", "Firefox", "Linux")
        );
        assert_eq!(
            (e.device, e.returning, e.interactive),
            (Device::Mobile, Some(false), false)
        );
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b"t", b"1795000000000"),
            (b"s", b"a"),
            (b"n", b"signup"),
            (b"v", b"1"),
            (b"i", b"9"),
        ];
        let e = Event::from_fields(pairs).unwrap();
        assert!(e.interactive);
        assert_eq!(e.session_id, 9);
    }
}
