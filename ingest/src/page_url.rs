//! The page URL of an event: parsed and normalised by the `url` crate, with
//! a bounded cache of recent parses.
//!
//! The parse was the largest single item of ingest's own work: about 4,000
//! instructions per event, 8 % of a single event's and 18 % of a batch
//! event's (`INSTRUCTIONS=1 bench/ingest.sh`). Pages repeat (a site's
//! visitors land on the same few pages), so the text of a URL seen before
//! maps to its normalised form and host from a cache. A parse depends only
//! on the text, so a cached answer is the parse's answer. Memory is bounded:
//! only URLs up to [`CACHED_URL_BYTES`] are kept, at most
//! [`CACHE_CAPACITY`] of them, and a full cache starts over (as the
//! user-agent cache does). Refused URLs are not cached; they cost a parse
//! each.

use crate::payload::Rejection;
use crate::recent::Recent;

/// Most URLs cached.
pub const CACHE_CAPACITY: usize = 4096;
/// Longest URL text cached; longer ones (rare, and mostly unique query
/// strings) are parsed every time.
pub const CACHED_URL_BYTES: usize = 512;

/// A page URL as stored: the normalised URL and its host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageUrl {
    pub url: String,
    pub host: String,
}

/// Parse an absolute http(s) URL.
pub fn parse(text: &str) -> Result<PageUrl, Rejection> {
    let parsed = url::Url::parse(text).map_err(|e| Rejection::UrlInvalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Rejection::UrlInvalid(format!(
            "scheme {:?} is not http(s)",
            parsed.scheme()
        )));
    }
    let host = parsed.host_str().unwrap_or_default().to_owned();
    Ok(PageUrl {
        // The serialization itself, not a copy written through `Display`.
        url: parsed.into(),
        host,
    })
}

/// [`parse`] with a cache of recent answers, shared by the handlers.
pub struct PageUrls {
    cache: Recent<PageUrl>,
}

impl Default for PageUrls {
    fn default() -> Self {
        PageUrls {
            cache: Recent::new(CACHE_CAPACITY),
        }
    }
}

impl PageUrls {
    /// The parse of `text`, from the cache when seen before.
    pub fn parse(&self, text: &str) -> Result<PageUrl, Rejection> {
        if text.len() > CACHED_URL_BYTES {
            return parse(text);
        }
        if let Some(hit) = self.cache.get(text) {
            return Ok(hit);
        }
        let page = parse(text)?;
        self.cache.insert(text, page.clone());
        Ok(page)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_answers_equal_the_parse() {
        let urls = PageUrls::default();
        for text in [
            "https://Shop.Example/products/item-3?utm_source=newsletter",
            "http://a.io:80/x/../y#top",
            "https://xn--bcher-kva.example/%7Euser",
        ] {
            let first = urls.parse(text).unwrap();
            assert_eq!(first, parse(text).unwrap());
            assert_eq!(urls.parse(text).unwrap(), first, "from the cache");
        }
        assert_eq!(urls.len(), 3);
        assert_eq!(urls.parse("https://Shop.Example/").unwrap().host, "shop.example");
    }

    #[test]
    fn refusals_are_not_cached_and_the_cache_is_bounded() {
        let urls = PageUrls::default();
        assert!(matches!(urls.parse("ftp://a.io/"), Err(Rejection::UrlInvalid(_))));
        assert!(matches!(urls.parse("not a url"), Err(Rejection::UrlInvalid(_))));
        assert_eq!(urls.len(), 0);
        let long = format!("https://a.io/{}", "x".repeat(CACHED_URL_BYTES));
        assert_eq!(urls.parse(&long).unwrap(), parse(&long).unwrap());
        assert_eq!(urls.len(), 0, "long URLs are parsed, not kept");
        for i in 0..CACHE_CAPACITY + 10 {
            urls.parse(&format!("https://a.io/{i}")).unwrap();
        }
        assert!(urls.len() <= CACHE_CAPACITY);
    }
}
