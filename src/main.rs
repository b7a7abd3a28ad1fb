//! `tally`: the command line of Tally. Parses flags and environment, sets up
//! logging and metrics, and dispatches to the library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use schema::ops::{CancellationToken, PrometheusHandle};
use schema::store::{ConnectOptions, RedisConn, RedisTarget};
use tally::{loadgen, up};
use tokio::net::TcpListener;

/// mimalloc instead of glibc's allocator: a profile of ingest under load
/// spent about a fifth of its time in glibc malloc and free (including
/// `malloc_consolidate`); see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Web analytics on Redis Streams, queried as SQL over the PostgreSQL protocol"
)]
struct Cli {
    /// Redis to use: redis://host:port, or redis+cluster://h1:p1,h2:p2.
    /// `tally up` starts a private redis-server when it is unset and nothing
    /// answers on 127.0.0.1:6379.
    #[arg(long, env = "REDIS_URL", global = true)]
    redis_url: Option<String>,
    /// Log format.
    #[arg(long, env = "TALLY_LOG_FORMAT", default_value = "text", global = true, value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, streamer and gateway in one process.
    Up(Box<up::UpOptions>),
    /// Run the ingest HTTP service alone.
    Ingest(ingest::IngestConfig),
    /// Run a streamer alone (run several to share the work).
    Streamer(streamer::StreamerConfig),
    /// Run the SQL gateway alone.
    Gateway(gateway::GatewayConfig),
    /// Send synthetic traffic to an ingest URL.
    Loadgen(loadgen::LoadgenOptions),
    /// Manage the site registry.
    Sites {
        #[command(subcommand)]
        action: SitesAction,
    },
    /// Manage gateway users, their sites and API tokens.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// Show the active keyspace, its rules and the streamer's progress per
    /// shard (lag and pending entries).
    Status,
    /// Rebuild every report from the retained streams into a new keyspace
    /// version (with new processing rules, if given) while the live one keeps
    /// serving, then switch the gateway and the streamers to it and remove
    /// the old one.
    Replay(Box<ReplayArgs>),
    /// Recompute the reports from the retained streams and diff them against
    /// the key-map; exits 1 on any difference.
    Verify {
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Only buckets from this time (RFC 3339, `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD`, UTC).
        #[arg(long, value_parser = parse_time)]
        from: Option<i64>,
        /// Only buckets before this time.
        #[arg(long, value_parser = parse_time)]
        to: Option<i64>,
    },
}

/// A time argument as ms since the epoch (UTC).
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc().timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_millis());
    }
    Err(format!(
        "{s:?} is not a time (RFC 3339, YYYY-MM-DD HH:MM:SS or YYYY-MM-DD)"
    ))
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Recompute from this time (RFC 3339, `YYYY-MM-DD HH:MM:SS`,
    /// `YYYY-MM-DD`) or stream id (`<ms>-<seq>`), rounded down to its UTC
    /// midnight; reports before it are carried over unchanged. Default: all
    /// of history when the streams were never trimmed, else the first whole
    /// day they hold.
    #[arg(long, value_parser = parse_replay_from)]
    from: Option<streamer::replay::ReplayFrom>,
    /// In the new version, do not count events on pages matching this glob
    /// (`*` within a path segment, `**` across); repeatable. Without it (and
    /// without --count-all-paths) the live version's exclusions are kept.
    #[arg(long = "exclude-path")]
    exclude_paths: Vec<String>,
    /// Drop every page exclusion in the new version.
    #[arg(long, conflicts_with = "exclude_paths")]
    count_all_paths: bool,
    /// Ingest's --max-event-age-hours: buckets younger than this may still
    /// receive events, so --from must be older.
    #[arg(long, env = "TALLY_MAX_EVENT_AGE_HOURS", default_value_t = 72)]
    settle_hours: u64,
    #[command(flatten)]
    streamer: streamer::StreamerConfig,
}

/// `--from`: a time or a stream id.
fn parse_replay_from(s: &str) -> Result<streamer::replay::ReplayFrom, String> {
    match parse_time(s) {
        Ok(ms) => Ok(streamer::replay::ReplayFrom::Time(ms)),
        Err(time_err) => s
            .parse()
            .map_err(|_| format!("{time_err}, nor a stream id (<ms>-<seq>)")),
    }
}

async fn run_replay(args: ReplayArgs, conn: &mut RedisConn) -> Result<()> {
    let exclude_paths = if args.count_all_paths {
        Some(Vec::new())
    } else if args.exclude_paths.is_empty() {
        None
    } else {
        Some(args.exclude_paths)
    };
    let opts = streamer::replay::ReplayOptions {
        from: args.from,
        exclude_paths,
        settle: std::time::Duration::from_secs(args.settle_hours * 3600),
        consumer: args.streamer.options(),
    };
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{spinner} replay {bar:30} {pos}/{len} events ({per_sec}, {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = streamer::replay::replay(
        conn,
        opts,
        |p| {
            bar.set_length(p.total);
            bar.set_position(p.events);
        },
        cancel_on_signal(),
    )
    .await;
    bar.finish_and_clear();
    let r = report?;
    println!(
        "replayed {} events into keyspace v{} in {:.1} s ({} buckets carried over); now serving v{}, v{} removed ({} keys)",
        r.events,
        r.new.version,
        r.elapsed.as_secs_f64(),
        r.carried,
        r.new.version,
        r.old.version,
        r.removed
    );
    println!("rules: {}", serde_json::to_string(&r.rules)?);
    Ok(())
}

#[derive(Subcommand)]
enum SitesAction {
    /// Register sites (events for unregistered sites are refused).
    Add { sites: Vec<String> },
    /// List registered sites.
    List,
    /// Unregister sites (their data stays until it expires).
    Remove { sites: Vec<String> },
}

#[derive(Subcommand)]
enum UsersAction {
    /// Add a user. The password is read from TALLY_PASSWORD or the first
    /// line of standard input, and stored only as a SCRAM-SHA-256 verifier.
    Add {
        name: String,
        /// May read every site.
        #[arg(long)]
        admin: bool,
    },
    /// List users with their role and sites.
    List,
    /// Remove a user (and their API tokens).
    Remove { name: String },
    /// Allow a user to read a site.
    Grant { name: String, site: String },
    /// Withdraw a site from a user.
    Revoke { name: String, site: String },
    /// Create an API token for the HTTP API (printed once).
    Token { name: String },
}

/// A new user's password: TALLY_PASSWORD, or the first line of stdin.
fn read_password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("TALLY_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn init_metrics() -> Option<PrometheusHandle> {
    match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!(error = %e, "metrics recorder not installed");
            None
        }
    }
}

async fn connect(url: Option<&str>) -> Result<RedisConn> {
    let url = url.unwrap_or("redis://127.0.0.1:6379");
    let target = RedisTarget::parse(url)?;
    Ok(RedisConn::connect(&target, ConnectOptions::default()).await?)
}

/// Cancel the token on SIGINT/SIGTERM.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    let signal = schema::ops::shutdown_signal();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down: finishing in-flight work");
        t.cancel();
    });
    token
}

async fn listen(addr: std::net::SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let redis_url = cli.redis_url.clone();
    match cli.command {
        Command::Up(opts) => up::run(*opts, redis_url, init_metrics()).await,
        Command::Ingest(cfg) => {
            let conn = connect(redis_url.as_deref()).await?;
            let l = listen(cfg.addr).await?;
            ingest::run(cfg, l, conn, init_metrics(), cancel_on_signal()).await?;
            Ok(())
        }
        Command::Streamer(cfg) => {
            let conn = connect(redis_url.as_deref()).await?;
            let l = listen(cfg.addr).await?;
            streamer::run(cfg, Some(l), conn, init_metrics(), cancel_on_signal()).await?;
            Ok(())
        }
        Command::Gateway(cfg) => {
            let conn = connect(redis_url.as_deref()).await?;
            let (pg, http) = (listen(cfg.addr).await?, listen(cfg.http_addr).await?);
            gateway::run(cfg, pg, Some(http), conn, init_metrics(), cancel_on_signal()).await?;
            Ok(())
        }
        Command::Loadgen(opts) => {
            let report = loadgen::run(&opts, cancel_on_signal()).await?;
            println!(
                "sent {} events: {} accepted, {} rejected, {} failed",
                report.sent, report.accepted, report.rejected, report.failed
            );
            Ok(())
        }
        Command::Sites { action } => {
            let mut conn = connect(redis_url.as_deref()).await?;
            let now = chrono::Utc::now().timestamp_millis();
            match action {
                SitesAction::Add { sites } => {
                    for raw in sites {
                        let site = schema::site::normalize_site(&raw)?;
                        let added = schema::site::add_site(&mut conn, &site, now).await?;
                        println!("{site}: {}", if added { "added" } else { "already registered" });
                    }
                }
                SitesAction::List => {
                    for s in schema::site::list_sites(&mut conn).await? {
                        println!("{s}");
                    }
                }
                SitesAction::Remove { sites } => {
                    for raw in sites {
                        let site = schema::site::normalize_site(&raw)?;
                        let removed = schema::site::remove_site(&mut conn, &site).await?;
                        println!("{site}: {}", if removed { "removed" } else { "not registered" });
                    }
                }
            }
            Ok(())
        }
        Command::Users { action } => {
            let users = gateway::users::UserStore::new(connect(redis_url.as_deref()).await?);
            match action {
                UsersAction::Add { name, admin } => {
                    users.add(&name, &read_password()?, admin).await?;
                    println!("{name}: added{}", if admin { " (admin)" } else { "" });
                }
                UsersAction::List => {
                    for (name, r) in users.list().await? {
                        let sites: Vec<&str> = r.sites.iter().map(String::as_str).collect();
                        let role = if r.admin {
                            "admin (all sites)".to_owned()
                        } else {
                            sites.join(", ")
                        };
                        println!("{name}\t{role}");
                    }
                }
                UsersAction::Remove { name } => {
                    let removed = users.remove(&name).await?;
                    println!("{name}: {}", if removed { "removed" } else { "no such user" });
                }
                UsersAction::Grant { name, site } => {
                    let site = schema::site::normalize_site(&site)?;
                    users.set_site(&name, &site, true).await?;
                    println!("{name}: may read {site}");
                }
                UsersAction::Revoke { name, site } => {
                    let site = schema::site::normalize_site(&site)?;
                    users.set_site(&name, &site, false).await?;
                    println!("{name}: may no longer read {site}");
                }
                UsersAction::Token { name } => {
                    println!("{}", users.new_token(&name).await?);
                }
            }
            Ok(())
        }
        Command::Verify { site, from, to } => {
            let mut conn = connect(redis_url.as_deref()).await?;
            let ks = streamer::keyspace(&mut conn).await?;
            let site = site.map(|s| schema::site::normalize_site(&s)).transpose()?;
            let scope = streamer::verify::VerifyScope {
                site,
                from_ms: from,
                to_ms: to,
            };
            let report = streamer::verify::verify(&mut conn, ks, &scope).await?;
            println!(
                "{} events; {} counters and {} unique-visitor sketches checked",
                report.events, report.counters_checked, report.uniques_checked
            );
            for d in report.counters.iter().chain(&report.uniques).take(50) {
                println!(
                    "DIFF {} {}: expected {}, key-map has {}",
                    d.key, d.field, d.expected, d.actual
                );
            }
            if report.ok() {
                println!("OK: the key-map equals the recompute from the streams");
                Ok(())
            } else {
                anyhow::bail!(
                    "{} counter and {} unique-visitor differences",
                    report.counters.len(),
                    report.uniques.len()
                )
            }
        }
        Command::Replay(args) => {
            let mut conn = connect(redis_url.as_deref()).await?;
            run_replay(*args, &mut conn).await
        }
        Command::Status => {
            let mut conn = connect(redis_url.as_deref()).await?;
            let ks = streamer::keyspace(&mut conn).await?;
            let rules = streamer::rules::Rules::load(&mut conn, ks).await?;
            println!("keyspace v{}  group {}", ks.version, ks.group());
            println!("rules {}", serde_json::to_string(rules.spec())?);
            println!("{:<6} {:>10} {:>10}", "shard", "lag", "pending");
            for p in streamer::progress::progress(&mut conn, ks).await? {
                let lag = p.lag.map_or_else(|| "?".to_owned(), |l| l.to_string());
                println!("{:<6} {:>10} {:>10}", p.shard.to_string(), lag, p.pending);
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
