//! Where a visit came from: referrer classification and UTM tags.
//!
//! Derived on decode from the raw referrer and page URL rather than stored,
//! so the rules can improve and a replay of the streams applies them to
//! history. Channels follow the usual analytics grouping (GA4's default
//! channel groups, simplified): paid (UTM medium or click id), email, search,
//! social, referral, direct. Self-referrals (the site itself or its
//! subdomains) count as direct.

use std::borrow::Cow;
use std::fmt;

/// UTM tags of a page URL (empty strings when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Utm {
    pub source: String,
    pub medium: String,
    pub campaign: String,
    pub term: String,
    pub content: String,
}

/// The channel group of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Direct,
    Search,
    Social,
    Email,
    Paid,
    Referral,
}

impl Channel {
    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Direct => "direct",
            Channel::Search => "search",
            Channel::Social => "social",
            Channel::Email => "email",
            Channel::Paid => "paid",
            Channel::Referral => "referral",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The classified source of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Display name: `Google`, `Facebook`, a UTM source, a referrer host, or
    /// `Direct / None`.
    pub name: String,
    /// Referrer host without `www.`, empty for none.
    pub referrer_host: String,
    pub channel: Channel,
}

/// Name for `Direct / None` (Plausible's spelling).
pub const DIRECT: &str = "Direct / None";

const SEARCH: &[(&str, &str)] = &[
    ("google.", "Google"),
    ("bing.com", "Bing"),
    ("duckduckgo.com", "DuckDuckGo"),
    ("search.yahoo.", "Yahoo!"),
    ("yandex.", "Yandex"),
    ("baidu.com", "Baidu"),
    ("ecosia.org", "Ecosia"),
    ("search.brave.com", "Brave"),
    ("startpage.com", "Startpage"),
    ("qwant.com", "Qwant"),
];

const SOCIAL: &[(&str, &str)] = &[
    ("facebook.com", "Facebook"),
    ("m.facebook.com", "Facebook"),
    ("l.facebook.com", "Facebook"),
    ("t.co", "Twitter"),
    ("twitter.com", "Twitter"),
    ("x.com", "Twitter"),
    ("linkedin.com", "LinkedIn"),
    ("lnkd.in", "LinkedIn"),
    ("reddit.com", "Reddit"),
    ("old.reddit.com", "Reddit"),
    ("news.ycombinator.com", "Hacker News"),
    ("instagram.com", "Instagram"),
    ("youtube.com", "YouTube"),
    ("pinterest.com", "Pinterest"),
    ("tiktok.com", "TikTok"),
    ("mastodon.social", "Mastodon"),
    ("bsky.app", "Bluesky"),
];

const EMAIL: &[(&str, &str)] = &[
    ("mail.google.com", "Gmail"),
    ("outlook.live.com", "Outlook.com"),
    ("mail.yahoo.com", "Yahoo! Mail"),
    ("mail.proton.me", "Proton Mail"),
];

/// Query parameters that mark a paid click (Google, Microsoft, Meta, X).
const CLICK_IDS: &[&str] = &["gclid", "gbraid", "wbraid", "msclkid", "fbclid", "twclid", "dclid"];

const PAID_MEDIUMS: &[&str] = &[
    "cpc",
    "ppc",
    "paid",
    "paidsearch",
    "paid_search",
    "paid_social",
    "display",
    "cpm",
    "cpv",
];
const EMAIL_MEDIUMS: &[&str] = &["email", "e-mail", "e_mail", "newsletter"];

/// The decoded query pairs of a URL as ingest stores it (serialized by
/// `url::Url`, so the query is whatever follows the first `?` up to a `#`):
/// read without parsing the whole URL again, which was most of the cost of
/// a source tuple in the streamer.
fn query_pairs(url: &str) -> Vec<(String, String)> {
    let before_fragment = url.split_once('#').map_or(url, |(head, _)| head);
    let Some((_, query)) = before_fragment.split_once('?') else {
        return Vec::new();
    };
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// UTM tags of a URL. `ref` and `source` stand in for `utm_source`, as in
/// Plausible.
pub fn utm(url: &str) -> Utm {
    let mut u = Utm::default();
    let mut fallback = String::new();
    for (k, v) in query_pairs(url) {
        match k.as_str() {
            "utm_source" => u.source = v,
            "utm_medium" => u.medium = v,
            "utm_campaign" => u.campaign = v,
            "utm_term" => u.term = v,
            "utm_content" => u.content = v,
            "ref" | "source" if fallback.is_empty() => fallback = v,
            _ => {}
        }
    }
    if u.source.is_empty() {
        u.source = fallback;
    }
    u
}

/// Host of a URL, lower case, without a leading `www.`.
pub fn host_of(url: &str) -> String {
    let host: Cow<str> = match plain_host(url) {
        Some(host) => Cow::Borrowed(host),
        None => match url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        {
            Some(host) => Cow::Owned(host),
            None => return String::new(),
        },
    };
    match host.strip_prefix("www.") {
        Some(rest) => rest.to_owned(),
        None => host.into_owned(),
    }
}

/// What follows `https://` or `http://` at the start of `url`; None for
/// any other scheme or none. Stored URLs are nearly all http(s), so callers
/// try this before a general scan for `://` or a full parse.
pub(crate) fn after_http_scheme(url: &str) -> Option<&str> {
    url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))
}

/// The host of an `http(s)://` URL whose authority is a plain lower-case
/// domain name, optionally with a port, read off the text; `None` for
/// anything else (user info, IP addresses, upper case, percent escapes,
/// punycode, odd ports), which the URL parser handles. The streamer
/// classifies the referrer of every visit it sees start, and the full
/// parse was 2 % of its instructions; for the URLs taken here the parser's
/// host is the same text (property tests check this against the parser).
fn plain_host(url: &str) -> Option<&str> {
    let rest = after_http_scheme(url)?;
    let end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
    let (host, port) = match rest[..end].split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (&rest[..end], None),
    };
    if let Some(port) = port {
        let digits = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !digits || port.parse::<u32>().ok()? > 65_535 {
            return None;
        }
    }
    let last = host.rsplit('.').next()?;
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !host.starts_with('.')
        && !host.ends_with('.')
        // Byte windows rather than `str::contains`, whose substring
        // searcher costs ingest about 400 instructions per call to set up.
        && !host.as_bytes().windows(2).any(|w| w == b"..")
        && !host.as_bytes().windows(4).any(|w| w == b"xn--")
        // A last label that is a number makes the host an IPv4 address.
        && !last.bytes().all(|b| b.is_ascii_digit())
        && !last.starts_with("0x");
    plain.then_some(host)
}

/// The name of the first entry of `table` that `host` matches: a pattern
/// ending in `.` matches a label sequence anywhere (`google.` matches
/// `www.google.co.uk`), any other pattern the host or a subdomain of it.
/// Called for every event read, so it allocates nothing.
fn lookup(host: &str, table: &[(&str, &'static str)]) -> Option<&'static str> {
    if host.is_empty() {
        return None;
    }
    let at_label = |i: usize| i == 0 || host.as_bytes()[i - 1] == b'.';
    table.iter().find_map(|(pattern, name)| {
        let hit = if pattern.ends_with('.') {
            host.match_indices(pattern).any(|(i, _)| at_label(i))
        } else {
            host.strip_suffix(pattern)
                .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
        };
        hit.then_some(*name)
    })
}

/// Classify an event's source.
pub fn classify(site: &str, referrer: &str, utm: &Utm, url: &str) -> Source {
    let mut host = host_of(referrer);
    let subdomain = host.strip_suffix(site).is_some_and(|rest| rest.ends_with('.'));
    if host == site || subdomain {
        host.clear(); // self-referral: navigation within the site
    }
    let medium = utm.medium.to_ascii_lowercase();
    let paid_click = query_pairs(url).iter().any(|(k, _)| CLICK_IDS.contains(&k.as_str()));
    // Webmail first: mail.google.com is not Google search.
    let known = lookup(&host, EMAIL)
        .map(|n| (n, Channel::Email))
        .or_else(|| lookup(&host, SEARCH).map(|n| (n, Channel::Search)))
        .or_else(|| lookup(&host, SOCIAL).map(|n| (n, Channel::Social)));
    let channel = if paid_click || PAID_MEDIUMS.contains(&medium.as_str()) {
        Channel::Paid
    } else if EMAIL_MEDIUMS.contains(&medium.as_str()) {
        Channel::Email
    } else if let Some((_, ch)) = known {
        ch
    } else if !host.is_empty() || !utm.source.is_empty() {
        Channel::Referral
    } else {
        Channel::Direct
    };
    let name = if !utm.source.is_empty() {
        utm.source.clone()
    } else if let Some((n, _)) = known {
        n.to_owned()
    } else if !host.is_empty() {
        host.clone()
    } else {
        DIRECT.to_owned()
    };
    Source {
        name,
        referrer_host: host,
        channel,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_pairs_of_stored_urls_are_those_url_parses() {
        for sent in [
            "https://a.io/p?utm_source=news+letter&utm_medium=e%2Dmail&x",
            "https://a.io/p?utm_source=caf\u{e9} bar&ref=a%26b#frag?utm_medium=no",
            "https://a.io/p#only?utm_source=fragment",
            "https://a.io/?",
            "https://a.io/p?a=1&a=2&=3&b=",
            "http://user:pw@a.io:8080/x?y=%zz&z=%41",
            "https://a.io/p",
        ] {
            // Ingest stores the URL as url::Url serializes it.
            let stored = url::Url::parse(sent).unwrap();
            let want: Vec<(String, String)> = stored
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(super::query_pairs(stored.as_str()), want, "{sent}");
        }
    }

    fn parsed_host(url: &str) -> Option<String> {
        url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
    }

    #[test]
    fn plain_hosts_are_those_the_parser_finds() {
        for (url, want) in [
            ("https://www.google.com/search?q=1", Some("www.google.com")),
            ("http://news.ycombinator.com", Some("news.ycombinator.com")),
            ("https://a-b.example.org:8443/x", Some("a-b.example.org")),
            ("https://t.co?x", Some("t.co")),
            ("https://t.co#x", Some("t.co")),
            ("https://t.co\\x", Some("t.co")),
            ("https://Google.com/", None),
            ("https://user@google.com/", None),
            ("https://127.0.0.1/", None),
            ("https://a.0x7f/", None),
            ("https://xn--bcher-kva.example/", None),
            ("https://a.com:99999/", None),
            ("https://a.com:/", None),
            ("https://a..com/", None),
            ("android-app://com.google.android.gm/", None),
            ("", None),
        ] {
            assert_eq!(plain_host(url), want, "{url}");
            if let Some(host) = want {
                assert_eq!(parsed_host(url).as_deref(), Some(host), "{url}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn host_of_agrees_with_the_url_parser(
            url in "(https?://|HTTPS://|ftp://)?(www\\.)?[a-zA-Z0-9.:@%x\\-\\[\\]]{0,24}([/?#\\\\][ -~]{0,8})?"
        ) {
            let want = parsed_host(&url)
                .map(|h| h.strip_prefix("www.").map(str::to_owned).unwrap_or(h))
                .unwrap_or_default();
            proptest::prop_assert_eq!(host_of(&url), want);
        }

        #[test]
        fn plain_hosts_agree_with_the_url_parser(
            url in "https?://[a-z0-9.x-]{1,16}(:[0-9]{0,6})?([/?#\\\\][a-z]{0,4})?"
        ) {
            if let Some(host) = plain_host(&url) {
                proptest::prop_assert_eq!(Some(host.to_owned()), parsed_host(&url));
            }
        }
    }

    #[test]
    fn lookup_matches_whole_labels() {
        let table = [("google.", "Google"), ("t.co", "Twitter")];
        for (host, want) in [
            ("google.com", Some("Google")),
            ("www.google.co.uk", Some("Google")),
            ("notgoogle.com", None),
            ("t.co", Some("Twitter")),
            ("x.t.co", Some("Twitter")),
            ("bat.co", None),
            ("", None),
        ] {
            assert_eq!(super::lookup(host, &table), want, "{host}");
        }
    }

    use super::*;

    fn c(referrer: &str, url: &str) -> Source {
        classify("shop.io", referrer, &utm(url), url)
    }

    #[test]
    fn classifies_channels() {
        let s = c("https://www.google.com/", "https://shop.io/");
        assert_eq!(
            (s.name.as_str(), s.channel, s.referrer_host.as_str()),
            ("Google", Channel::Search, "google.com")
        );
        assert_eq!(
            c("https://www.google.co.uk/search", "https://shop.io/").channel,
            Channel::Search
        );
        assert_eq!(c("https://t.co/abc", "https://shop.io/").name, "Twitter");
        assert_eq!(
            c("https://news.ycombinator.com/item?id=1", "https://shop.io/").channel,
            Channel::Social
        );
        assert_eq!(
            c("https://mail.google.com/", "https://shop.io/").channel,
            Channel::Email
        );
        assert_eq!(
            c("https://blog.example.org/post", "https://shop.io/").channel,
            Channel::Referral
        );
        assert_eq!(
            c("https://blog.example.org/post", "https://shop.io/").name,
            "blog.example.org"
        );
        let d = c("", "https://shop.io/");
        assert_eq!((d.name.as_str(), d.channel), (DIRECT, Channel::Direct));
        // Navigation within the site is not a referral.
        assert_eq!(c("https://shop.io/cart", "https://shop.io/").channel, Channel::Direct);
        assert_eq!(
            c("https://www.shop.io/cart", "https://shop.io/").channel,
            Channel::Direct
        );
        assert_eq!(c("https://blog.shop.io/x", "https://shop.io/").channel, Channel::Direct);
        // A host that merely ends in the site's name is another site.
        let other = c("https://notshop.io/x", "https://shop.io/");
        assert_eq!((other.channel, other.name.as_str()), (Channel::Referral, "notshop.io"));
    }

    #[test]
    fn utm_and_click_ids_win() {
        let s = c("https://www.google.com/", "https://shop.io/?gclid=abc");
        assert_eq!((s.name.as_str(), s.channel), ("Google", Channel::Paid));
        let s = c(
            "",
            "https://shop.io/?utm_source=newsletter&utm_medium=email&utm_campaign=autumn",
        );
        assert_eq!((s.name.as_str(), s.channel), ("newsletter", Channel::Email));
        let s = c(
            "https://www.facebook.com/",
            "https://shop.io/?utm_source=fb&utm_medium=cpc",
        );
        assert_eq!(s.channel, Channel::Paid);
        assert_eq!(utm("https://shop.io/?ref=producthunt").source, "producthunt");
        let u = utm("https://shop.io/?utm_source=a&utm_medium=b&utm_campaign=c&utm_term=d&utm_content=e");
        assert_eq!(
            (u.source, u.medium, u.campaign, u.term, u.content),
            ("a".into(), "b".into(), "c".into(), "d".into(), "e".into())
        );
        assert_eq!(utm("not a url"), Utm::default());
    }
}
