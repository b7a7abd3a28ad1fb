//! The pre-aggregated reports: their dimensions, their measures, and how one
//! measure of one dimension tuple is stored in a bucket.
//!
//! Every report is kept per site, grain and bucket as
//!
//! - one hash of counters, one field per (measure, dimension tuple):
//!   `<code>` for a report without dimensions (`pv`, `vi`), and
//!   `<code>\x1f<dim 1>\x1f<dim 2>...` otherwise (`pv\x1f/pricing`);
//! - one HyperLogLog of visitor ids per dimension tuple for the `visitors`
//!   measures (see [`crate::keys::Keyspace::unique_key`]).
//!
//! One hash per bucket keeps a report's bucket to one `HGETALL`, and the
//! dimension values stay readable in `redis-cli`. The unit separator (0x1F)
//! cannot occur in a value: [`tuple`] replaces it. The streamer writes these
//! fields and the gateway parses them with the same functions, so the two
//! cannot drift; the table catalog is generated from the same lists.

use crate::catalog::ColumnType;

/// Separator between the measure code and the dimension values of a field.
pub const SEP: char = '\u{1f}';

/// Hash field codes of the counter measures.
pub mod code {
    pub const PAGEVIEWS: &str = "pv";
    pub const EVENTS: &str = "ev";
    pub const VISITS: &str = "vi";
    pub const BOUNCES: &str = "bo";
    pub const DURATION: &str = "du";
    pub const ENTRIES: &str = "en";
    pub const EXITS: &str = "ex";
    /// Revenue in millionths of the currency unit (exact).
    pub const REVENUE: &str = "rv";
}

/// HyperLogLog variants of the traffic report (visitors by returning flag).
pub mod unique {
    pub const NEW: &str = "new";
    pub const RETURNING: &str = "ret";
}

/// How a measure is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureKind {
    /// A counter in the bucket hash under this code.
    Counter(&'static str),
    /// A HyperLogLog: per dimension tuple, or (for a report without
    /// dimensions) this variant suffix, empty for all visitors.
    Unique(&'static str),
}

/// One measure column of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measure {
    pub name: &'static str,
    pub kind: MeasureKind,
    pub ty: ColumnType,
    pub doc: &'static str,
}

/// One dimension column of a report (always text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimension {
    pub name: &'static str,
    pub doc: &'static str,
}

use code::*;

const fn counter(name: &'static str, code: &'static str, doc: &'static str) -> Measure {
    Measure {
        name,
        kind: MeasureKind::Counter(code),
        ty: ColumnType::Int8,
        doc,
    }
}

const fn uniques(name: &'static str, variant: &'static str, doc: &'static str) -> Measure {
    Measure {
        name,
        kind: MeasureKind::Unique(variant),
        ty: ColumnType::Int8,
        doc,
    }
}

const fn dim(name: &'static str, doc: &'static str) -> Dimension {
    Dimension { name, doc }
}

const VISITORS_DOC: &str =
    "unique visitors (HyperLogLog, 0.81% standard error); never sum across buckets, use unique_visitors()";
const VISITS_DOC: &str = "visits (sessions) that started in the bucket";

const TRAFFIC_DIMENSIONS: &[Dimension] = &[];
const PAGES_DIMENSIONS: &[Dimension] = &[dim("path", "URL path of the page")];
const SOURCES_DIMENSIONS: &[Dimension] = &[
    dim("channel", "direct, search, social, email, paid or referral"),
    dim(
        "source",
        "source name: a UTM source, Google, a referrer host, or Direct / None",
    ),
    dim("referrer_host", "referrer host without www., empty for none"),
    dim("utm_source", "utm_source of the landing page"),
    dim("utm_medium", "utm_medium of the landing page"),
    dim("utm_campaign", "utm_campaign of the landing page"),
];
const DEVICES_DIMENSIONS: &[Dimension] = &[
    dim("browser", "browser name"),
    dim("os", "operating system"),
    dim("device_type", "desktop, mobile, tablet or other"),
];
const LOCATIONS_DIMENSIONS: &[Dimension] = &[dim("country", "ISO 3166-1 alpha-2 country code, empty when unknown")];
const CONVERSIONS_DIMENSIONS: &[Dimension] = &[
    dim("name", "custom event name"),
    dim(
        "currency",
        "revenue currency (ISO 4217), empty for events without revenue",
    ),
];
const EVENTPROPS_DIMENSIONS: &[Dimension] = &[
    dim("name", "event name"),
    dim("property", "property name"),
    dim("value", "property value"),
];
const TRAFFIC_MEASURES: &[Measure] = &[
    counter("pageviews", PAGEVIEWS, "page views in the bucket"),
    counter(
        "events",
        EVENTS,
        "events in the bucket (page views and custom events; not engagement pings)",
    ),
    uniques("visitors", "", VISITORS_DOC),
    counter("visits", VISITS, VISITS_DOC),
    counter(
        "bounces",
        BOUNCES,
        "visits started in the bucket with one page view and no custom event",
    ),
    counter(
        "visit_duration",
        DURATION,
        "total duration in seconds (last event minus first) of the visits started in the bucket",
    ),
    uniques(
        "new_visitors",
        unique::NEW,
        "visitors whose browser had not visited the site before (tracker flag; HyperLogLog)",
    ),
    uniques(
        "returning_visitors",
        unique::RETURNING,
        "visitors whose browser had visited the site before (tracker flag; HyperLogLog)",
    ),
];
const PAGES_MEASURES: &[Measure] = &[
    counter("pageviews", PAGEVIEWS, "page views of the path"),
    uniques("visitors", "", VISITORS_DOC),
    counter(
        "entries",
        ENTRIES,
        "visits started in the bucket that landed on this path",
    ),
    counter(
        "exits",
        EXITS,
        "visits started in the bucket whose last page view was this path",
    ),
];
const SOURCES_MEASURES: &[Measure] = &[
    counter("visits", VISITS, VISITS_DOC),
    uniques(
        "visitors",
        "",
        "unique visitors of the visits started in the bucket from this source (HyperLogLog); \
         may over-count a visitor whose later event was processed before the session's first",
    ),
];
const DEVICES_MEASURES: &[Measure] = &[
    counter("visits", VISITS, VISITS_DOC),
    uniques("visitors", "", VISITORS_DOC),
];
const CONVERSIONS_MEASURES: &[Measure] = &[
    counter("events", EVENTS, "events of this name"),
    uniques("visitors", "", VISITORS_DOC),
    Measure {
        name: "revenue",
        kind: MeasureKind::Counter(REVENUE),
        ty: ColumnType::Numeric,
        doc: "revenue in the currency (exact decimal)",
    },
];
const EVENTPROPS_MEASURES: &[Measure] = &[counter("events", EVENTS, "events with this property value")];

/// The reports the streamer maintains, each served at three grains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Report {
    /// Site-level counters, visitors, sessions.
    Traffic,
    /// Per path.
    Pages,
    /// Per acquisition source of the session.
    Sources,
    /// Per browser, OS and device type.
    Devices,
    /// Per country.
    Locations,
    /// Per custom event name and revenue currency.
    Conversions,
    /// Per custom event name, property and value.
    EventProps,
}

impl Report {
    pub const ALL: [Report; 7] = [
        Report::Traffic,
        Report::Pages,
        Report::Sources,
        Report::Devices,
        Report::Locations,
        Report::Conversions,
        Report::EventProps,
    ];

    /// Table name prefix (`traffic` in `traffic_hour`).
    pub const fn name(self) -> &'static str {
        match self {
            Report::Traffic => "traffic",
            Report::Pages => "pages",
            Report::Sources => "sources",
            Report::Devices => "devices",
            Report::Locations => "locations",
            Report::Conversions => "conversions",
            Report::EventProps => "event_props",
        }
    }

    /// Segment of the report's key names: the table prefix, shortened
    /// where it is long.
    pub const fn code(self) -> &'static str {
        match self {
            Report::EventProps => "props",
            other => other.name(),
        }
    }

    pub const fn doc(self) -> &'static str {
        match self {
            Report::Traffic => "page views, events, visitors, visits, bounces and visit duration",
            Report::Pages => "per page path: page views, visitors, entries and exits",
            Report::Sources => "per acquisition source of the visit (first event of the session)",
            Report::Devices => "per browser, operating system and device type",
            Report::Locations => "per country",
            Report::Conversions => "per custom event name and revenue currency",
            Report::EventProps => "per custom event name, property and value",
        }
    }

    pub fn dimensions(self) -> &'static [Dimension] {
        match self {
            Report::Traffic => TRAFFIC_DIMENSIONS,
            Report::Pages => PAGES_DIMENSIONS,
            Report::Sources => SOURCES_DIMENSIONS,
            Report::Devices => DEVICES_DIMENSIONS,
            Report::Locations => LOCATIONS_DIMENSIONS,
            Report::Conversions => CONVERSIONS_DIMENSIONS,
            Report::EventProps => EVENTPROPS_DIMENSIONS,
        }
    }

    pub fn measures(self) -> &'static [Measure] {
        match self {
            Report::Traffic => TRAFFIC_MEASURES,
            Report::Pages => PAGES_MEASURES,
            Report::Sources => SOURCES_MEASURES,
            Report::Devices | Report::Locations => DEVICES_MEASURES,
            Report::Conversions => CONVERSIONS_MEASURES,
            Report::EventProps => EVENTPROPS_MEASURES,
        }
    }

    /// The report whose key segment is `code`.
    pub fn from_code(code: &str) -> Option<Report> {
        Report::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// The dimension tuple of values, as stored (values joined by [`SEP`]; a
/// separator inside a value becomes U+FFFD).
pub fn tuple<S: AsRef<str>>(values: &[S]) -> String {
    // Sized up front: the streamer builds a few tuples per event.
    let len = values.iter().map(|v| v.as_ref().len() + SEP.len_utf8()).sum();
    let mut out = String::with_capacity(len);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        let v = v.as_ref();
        if v.contains(SEP) {
            out.push_str(&v.replace(SEP, "\u{fffd}"));
        } else {
            out.push_str(v);
        }
    }
    out
}

/// Hash field of a counter for a dimension tuple (`tuple` is empty for a
/// report without dimensions).
pub fn field(code: &str, tuple: &str, has_dimensions: bool) -> String {
    if has_dimensions {
        let mut f = String::with_capacity(code.len() + SEP.len_utf8() + tuple.len());
        f.push_str(code);
        f.push(SEP);
        f.push_str(tuple);
        f
    } else {
        code.to_owned()
    }
}

/// Split a hash field into its code and dimension tuple.
pub fn parse_field(field: &str) -> (&str, &str) {
    field.split_once(SEP).unwrap_or((field, ""))
}

/// The values of a stored tuple, for a report with `arity` dimensions.
pub fn split_tuple(tuple: &str, arity: usize) -> Vec<&str> {
    if arity == 0 {
        return Vec::new();
    }
    let mut v: Vec<&str> = tuple.splitn(arity, SEP).collect();
    v.resize(arity, "");
    v
}

/// Revenue text (`12.99`) in millionths; `None` if it is not a plain decimal
/// with at most 6 decimals or does not fit.
pub fn revenue_micros(amount: &str) -> Option<i64> {
    let (neg, digits) = match amount.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, amount),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 6
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let v = int.checked_mul(1_000_000)?.checked_add(frac)?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let t = tuple(&["Chrome", "", "desk\u{1f}top"]);
        assert_eq!(t, "Chrome\u{1f}\u{1f}desk\u{fffd}top");
        let f = field(code::VISITS, &t, true);
        let (c, back) = parse_field(&f);
        assert_eq!(c, "vi");
        assert_eq!(split_tuple(back, 3), vec!["Chrome", "", "desk\u{fffd}top"]);
        assert_eq!(field(code::VISITS, "", false), "vi");
        assert_eq!(parse_field("vi"), ("vi", ""));
        assert_eq!(split_tuple("", 1), vec![""]);
        assert!(split_tuple("x", 0).is_empty());
    }

    #[test]
    fn revenue_is_exact() {
        assert_eq!(revenue_micros("12.99"), Some(12_990_000));
        assert_eq!(revenue_micros("0.000001"), Some(1));
        assert_eq!(revenue_micros("-3"), Some(-3_000_000));
        assert_eq!(revenue_micros(".5"), Some(500_000));
        assert_eq!(revenue_micros("1.0000001"), None);
        assert_eq!(revenue_micros("1e3"), None);
        assert_eq!(revenue_micros(""), None);
        assert_eq!(revenue_micros("99999999999999999"), None);
    }

    #[test]
    fn every_report_has_unique_codes_and_names() {
        for r in Report::ALL {
            assert_eq!(Report::from_code(r.code()), Some(r));
            let mut names: Vec<&str> = r.dimensions().iter().map(|d| d.name).collect();
            names.extend(r.measures().iter().map(|m| m.name));
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n, "{}", r.name());
        }
    }
}
