//! Referrer spam: events whose referrer is a known spam domain are dropped
//! (answered 202 with `X-Tally-Dropped: spam` and counted, as Plausible does).
//!
//! A built-in list of long-lived spam domains (from the Matomo community's
//! referrer-spam list) is always on; operators add their own with
//! `--spam-list <file>` (one domain per line, `#` comments). A domain also
//! matches its subdomains.

use std::collections::HashSet;

/// Well-known referrer-spam domains.
const BUILTIN: &[&str] = &[
    "semalt.com",
    "semalt.semalt.com",
    "buttons-for-website.com",
    "buttons-for-your-website.com",
    "darodar.com",
    "ilovevitaly.com",
    "ilovevitaly.ru",
    "priceg.com",
    "blackhatworth.com",
    "hulfingtonpost.com",
    "best-seo-offer.com",
    "best-seo-solution.com",
    "buy-cheap-online.info",
    "free-share-buttons.com",
    "get-free-traffic-now.com",
    "social-buttons.com",
    "simple-share-buttons.com",
    "floating-share-buttons.com",
    "trafficmonetize.org",
    "webmonetizer.net",
    "4webmasters.org",
    "100dollars-seo.com",
    "event-tracking.com",
    "free-social-buttons.com",
    "o-o-6-o-o.com",
    "o-o-8-o-o.com",
    "rank-checker.online",
    "site-auditor.online",
    "seo-platform.com",
    "success-seo.com",
    "videos-for-your-business.com",
    "website-analyzer.info",
    "youporn-forum.ga",
    "kambasoft.com",
    "savetubevideo.com",
    "screentoolkit.com",
    "7makemoneyonline.com",
    "anticrawler.org",
    "fix-website-errors.com",
    "googlsucks.com",
];

/// The set of spam domains in force.
#[derive(Debug, Clone)]
pub struct SpamList {
    domains: HashSet<String>,
}

impl Default for SpamList {
    fn default() -> Self {
        SpamList {
            domains: BUILTIN.iter().map(|d| (*d).to_owned()).collect(),
        }
    }
}

impl SpamList {
    /// The built-in list plus the domains in `text` (one per line).
    pub fn with_extra(text: &str) -> Self {
        let mut list = SpamList::default();
        for line in text.lines() {
            let d = line.split('#').next().unwrap_or("").trim().to_ascii_lowercase();
            if !d.is_empty() {
                list.domains.insert(d.trim_start_matches("www.").to_owned());
            }
        }
        list
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Whether a referrer host (without `www.`) is spam: the host or any
    /// parent domain of it is listed.
    pub fn is_spam(&self, host: &str) -> bool {
        if host.is_empty() {
            return false;
        }
        let mut rest = host;
        loop {
            if self.domains.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) if parent.contains('.') => rest = parent,
                _ => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_listed_domains_and_their_subdomains() {
        let list = SpamList::with_extra("# mine\nSpam.Example \n\n");
        assert!(list.is_spam("semalt.com"));
        assert!(list.is_spam("x.y.darodar.com"));
        assert!(list.is_spam("spam.example"));
        assert!(!list.is_spam("google.com"));
        assert!(!list.is_spam("com"));
        assert!(!list.is_spam(""));
        assert!(!list.is_spam("notsemalt.com"));
    }
}
