//! The event record as stored in a shard stream.
//!
//! Ingest validates and enriches an incoming event and appends it as one
//! stream entry; the streamer and the gateway's `events` table decode it.
//! Field names are one letter and every entry carries the same fields in the
//! same order: Redis stores the field names of a stream entry only once per
//! listpack node when they match the node's master entry, so a fixed field
//! set keeps the per-event footprint small. Decoding tolerates fields that are
//! missing (entries written by an older version) and ignores unknown ones.

use std::fmt;
use std::str::FromStr;

/// What kind of event this is, decided by ingest from the name.
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
    /// The category of an event name.
    pub fn of_name(name: &str) -> Category {
        match name {
            "pageview" => Category::Pageview,
            "engagement" => Category::Engagement,
            n if ECOMMERCE_EVENTS.contains(&n) => Category::Ecommerce,
            _ => Category::Custom,
        }
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

impl FromStr for Category {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pageview" => Ok(Category::Pageview),
            "engagement" => Ok(Category::Engagement),
            "ecommerce" => Ok(Category::Ecommerce),
            "custom" => Ok(Category::Custom),
            _ => Err(DecodeError::Invalid("c")),
        }
    }
}

/// One validated, enriched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Event time, milliseconds since the Unix epoch (client time if given and
    /// plausible, else the time ingest received it).
    pub ts_ms: i64,
    /// Site domain, e.g. `example.com`.
    pub site: String,
    /// `pageview` or a custom event name.
    pub name: String,
    pub category: Category,
    pub url: String,
    /// Path part of `url`, always starting with `/`.
    pub path: String,
    /// Referrer URL, empty when there was none.
    pub referrer: String,
    /// Cookieless visitor id: keyed hash of (daily salt, site, IP, user agent).
    pub visitor_id: u64,
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
    pub const CATEGORY: &str = "c";
    pub const URL: &str = "u";
    pub const PATH: &str = "p";
    pub const REFERRER: &str = "r";
    pub const VISITOR: &str = "v";
}

impl Event {
    /// The stream entry's field/value pairs, always in the same order.
    pub fn to_fields(&self) -> [(&'static str, String); 8] {
        [
            (field::TS, self.ts_ms.to_string()),
            (field::SITE, self.site.clone()),
            (field::NAME, self.name.clone()),
            (field::CATEGORY, self.category.as_str().to_owned()),
            (field::URL, self.url.clone()),
            (field::PATH, self.path.clone()),
            (field::REFERRER, self.referrer.clone()),
            (field::VISITOR, format!("{:016x}", self.visitor_id)),
        ]
    }

    /// Decode from the field/value pairs of a stream entry.
    pub fn from_fields<'a, I>(pairs: I) -> Result<Event, DecodeError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut ts = None;
        let mut site = None;
        let mut name = None;
        let mut category = None;
        let mut url = None;
        let mut path = None;
        let mut referrer = None;
        let mut visitor = None;
        for (k, v) in pairs {
            let text = |f: &'static str| {
                std::str::from_utf8(v)
                    .map(str::to_owned)
                    .map_err(|_| DecodeError::Invalid(f))
            };
            match k {
                b"t" => ts = Some(text(field::TS)?),
                b"s" => site = Some(text(field::SITE)?),
                b"n" => name = Some(text(field::NAME)?),
                b"c" => category = Some(text(field::CATEGORY)?),
                b"u" => url = Some(text(field::URL)?),
                b"p" => path = Some(text(field::PATH)?),
                b"r" => referrer = Some(text(field::REFERRER)?),
                b"v" => visitor = Some(text(field::VISITOR)?),
                _ => {}
            }
        }
        let ts_ms = ts
            .ok_or(DecodeError::Missing(field::TS))?
            .parse()
            .map_err(|_| DecodeError::Invalid(field::TS))?;
        let name = name.ok_or(DecodeError::Missing(field::NAME))?;
        let category = match category {
            Some(c) => c.parse()?,
            None => Category::of_name(&name),
        };
        let visitor_id = u64::from_str_radix(&visitor.ok_or(DecodeError::Missing(field::VISITOR))?, 16)
            .map_err(|_| DecodeError::Invalid(field::VISITOR))?;
        Ok(Event {
            ts_ms,
            site: site.ok_or(DecodeError::Missing(field::SITE))?,
            name,
            category,
            url: url.unwrap_or_default(),
            path: path.unwrap_or_else(|| "/".to_owned()),
            referrer: referrer.unwrap_or_default(),
            visitor_id,
        })
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
            category: Category::of_name("add_to_cart"),
            url: "https://example.com/shop?x=1".into(),
            path: "/shop".into(),
            referrer: String::new(),
            visitor_id: 0xdead_beef_0000_0001,
        }
    }

    #[test]
    fn round_trips_through_fields() {
        let e = sample();
        let fields = e.to_fields();
        let pairs = fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()));
        assert_eq!(Event::from_fields(pairs).unwrap(), e);
        assert_eq!(e.category, Category::Ecommerce);
    }

    #[test]
    fn reports_missing_and_invalid_fields() {
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", b"x"), (b"s", b"a.io"), (b"n", b"pageview"), (b"v", b"1")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Invalid("t")));
        let pairs: Vec<(&[u8], &[u8])> = vec![(b"t", b"1"), (b"n", b"pageview"), (b"v", b"1")];
        assert_eq!(Event::from_fields(pairs), Err(DecodeError::Missing("s")));
    }
}
