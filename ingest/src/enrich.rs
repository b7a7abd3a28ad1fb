//! Enrichment from request headers: browser, OS, device class and bots from
//! the user agent (woothee, a maintained, regex-light classifier), and the
//! country from a trusted CDN header when one is configured.
//!
//! Automated user agents (crawlers, HTTP libraries, headless browsers) are
//! recognised here so that ingest can drop them, count them and still answer
//! 202, as Plausible does: a bot gains nothing from a different answer.

use crate::recent::Recent;
use schema::event::Device;
use woothee::parser::Parser;

/// What the user agent says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgentInfo {
    pub browser: String,
    pub os: String,
    pub device: Device,
    pub bot: bool,
}

/// Substrings of automated agents that woothee files elsewhere.
const AUTOMATION_MARKERS: &[&str] = &[
    "HeadlessChrome",
    "PhantomJS",
    "Lighthouse",
    "bot/",
    "Bot/",
    "crawler",
    "spider",
    "python-requests",
    "Go-http-client",
    "okhttp",
    "axios/",
    "node-fetch",
    "curl/",
    "Wget/",
    "HTTPie/",
    "libwww-perl",
    "Apache-HttpClient",
    "Java/",
];

/// Most distinct user agents remembered. Real traffic repeats a few
/// thousand agents, and parsing runs many pattern matches, so a bounded
/// cache removes nearly all parsing from the request path.
const CACHE_CAPACITY: usize = 8192;

/// Parses user agents (with a bounded cache); create once and share.
pub struct UserAgentParser {
    parser: Parser,
    cache: Recent<UserAgentInfo>,
}

impl Default for UserAgentParser {
    fn default() -> Self {
        UserAgentParser {
            parser: Parser::new(),
            cache: Recent::new(CACHE_CAPACITY),
        }
    }
}

fn known(v: &str) -> String {
    if v == "UNKNOWN" { String::new() } else { v.to_owned() }
}

impl UserAgentParser {
    /// The parse of `ua`, from the cache when seen before.
    pub fn parse(&self, ua: &str) -> UserAgentInfo {
        if let Some(hit) = self.cache.get(ua) {
            return hit;
        }
        let info = self.parse_uncached(ua);
        self.cache.insert(ua, info.clone());
        info
    }

    fn parse_uncached(&self, ua: &str) -> UserAgentInfo {
        let marker = AUTOMATION_MARKERS.iter().any(|m| ua.contains(m));
        let Some(r) = self.parser.parse(ua) else {
            return UserAgentInfo {
                browser: String::new(),
                os: String::new(),
                device: Device::Other,
                bot: marker,
            };
        };
        let tablet = r.os == "iPad" || (r.os == "Android" && !ua.contains("Mobile")) || ua.contains("Tablet");
        let device = match r.category {
            "pc" => Device::Desktop,
            "smartphone" | "mobilephone" if tablet => Device::Tablet,
            "smartphone" | "mobilephone" => Device::Mobile,
            _ => Device::Other,
        };
        UserAgentInfo {
            browser: known(r.name),
            os: known(r.os),
            device,
            bot: marker || r.category == "crawler",
        }
    }
}

/// A country code from a CDN header value (`CF-IPCountry: DE`), if valid.
/// `XX` (unknown) and `T1` (Tor) give none.
pub fn country_from_header(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_uppercase();
    (v.len() == 2 && v.bytes().all(|b| b.is_ascii_uppercase()) && v != "XX" && v != "T1").then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_agents() {
        let p = UserAgentParser::default();
        let chrome = p.parse("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36");
        assert_eq!(
            (chrome.browser.as_str(), chrome.device, chrome.bot),
            ("Chrome", Device::Desktop, false)
        );
        assert!(chrome.os.starts_with("Windows"), "{}", chrome.os);
        let iphone = p.parse("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1");
        assert_eq!(
            (iphone.browser.as_str(), iphone.os.as_str(), iphone.device),
            ("Safari", "iPhone", Device::Mobile)
        );
        let ipad = p.parse("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1");
        assert_eq!(ipad.device, Device::Tablet);
        let android = p.parse("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36");
        assert_eq!((android.os.as_str(), android.device), ("Android", Device::Mobile));
        let firefox = p.parse("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0");
        assert_eq!(
            (firefox.browser.as_str(), firefox.os.as_str(), firefox.device),
            ("Firefox", "Linux", Device::Desktop)
        );
    }

    #[test]
    fn recognises_bots() {
        let p = UserAgentParser::default();
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.32.3",
        ] {
            assert!(p.parse(ua).bot, "{ua}");
        }
        assert!(
            !p.parse("").bot,
            "an absent user agent (server-side senders) is not a bot"
        );
    }

    #[test]
    fn countries_from_headers() {
        assert_eq!(country_from_header(" de "), Some("DE".into()));
        assert_eq!(country_from_header("XX"), None);
        assert_eq!(country_from_header("T1"), None);
        assert_eq!(country_from_header("DEU"), None);
    }
}
