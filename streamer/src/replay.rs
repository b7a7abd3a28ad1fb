//! Replay: rebuild every report from the retained streams into a new
//! keyspace version while the live one keeps serving, then switch.
//!
//! This is how a change of processing (new rules, or a fixed aggregation)
//! reaches history, as the design asks of its Spark jobs. The steps:
//!
//! 1. Take the replay lock and a fresh version number M (never reused).
//! 2. Choose the *floor*: the UTC midnight from which M is recomputed. With
//!    streams that were never trimmed and no `--from`, there is none and all
//!    of history is recomputed. Otherwise buckets before the floor cannot be
//!    recomputed (their events are gone) and are carried over from the live
//!    version unchanged. The floor is a midnight so that every minute, hour
//!    and day bucket lies wholly on one side of it, and it must be older
//!    than the latest time ingest still accepts back-dated events for
//!    (`settle`), so no event can reach a carried bucket after the copy.
//! 3. Store M's rules (the new ones and the floor), create M's consumer
//!    group on every shard at the floor's position (less a margin for
//!    events sent with a clock ahead), and consume into M with the ordinary
//!    exactly-once consumer loop.
//! 4. When M has caught up with the streams, copy the carried buckets,
//!    point `tally:keyspace` at M (the gateway reads it per query, the
//!    streamers follow within half a second and continue M's group), and
//!    retire the old version: destroy its groups, so a late batch of a slow
//!    streamer fails instead of writing, then delete its keys.
//!
//! Sessions that span the floor are split there: their events after it
//! start a visit of their own in M (buckets before the floor keep the whole
//! visit). `tally verify` recomputes M with the same rules, so it agrees.
//! A replay that is stopped before the switch removes what it built; one
//! that crashes leaves a group that the streamers' maintenance removes, and
//! keys that the next replay deletes.

use crate::consumer::{ConsumerOptions, run_shard};
use crate::rules::{RuleSpec, Rules, RulesError};
use crate::xinfo::InfoRecord;
use redis::Value;
use schema::keys::{
    bucket_of_key, is_span_key, keyspace_key, keyspace_seq_key, parse_stream_id, replay_lock_key, rules_pattern,
};
use schema::ops::CancellationToken;
use schema::store::{RedisConn, StoreError, active_keyspace, scan_keys};
use schema::{Grain, Keyspace, Shard};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events may carry a time this far ahead of their stream entry (ingest
/// allows 5 minutes of clock skew); the replay starts reading this much
/// before the floor.
pub const START_MARGIN_MS: i64 = 3_600_000;
/// How long the replay lock lives without being renewed.
const LOCK_TTL: Duration = Duration::from_secs(60);
/// A shard is caught up when the group has read to within this of the
/// stream's newest entry and holds few entries pending.
const CAUGHT_UP_MS: u64 = 1000;

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("another replay is running (building keyspace {0})")]
    Busy(String),
    #[error("{0}")]
    Window(String),
    #[error("replay stopped before the switch; keyspace v{0} was removed")]
    Cancelled(u32),
    #[error("replay lock lost before the switch; keyspace v{0} was removed, run the replay again")]
    LockLost(u32),
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFrom {
    /// Events from this time (ms); rounded down to its UTC midnight.
    Time(i64),
    /// Entries from this stream id's time; rounded down likewise.
    Id(u64, u64),
}

impl std::str::FromStr for ReplayFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((ms, seq)) = s.split_once('-')
            && let (Ok(ms), Ok(seq)) = (ms.parse(), seq.parse())
        {
            return Ok(ReplayFrom::Id(ms, seq));
        }
        Err(format!("{s:?} is not a stream id (<ms>-<seq>)"))
    }
}

impl ReplayFrom {
    fn ms(self) -> i64 {
        match self {
            ReplayFrom::Time(t) => t,
            ReplayFrom::Id(ms, _) => ms.min(i64::MAX as u64) as i64,
        }
    }
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub from: Option<ReplayFrom>,
    /// New excluded-path rules; `None` keeps the live version's.
    pub exclude_paths: Option<Vec<String>>,
    /// Oldest event age ingest accepts (its `--max-event-age-hours`): buckets
    /// younger than this may still change and cannot be carried over.
    pub settle: Duration,
    /// The consume loop's tuning (batch, retention); its rules and name are
    /// set by the replay.
    pub consumer: ConsumerOptions,
}

/// Progress while consuming.
#[derive(Debug, Clone, Copy)]
pub struct ReplayProgress {
    /// Events read from the streams so far.
    pub events: u64,
    /// Stream entries from the start position (an estimate until the end).
    pub total: u64,
}

/// The outcome of a replay.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub old: Keyspace,
    pub new: Keyspace,
    pub rules: RuleSpec,
    pub events: u64,
    /// Bucket keys carried over from the old version.
    pub carried: u64,
    /// Keys of the old version removed.
    pub removed: u64,
    pub elapsed: Duration,
}

/// What the streams hold, per shard.
struct StreamSpan {
    /// Entries were trimmed from the stream at some time.
    trimmed: bool,
    first_ms: Option<u64>,
    length: u64,
}

async fn stream_spans(conn: &mut RedisConn) -> redis::RedisResult<Vec<StreamSpan>> {
    let mut out = Vec::new();
    for shard in Shard::all() {
        let info: redis::RedisResult<Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(shard.stream_key())
            .query_async(conn)
            .await;
        let info = match info {
            Ok(v) => InfoRecord::new(v),
            Err(e) if e.to_string().contains("no such key") => {
                out.push(StreamSpan {
                    trimmed: false,
                    first_ms: None,
                    length: 0,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        let length: u64 = info.get("length").unwrap_or(0);
        let added: u64 = info.get("entries-added").unwrap_or(length);
        let first_ms = info
            .get::<Vec<Value>>("first-entry")
            .and_then(|e| e.into_iter().next())
            .and_then(|id| redis::from_redis_value::<String>(id).ok())
            .and_then(|id| parse_stream_id(&id))
            .map(|(ms, _)| ms);
        out.push(StreamSpan {
            trimmed: added > length,
            first_ms,
            length,
        });
    }
    Ok(out)
}

fn day_floor(ms: i64) -> i64 {
    Grain::Day.truncate(ms)
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The floor of the new version, or why none fits.
fn choose_floor(
    from: Option<ReplayFrom>,
    spans: &[StreamSpan],
    now_ms: i64,
    settle: Duration,
) -> Result<Option<i64>, ReplayError> {
    // Every trimmed stream must still hold entries from floor - margin on.
    let covered_from = spans
        .iter()
        .filter(|s| s.trimmed)
        .filter_map(|s| s.first_ms)
        .map(|ms| ms as i64)
        .max();
    let floor = match from {
        None => covered_from.map(|ms| day_floor(ms + START_MARGIN_MS + Grain::Day.step_ms() - 1)),
        Some(f) => Some(day_floor(f.ms())),
    };
    let Some(floor) = floor else {
        return Ok(None);
    };
    if let Some(covered) = covered_from
        && covered > floor - START_MARGIN_MS
    {
        let earliest = day_floor(covered + START_MARGIN_MS + Grain::Day.step_ms() - 1);
        return Err(ReplayError::Window(format!(
            "the streams keep events only from {}; the earliest replay start is {}",
            fmt_ms(covered),
            fmt_ms(earliest)
        )));
    }
    let settled = now_ms - settle.as_millis() as i64;
    if floor > settled {
        return Err(ReplayError::Window(format!(
            "buckets before {} may still receive back-dated events (ingest accepts events {} h old), so they \
             cannot be carried over; replay from {} or earlier, or from the start of the streams",
            fmt_ms(floor),
            settle.as_secs() / 3600,
            fmt_ms(day_floor(settled))
        )));
    }
    Ok(Some(floor))
}

/// Stream position a group starts at so that it reads entries from `floor -
/// margin` on (`XGROUP CREATE` takes the last id *already* read).
fn start_id(floor: Option<i64>) -> String {
    match floor {
        Some(f) if f - START_MARGIN_MS > 0 => format!("{}-{}", f - START_MARGIN_MS - 1, u64::MAX),
        _ => "0".into(),
    }
}

/// Holds the replay lock, renewing it until dropped.
struct Lock {
    stop: CancellationToken,
}

impl Lock {
    async fn take(conn: &mut RedisConn, holder: &str) -> Result<Lock, ReplayError> {
        let got: Option<String> = redis::cmd("SET")
            .arg(replay_lock_key())
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64)
            .query_async(conn)
            .await?;
        if got.is_none() {
            let by: Option<String> = redis::cmd("GET").arg(replay_lock_key()).query_async(conn).await?;
            return Err(ReplayError::Busy(by.unwrap_or_default()));
        }
        let stop = CancellationToken::new();
        let (mut c, s, holder) = (conn.clone(), stop.clone(), holder.to_owned());
        tokio::spawn(async move {
            // Renew and finally release the lock only while it is ours.
            let renew = redis::Script::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0",
            );
            loop {
                tokio::select! {
                    _ = s.cancelled() => break,
                    _ = tokio::time::sleep(LOCK_TTL / 4) => {}
                }
                let _: redis::RedisResult<i64> = renew
                    .key(replay_lock_key())
                    .arg(&holder)
                    .arg(LOCK_TTL.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await;
            }
            let _: redis::RedisResult<i64> = RELEASE.key(replay_lock_key()).arg(&holder).invoke_async(&mut c).await;
        });
        Ok(Lock { stop })
    }
}

/// Delete the lock if it is still ours.
static RELEASE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});

impl Lock {
    /// Release now (the renewer's own release may not run before the
    /// process exits).
    async fn release(self, conn: &mut RedisConn, holder: &str) -> redis::RedisResult<()> {
        self.stop.cancel();
        let _: i64 = RELEASE.key(replay_lock_key()).arg(holder).invoke_async(conn).await?;
        Ok(())
    }

    /// Whether the lock still names `holder`.
    async fn held(&self, conn: &mut RedisConn, holder: &str) -> redis::RedisResult<bool> {
        let by: Option<String> = redis::cmd("GET").arg(replay_lock_key()).query_async(conn).await?;
        Ok(by.as_deref() == Some(holder))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A version number never handed out before, above the active one.
async fn next_version(conn: &mut RedisConn, active: Keyspace) -> redis::RedisResult<Keyspace> {
    let _: Option<String> = redis::cmd("SET")
        .arg(keyspace_seq_key())
        .arg(active.version)
        .arg("NX")
        .query_async(conn)
        .await?;
    loop {
        let v: u32 = redis::cmd("INCR").arg(keyspace_seq_key()).query_async(conn).await?;
        if v > active.version {
            return Ok(Keyspace::new(v));
        }
    }
}

/// Per shard: how far the group is behind the stream's newest entry (ms)
/// and how many entries it holds pending.
async fn behind(conn: &mut RedisConn, ks: Keyspace) -> redis::RedisResult<Vec<(u64, u64)>> {
    let group = ks.group();
    let mut out = Vec::new();
    for shard in Shard::all() {
        let stream = shard.stream_key();
        let info: Value = redis::cmd("XINFO").arg("STREAM").arg(&stream).query_async(conn).await?;
        let last = InfoRecord::new(info)
            .get::<String>("last-generated-id")
            .unwrap_or_default();
        let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(conn).await?;
        let ms = |id: &str| parse_stream_id(id).map_or(0, |(ms, _)| ms);
        for g in groups.into_iter().map(InfoRecord::new) {
            if g.get::<String>("name").as_deref() == Some(group.as_str()) {
                let delivered = g.get::<String>("last-delivered-id").unwrap_or_default();
                let lag_ms = if delivered == last {
                    0
                } else {
                    ms(&last).saturating_sub(ms(&delivered)).max(1)
                };
                out.push((lag_ms, g.get("pending").unwrap_or(0)));
            }
        }
    }
    Ok(out)
}

async fn caught_up(conn: &mut RedisConn, ks: Keyspace, batch: usize) -> redis::RedisResult<bool> {
    let shards = behind(conn, ks).await?;
    Ok(shards.len() == Shard::all().count()
        && shards
            .iter()
            .all(|&(lag_ms, pending)| lag_ms <= CAUGHT_UP_MS && pending <= batch as u64 * 2))
}

async fn applied_events(conn: &mut RedisConn, ks: Keyspace) -> redis::RedisResult<u64> {
    let mut n = 0;
    for shard in Shard::all() {
        let v: Option<u64> = redis::cmd("HGET")
            .arg(ks.applied_key(shard))
            .arg("events")
            .query_async(conn)
            .await?;
        n += v.unwrap_or(0);
    }
    Ok(n)
}

/// Keep the earlier first and the later last event time of two spans.
const MERGE_SPAN: &str = r"
for _, f in ipairs({'first_ms', 'last_ms'}) do
  local old = tonumber(redis.call('HGET', KEYS[1], f))
  local new = tonumber(redis.call('HGET', KEYS[2], f))
  if old and (not new or (f == 'first_ms' and old < new) or (f == 'last_ms' and old > new)) then
    redis.call('HSET', KEYS[2], f, old)
  end
end
return 1";

/// Copy the buckets of `old` before `floor` into `new`, and merge the spans.
async fn carry_over(conn: &mut RedisConn, old: Keyspace, new: Keyspace, floor: i64) -> Result<u64, ReplayError> {
    let merge = redis::Script::new(MERGE_SPAN);
    let mut carried = 0;
    for key in scan_keys(conn, &old.pattern()).await? {
        let Some(to) = old.rename(&key, new) else {
            continue;
        };
        if is_span_key(&key) {
            let _: i64 = merge.key(&key).key(&to).invoke_async(conn).await?;
        } else if bucket_of_key(&key).is_some_and(|b| b < floor) {
            let copied: i64 = redis::cmd("COPY").arg(&key).arg(&to).query_async(conn).await?;
            carried += copied as u64;
        }
    }
    Ok(carried)
}

/// Remove a version: its consumer groups first (a late batch then fails
/// instead of writing), then its keys and rules. Returns the keys removed.
pub async fn retire(conn: &mut RedisConn, ks: Keyspace) -> Result<u64, ReplayError> {
    for shard in Shard::all() {
        let r: redis::RedisResult<i64> = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(shard.stream_key())
            .arg(ks.group())
            .query_async(conn)
            .await;
        if let Err(e) = r
            && !e.to_string().contains("no such key")
        {
            return Err(e.into());
        }
    }
    let keys = scan_keys(conn, &ks.pattern()).await?;
    for key in &keys {
        let _: i64 = redis::cmd("UNLINK").arg(key).query_async(conn).await?;
    }
    let _: i64 = redis::cmd("DEL").arg(ks.rules_key()).query_async(conn).await?;
    Ok(keys.len() as u64)
}

/// Consumer groups on `shard` of versions older than `active`, or newer
/// ones no replay is building (a crashed replay's); destroyed.
pub async fn remove_stale_groups(
    conn: &mut RedisConn,
    shard: Shard,
    active: Keyspace,
) -> redis::RedisResult<Vec<String>> {
    let stream = shard.stream_key();
    let groups: Vec<Value> = match redis::cmd("XINFO").arg("GROUPS").arg(&stream).query_async(conn).await {
        Ok(g) => g,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let replaying: bool = redis::cmd("EXISTS").arg(replay_lock_key()).query_async(conn).await?;
    let mut gone = Vec::new();
    for name in groups
        .into_iter()
        .filter_map(|g| InfoRecord::new(g).get::<String>("name"))
    {
        let Some(ks) = Keyspace::of_group(&name) else {
            continue;
        };
        if ks.version < active.version || (ks.version > active.version && !replaying) {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(&stream)
                .arg(&name)
                .query_async(conn)
                .await?;
            gone.push(name);
        }
    }
    Ok(gone)
}

/// Versions a replay started but never switched to (their rules remain).
async fn abandoned(conn: &mut RedisConn, active: Keyspace) -> Result<Vec<Keyspace>, ReplayError> {
    let keys = scan_keys(conn, &rules_pattern()).await?;
    Ok(keys
        .iter()
        .filter_map(|k| Keyspace::of_rules_key(k))
        .filter(|ks| ks.version != active.version)
        .collect())
}

/// Run a replay to its switch. `on_progress` is called a few times a second
/// while consuming; `shutdown` stops it (what was built is removed).
pub async fn replay(
    conn: &mut RedisConn,
    opts: ReplayOptions,
    on_progress: impl Fn(ReplayProgress),
    shutdown: CancellationToken,
) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    // Refuse bad rules before anything is locked or written.
    Rules::new(RuleSpec {
        exclude_paths: opts.exclude_paths.clone().unwrap_or_default(),
        floor_ms: None,
    })?;
    let holder = format!("replay-{}", crate::default_consumer_name());
    let lock = Lock::take(conn, &holder).await?;
    // Whatever happens, the lock is released before returning (a dropped
    // lock's own release might not run before the process exits).
    let result = replay_locked(conn, opts, &on_progress, shutdown, &lock, &holder, started).await;
    lock.release(conn, &holder).await?;
    result
}

async fn replay_locked(
    conn: &mut RedisConn,
    opts: ReplayOptions,
    on_progress: &impl Fn(ReplayProgress),
    shutdown: CancellationToken,
    lock: &Lock,
    holder: &str,
    started: Instant,
) -> Result<ReplayReport, ReplayError> {
    let old = active_keyspace(conn).await?;
    let old_rules = Rules::load(conn, old).await?;
    let spans = stream_spans(conn).await?;
    let floor = choose_floor(opts.from, &spans, chrono::Utc::now().timestamp_millis(), opts.settle)?;
    let rules = Rules::new(RuleSpec {
        exclude_paths: opts
            .exclude_paths
            .clone()
            .unwrap_or_else(|| old_rules.spec().exclude_paths.clone()),
        floor_ms: floor,
    })?;
    for ks in abandoned(conn, old).await? {
        let removed = retire(conn, ks).await?;
        tracing::info!(
            version = ks.version,
            keys = removed,
            "removed an abandoned replay's keyspace"
        );
    }
    let new = next_version(conn, old).await?;
    rules.save(conn, new).await?;
    let start = start_id(floor);
    for shard in Shard::all() {
        let _: Value = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(shard.stream_key())
            .arg(new.group())
            .arg(&start)
            .arg("MKSTREAM")
            .query_async(conn)
            .await?;
    }
    tracing::info!(old = old.version, new = new.version, start = %start, rules = ?rules.spec(), "replay started");
    let total: u64 = spans.iter().map(|s| s.length).sum();
    let mut copts = opts.consumer.clone();
    copts.consumer = holder.to_owned();
    copts.rules = Arc::new(rules.clone());
    let batch = copts.batch;
    let epoch = shutdown.child_token();
    let tasks: Vec<_> = Shard::all()
        .map(|shard| tokio::spawn(run_shard(conn.clone(), new, shard, copts.clone(), epoch.clone())))
        .collect();
    let report_progress = |events: u64| {
        on_progress(ReplayProgress {
            events,
            total: total.max(events),
        })
    };
    // Consume until caught up (or stopped).
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        report_progress(applied_events(conn, new).await?);
        if !lock.held(conn, holder).await? {
            // The lock expired (Redis unreachable for a minute): the
            // streamers may already have removed this version's groups.
            epoch.cancel();
            for t in tasks {
                let _ = t.await;
            }
            retire(conn, new).await?;
            return Err(ReplayError::LockLost(new.version));
        }
        if caught_up(conn, new, batch).await? {
            break;
        }
    }
    if shutdown.is_cancelled() {
        epoch.cancel();
        for t in tasks {
            let _ = t.await;
        }
        retire(conn, new).await?;
        return Err(ReplayError::Cancelled(new.version));
    }
    let carried = match floor {
        Some(f) => carry_over(conn, old, new, f).await?,
        None => 0,
    };
    let () = redis::cmd("SET")
        .arg(keyspace_key())
        .arg(new.version)
        .query_async(conn)
        .await?;
    tracing::info!(
        old = old.version,
        new = new.version,
        carried,
        "switched the active keyspace"
    );
    // The streamers follow within a poll; keep consuming meanwhile, so the
    // new version stays fresh even when no streamer is running.
    let follow = Instant::now();
    while follow.elapsed() < crate::KEYSPACE_POLL * 3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    epoch.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let events = applied_events(conn, new).await?;
    report_progress(events);
    for shard in Shard::all() {
        let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(shard.stream_key())
            .arg(new.group())
            .arg(holder)
            .query_async(conn)
            .await;
    }
    let removed = retire(conn, old).await?;
    Ok(ReplayReport {
        old,
        new,
        rules: rules.spec().clone(),
        events,
        carried,
        removed,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn span(trimmed: bool, first_ms: u64) -> StreamSpan {
        StreamSpan {
            trimmed,
            first_ms: Some(first_ms),
            length: 1,
        }
    }

    #[test]
    fn untrimmed_streams_replay_everything() {
        let settle = Duration::from_secs(72 * 3600);
        assert_eq!(
            choose_floor(None, &[span(false, 5 * DAY as u64)], 10 * DAY, settle).unwrap(),
            None
        );
        assert_eq!(start_id(None), "0");
    }

    #[test]
    fn trimmed_streams_start_at_the_first_whole_day() {
        let settle = Duration::from_secs(72 * 3600);
        let spans = [span(true, (2 * DAY + 5) as u64), span(false, 0)];
        assert_eq!(choose_floor(None, &spans, 10 * DAY, settle).unwrap(), Some(3 * DAY));
        assert_eq!(
            start_id(Some(3 * DAY)),
            format!("{}-{}", 3 * DAY - START_MARGIN_MS - 1, u64::MAX)
        );
        // --from inside the retained window, rounded down to its midnight.
        assert_eq!(
            choose_floor(Some(ReplayFrom::Time(4 * DAY + 7)), &spans, 10 * DAY, settle).unwrap(),
            Some(4 * DAY)
        );
        // Before what the streams keep: refused with the earliest start.
        let err = choose_floor(Some(ReplayFrom::Time(2 * DAY)), &spans, 10 * DAY, settle).unwrap_err();
        assert!(err.to_string().contains("1970-01-04 00:00 UTC"), "{err}");
    }

    #[test]
    fn buckets_that_may_still_change_are_not_carried() {
        let settle = Duration::from_secs(72 * 3600);
        let err = choose_floor(Some(ReplayFrom::Time(9 * DAY)), &[span(false, 0)], 10 * DAY, settle).unwrap_err();
        assert!(err.to_string().contains("may still receive"), "{err}");
        assert!(choose_floor(Some(ReplayFrom::Time(7 * DAY)), &[span(false, 0)], 10 * DAY, settle).is_ok());
    }

    #[test]
    fn from_parses_stream_ids() {
        assert_eq!(
            "1700000000000-3".parse::<ReplayFrom>(),
            Ok(ReplayFrom::Id(1_700_000_000_000, 3))
        );
        assert!("yesterday".parse::<ReplayFrom>().is_err());
    }
}
