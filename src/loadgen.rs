//! Realistic synthetic traffic for demos, tests and benchmarks.
//!
//! Sites get Zipf-distributed popularity and each has Zipf-distributed pages.
//! Visitors keep a stable user agent and IP (sent as `X-Forwarded-For`, which
//! ingest honours only when told to trust it) and browse in sessions of
//! several page views that start from a referrer (search, social, e-mail
//! campaign with UTM tags, or direct) and sometimes add to cart, buy or sign
//! up. Sessions interleave, as real traffic does. A seed makes a run
//! reproducible; a target rate and total bound it.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use schema::ops::CancellationToken;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// What to generate and where to send it.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenOptions {
    /// Base URL of ingest.
    #[arg(long, env = "TALLY_INGEST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Target events per second.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Events to send in total (0 = until stopped).
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Number of distinct sites.
    #[arg(long, default_value_t = 20)]
    pub sites: usize,
    /// Concurrent HTTP requests.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Random seed (same seed, same traffic).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Spread event times over the past N hours (sent as client timestamps;
    /// keep it below ingest's --max-event-age-hours, 72 by default). 0 =
    /// events happen now.
    #[arg(long, default_value_t = 0)]
    pub backfill_hours: u64,
    /// Draw a progress bar.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub progress: bool,
    /// Events per request: 1 posts each to `/api/event` as a browser does;
    /// more sends them together to the batch endpoint `/api/events`, each
    /// with its visitor's address and user agent, as a server forwarding
    /// traffic does.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
}

impl LoadgenOptions {
    pub fn new(url: impl Into<String>) -> Self {
        LoadgenOptions {
            url: url.into(),
            rate: 200.0,
            total: 10_000,
            sites: 20,
            concurrency: 16,
            seed: 1,
            backfill_hours: 0,
            progress: false,
            batch: 1,
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadgenReport {
    pub sent: u64,
    pub accepted: u64,
    /// 4xx answers.
    pub rejected: u64,
    /// 5xx answers and transport errors.
    pub failed: u64,
}

/// The site domains a run with `n` sites uses.
pub fn site_names(n: usize) -> Vec<String> {
    const NAMES: &[&str] = &[
        "shop", "blog", "docs", "news", "store", "app", "travel", "recipes", "music", "games",
    ];
    (0..n)
        .map(|i| {
            let base = NAMES[i % NAMES.len()];
            if i < NAMES.len() {
                format!("{base}.example")
            } else {
                format!("{base}{}.example", i / NAMES.len())
            }
        })
        .collect()
}

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
];

const REFERRERS: &[(&str, u32)] = &[
    ("", 40),
    ("https://www.google.com/", 30),
    ("https://duckduckgo.com/", 4),
    ("https://www.bing.com/", 4),
    ("https://t.co/abc123", 5),
    ("https://www.facebook.com/", 5),
    ("https://news.ycombinator.com/", 4),
    ("https://www.reddit.com/r/webdev/", 4),
    ("https://mail.google.com/", 4),
];

fn pages() -> Vec<String> {
    let mut p: Vec<String> = [
        "/",
        "/pricing",
        "/blog",
        "/about",
        "/products",
        "/cart",
        "/checkout",
        "/docs",
        "/contact",
        "/signup",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    p.extend((1..=12).map(|i| format!("/products/item-{i}")));
    p.extend((1..=12).map(|i| format!("/blog/post-{i}")));
    p
}

/// One event to send.
#[derive(Debug, Clone)]
pub struct GeneratedEvent {
    pub body: String,
    pub user_agent: &'static str,
    pub ip: String,
}

struct Session {
    site: usize,
    ip: String,
    ua: &'static str,
    referrer: &'static str,
    campaign: bool,
    remaining_pages: u32,
    ts_ms: Option<i64>,
    in_cart: bool,
    queued: Vec<(&'static str, String, Option<f64>)>,
    /// The tracker's first-seen flag for this browser.
    returning: bool,
}

/// The traffic model: an endless, reproducible sequence of events.
pub struct TrafficModel {
    rng: StdRng,
    sites: Vec<String>,
    site_zipf: Zipf<f64>,
    pages: Vec<String>,
    page_zipf: Zipf<f64>,
    active: Vec<Session>,
    backfill_ms: i64,
    visitors_per_site: u32,
}

impl TrafficModel {
    pub fn new(sites: usize, seed: u64, backfill_hours: u64) -> Result<Self> {
        let sites = site_names(sites.max(1));
        let pages = pages();
        Ok(TrafficModel {
            rng: StdRng::seed_from_u64(seed),
            site_zipf: Zipf::new(sites.len() as f64, 1.1).context("site popularity")?,
            page_zipf: Zipf::new(pages.len() as f64, 1.0).context("page popularity")?,
            sites,
            pages,
            active: Vec::new(),
            backfill_ms: i64::try_from(backfill_hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000),
            visitors_per_site: 5_000,
        })
    }

    pub fn sites(&self) -> &[String] {
        &self.sites
    }

    fn new_session(&mut self) -> Session {
        let site = self.site_zipf.sample(&mut self.rng) as usize - 1;
        // A visitor is a stable (IP, UA) pair drawn from the site's audience.
        let visitor: u32 = self.rng.random_range(0..self.visitors_per_site);
        let mut vr = StdRng::seed_from_u64(u64::from(visitor) * 7919 + site as u64);
        let ip = format!(
            "{}.{}.{}.{}",
            vr.random_range(11..=223),
            vr.random_range(0..=255),
            vr.random_range(0..=255),
            vr.random_range(1..=254)
        );
        let ua = USER_AGENTS[vr.random_range(0..USER_AGENTS.len())];
        let returning = vr.random_bool(0.4);
        let total: u32 = REFERRERS.iter().map(|r| r.1).sum();
        let mut pick = self.rng.random_range(0..total);
        let mut referrer = "";
        for (r, w) in REFERRERS {
            if pick < *w {
                referrer = r;
                break;
            }
            pick -= w;
        }
        let ts_ms = (self.backfill_ms > 0).then(|| {
            chrono::Utc::now().timestamp_millis() - self.rng.random_range(60_000..self.backfill_ms.max(60_001))
        });
        Session {
            site,
            ip,
            ua,
            referrer,
            campaign: referrer == "https://mail.google.com/",
            remaining_pages: 1 + (self.rng.random::<f64>().ln() / 0.6f64.ln()) as u32 % 8,
            ts_ms,
            in_cart: false,
            queued: Vec::new(),
            returning,
        }
    }

    /// The next event of the interleaved sessions.
    pub fn next_event(&mut self) -> GeneratedEvent {
        const ACTIVE: usize = 64;
        while self.active.len() < ACTIVE {
            let s = self.new_session();
            self.active.push(s);
        }
        let i = self.rng.random_range(0..self.active.len());
        let (name, path, revenue) = if let Some(q) = self.active[i].queued.pop() {
            q
        } else {
            let path = self.pages[self.page_zipf.sample(&mut self.rng) as usize - 1].clone();
            let s = &mut self.active[i];
            s.remaining_pages = s.remaining_pages.saturating_sub(1);
            if path.starts_with("/products/") && self.rng.random_bool(0.25) {
                self.active[i].queued.push(("add_to_cart", path.clone(), None));
                self.active[i].in_cart = true;
            } else if self.active[i].in_cart && self.rng.random_bool(0.35) {
                let amount = (self.rng.random_range(500..20_000) as f64) / 100.0;
                self.active[i]
                    .queued
                    .push(("purchase", "/checkout".into(), Some(amount)));
                self.active[i].in_cart = false;
            } else if path == "/signup" && self.rng.random_bool(0.3) {
                self.active[i].queued.push(("signup", path.clone(), None));
            }
            ("pageview", path, None)
        };
        let step = self.rng.random_range(5_000..120_000);
        let s = &mut self.active[i];
        let site = &self.sites[s.site];
        let mut url = format!("https://{site}{path}");
        if s.campaign {
            url.push_str("?utm_source=newsletter&utm_medium=email&utm_campaign=autumn");
        }
        let mut body = serde_json::json!({
            "n": name,
            "u": url,
            "d": site,
            "r": s.referrer,
            "ret": u8::from(s.returning),
        });
        if let Some(ts) = s.ts_ms {
            body["ts"] = serde_json::json!(ts);
            s.ts_ms = Some((ts + step).min(chrono::Utc::now().timestamp_millis()));
        }
        if let Some(amount) = revenue {
            body["revenue"] = serde_json::json!({"amount": format!("{amount:.2}"), "currency": "EUR"});
        }
        if name == "add_to_cart" {
            body["p"] = serde_json::json!({"product": path.trim_start_matches("/products/")});
        }
        // Only the first page view carries the external referrer.
        s.referrer = "";
        let event = GeneratedEvent {
            body: body.to_string(),
            user_agent: s.ua,
            ip: s.ip.clone(),
        };
        if s.remaining_pages == 0 && s.queued.is_empty() {
            self.active.swap_remove(i);
        }
        event
    }
}

/// Post one event as a browser: counts of [accepted, 4xx, other].
async fn send_one(client: &reqwest::Client, base: &str, ev: GeneratedEvent) -> [u64; 3] {
    let res = client
        .post(format!("{base}/api/event"))
        .header("content-type", "text/plain")
        .header("user-agent", ev.user_agent)
        .header("x-forwarded-for", ev.ip)
        .body(ev.body)
        .send()
        .await;
    match res.map(|r| r.status()) {
        Ok(s) if s.is_success() => [1, 0, 0],
        Ok(s) if s.is_client_error() => [0, 1, 0],
        _ => [0, 0, 1],
    }
}

/// Post events to the batch endpoint: counts of [accepted, 4xx, other]
/// from its per-event results.
async fn send_batch(client: &reqwest::Client, base: &str, events: Vec<GeneratedEvent>) -> [u64; 3] {
    let n = events.len() as u64;
    let items: Vec<serde_json::Value> = events
        .into_iter()
        .filter_map(|ev| {
            let mut v: serde_json::Value = serde_json::from_str(&ev.body).ok()?;
            v["ip"] = serde_json::json!(ev.ip);
            v["user_agent"] = serde_json::json!(ev.user_agent);
            Some(v)
        })
        .collect();
    let res = client
        .post(format!("{base}/api/events"))
        .json(&serde_json::json!({ "events": items }))
        .send()
        .await;
    let answer: Option<serde_json::Value> = match res {
        Ok(r) => r.json().await.ok(),
        Err(_) => None,
    };
    let Some(results) = answer.as_ref().and_then(|a| a["results"].as_array()) else {
        return [0, 0, n];
    };
    let mut counts = [0u64; 3];
    for r in results {
        match r["status"].as_u64() {
            Some(202) => counts[0] += 1,
            Some(s) if (400..500).contains(&s) => counts[1] += 1,
            _ => counts[2] += 1,
        }
    }
    counts[2] += n.saturating_sub(results.len() as u64);
    counts
}

/// Send traffic until `total` is reached or `shutdown` is cancelled.
pub async fn run(opts: &LoadgenOptions, shutdown: CancellationToken) -> Result<LoadgenReport> {
    anyhow::ensure!(opts.rate > 0.0, "--rate must be positive");
    let mut model = TrafficModel::new(opts.sites, opts.seed, opts.backfill_hours)?;
    let base = opts.url.trim_end_matches('/').to_owned();
    let batch = opts.batch.max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .timeout(Duration::from_secs(10))
        .build()?;
    let bar = if opts.progress {
        let b = if opts.total > 0 {
            ProgressBar::new(opts.total)
        } else {
            ProgressBar::new_spinner()
        };
        b.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} events [{elapsed_precise}] {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    } else {
        ProgressBar::hidden()
    };
    let accepted = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<GeneratedEvent>(opts.concurrency * 4);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let (client, base, rx, bar) = (client.clone(), base.clone(), rx.clone(), bar.clone());
        let (accepted, rejected, failed) = (accepted.clone(), rejected.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let mut events = Vec::with_capacity(batch);
                {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { break };
                    events.push(first);
                    while events.len() < batch {
                        match rx.try_recv() {
                            Ok(ev) => events.push(ev),
                            Err(_) => break,
                        }
                    }
                }
                let n = events.len() as u64;
                let [ok, client_err, other] = if batch == 1 {
                    send_one(&client, &base, events.remove(0)).await
                } else {
                    send_batch(&client, &base, events).await
                };
                accepted.fetch_add(ok, Ordering::Relaxed);
                rejected.fetch_add(client_err, Ordering::Relaxed);
                failed.fetch_add(other, Ordering::Relaxed);
                bar.inc(n);
            }
        }));
    }
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'outer: loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * opts.rate) as u64;
        while sent < due {
            if opts.total > 0 && sent >= opts.total {
                break 'outer;
            }
            let ev = model.next_event();
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                r = tx.send(ev) => if r.is_err() { break 'outer },
            }
            sent += 1;
        }
        if opts.total > 0 && sent >= opts.total {
            break;
        }
    }
    drop(tx);
    for w in workers {
        let _ = w.await;
    }
    let report = LoadgenReport {
        sent,
        accepted: accepted.load(Ordering::Relaxed),
        rejected: rejected.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
    };
    bar.finish_with_message(format!(
        "accepted {}, rejected {}, failed {}",
        report.accepted, report.rejected, report.failed
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_reproducible_and_plausible() {
        let mut a = TrafficModel::new(20, 7, 0).unwrap();
        let mut b = TrafficModel::new(20, 7, 0).unwrap();
        let xs: Vec<String> = (0..500).map(|_| a.next_event().body).collect();
        let ys: Vec<String> = (0..500).map(|_| b.next_event().body).collect();
        assert_eq!(xs, ys);
        let pageviews = xs.iter().filter(|b| b.contains(r#""n":"pageview""#)).count();
        assert!(
            pageviews > 350 && pageviews < 500,
            "mostly page views, some custom events: {pageviews}"
        );
        assert!(xs.iter().any(|b| b.contains("add_to_cart")));
        // Zipf: the first site is the most popular.
        let first = xs.iter().filter(|b| b.contains(r#""d":"shop.example""#)).count();
        let last = xs.iter().filter(|b| b.contains(r#""d":"games.example""#)).count();
        assert!(first > last * 3, "{first} vs {last}");
    }

    #[test]
    fn backfilled_timestamps_stay_in_the_window() {
        let now = chrono::Utc::now().timestamp_millis();
        let mut m = TrafficModel::new(3, 1, 5).unwrap();
        for _ in 0..300 {
            let v: serde_json::Value = serde_json::from_str(&m.next_event().body).unwrap();
            let ts = v["ts"].as_i64().unwrap();
            assert!(ts <= now + 1000 && ts >= now - 5 * 3_600_000 - 1000, "{ts}");
        }
    }
}
