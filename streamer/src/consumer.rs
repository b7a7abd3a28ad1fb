//! The per-shard consume loop.
//!
//! One task per shard stream: read a batch for this consumer from the group
//! (`XREADGROUP ... >`), decode it, pre-aggregate it and apply it with the
//! exactly-once script; every few seconds also reclaim entries that another
//! consumer left pending too long (`XAUTOCLAIM`), which is how the work of a
//! crashed streamer is finished by the living ones. Reads do not block on the
//! server (a blocked read would stall the shared multiplexed connection and
//! cannot be routed on a cluster); an idle shard is polled with a short,
//! growing back-off instead.

use crate::aggregate::{Retention, aggregate};
use crate::apply::{ApplyOutcome, apply_batch};
use crate::member_cache::MemberCache;
use crate::rules::Rules;
use crate::ttl_cache::TtlCache;
use redis::Value;
use schema::entry::{StoredEntry, entries_of_autoclaim, entries_of_read};
use schema::keys::parse_stream_id;
use schema::ops::CancellationToken;
use schema::store::RedisConn;
use schema::{Event, Keyspace, Shard};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tuning of the consume loop.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// This process's consumer name in the group (unique per process).
    pub consumer: String,
    /// About how many events to read per batch (entries hold one or
    /// several; the read count follows the last read's events per entry).
    pub batch: usize,
    /// Entries pending longer than this for another consumer are reclaimed.
    pub claim_idle: Duration,
    /// How often to look for such entries.
    pub claim_every: Duration,
    /// Longest pause between polls of an idle shard.
    pub max_idle_poll: Duration,
    pub retention: Retention,
    /// The processing rules of the keyspace being built.
    pub rules: Arc<Rules>,
}

impl ConsumerOptions {
    pub fn new(consumer: String) -> Self {
        ConsumerOptions {
            consumer,
            batch: 1000,
            claim_idle: Duration::from_secs(30),
            claim_every: Duration::from_secs(5),
            max_idle_poll: Duration::from_millis(50),
            retention: Retention::default(),
            rules: Arc::new(Rules::default()),
        }
    }
}

/// Create the consumer group on a shard stream (and the stream), reading
/// from the beginning of the retained history.
pub async fn ensure_group(conn: &mut RedisConn, ks: Keyspace, shard: Shard) -> redis::RedisResult<()> {
    let r: redis::RedisResult<Value> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(shard.stream_key())
        .arg(ks.group())
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// A stream entry with its decoded events (none if it could not be
/// decoded).
struct Entry {
    id: String,
    events: Vec<Event>,
}

impl Entry {
    /// An undecodable entry is logged, counted and acknowledged without
    /// counting in the reports.
    fn of(stored: StoredEntry) -> Entry {
        let events = stored.events.unwrap_or_else(|err| {
            tracing::warn!(id = %stored.id, error = %err, "undecodable stream entry; acknowledging it without counting");
            metrics::counter!("tally_streamer_malformed_total").increment(1);
            Vec::new()
        });
        Entry { id: stored.id, events }
    }
}

/// How many entries to read for a batch of about `events` events, from the
/// events per entry of the last read (ingest writes one event per entry
/// when idle, up to a hundred under load).
#[derive(Debug)]
struct EntrySize {
    events_per_entry: f64,
}

impl EntrySize {
    fn count_for(&self, events: usize) -> usize {
        ((events as f64 / self.events_per_entry).ceil() as usize).clamp(1, events.max(1))
    }

    fn observe(&mut self, entries: &[Entry]) {
        if !entries.is_empty() {
            let events: usize = entries.iter().map(|e| e.events.len()).sum();
            self.events_per_entry = (events as f64 / entries.len() as f64).max(1.0);
        }
    }
}

/// Run the loop for one shard until `shutdown`; an in-progress batch is
/// finished first.
pub async fn run_shard(
    mut conn: RedisConn,
    ks: Keyspace,
    shard: Shard,
    opts: ConsumerOptions,
    shutdown: CancellationToken,
) {
    let stream = shard.stream_key();
    let group = ks.group();
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    while let Err(e) = ensure_group(&mut conn, ks, shard).await {
        tracing::warn!(shard = %shard, error = %e, "cannot create consumer group; retrying");
        if !backoff.wait(&shutdown).await {
            return;
        }
    }
    // What this loop did to sketches within the last 10 minutes (far below
    // the shortest lifetime they apply to, an hour), per shard: lifetimes
    // set, at most 50,000 keys (about 7 MB); members added, at most 2 x
    // 65,536 fingerprints (about 2.5 MB).
    let mut caches = Caches {
        ttl: TtlCache::new(Duration::from_secs(600), 50_000),
        members: MemberCache::new(Duration::from_secs(600), 65_536),
    };
    let min_poll = Duration::from_millis(1);
    let mut idle = min_poll;
    let mut last_claim = Instant::now();
    // Start small: a stream written under load holds up to a hundred
    // events per entry.
    let mut entry_size = EntrySize { events_per_entry: 16.0 };
    while !shutdown.is_cancelled() {
        if last_claim.elapsed() >= opts.claim_every {
            last_claim = Instant::now();
            match reclaim(&mut conn, &stream, &group, &opts).await {
                Ok(entries) if !entries.is_empty() => {
                    tracing::info!(shard = %shard, entries = entries.len(), "reclaimed entries of another consumer");
                    metrics::counter!("tally_streamer_reclaimed_total").increment(entries.len() as u64);
                    process(&mut conn, ks, shard, &opts, &mut caches, entries, &shutdown).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(shard = %shard, error = %e, "XAUTOCLAIM failed"),
            }
        }
        let read: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&group)
            .arg(&opts.consumer)
            .arg("COUNT")
            .arg(entry_size.count_for(opts.batch))
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut conn)
            .await;
        let entries = match read {
            Ok(reply) => entries_of_read(reply).into_iter().map(Entry::of).collect::<Vec<_>>(),
            Err(e) => {
                if e.code() == Some("NOGROUP") {
                    // The stream was deleted: recreate the active version's
                    // group. Any other version's group was removed on
                    // purpose (retired by a replay, or an abandoned
                    // replay's, whose keys already hold part of the stream):
                    // stop, never rebuild it from the start.
                    if !is_active(&mut conn, ks).await {
                        tracing::info!(shard = %shard, group = %group, "consumer group removed; shard loop ends");
                        return;
                    }
                    let _ = ensure_group(&mut conn, ks, shard).await;
                }
                tracing::warn!(shard = %shard, error = %e, "XREADGROUP failed");
                if !backoff.wait(&shutdown).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        if entries.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(opts.max_idle_poll);
            continue;
        }
        idle = min_poll;
        entry_size.observe(&entries);
        process(&mut conn, ks, shard, &opts, &mut caches, entries, &shutdown).await;
    }
}

async fn reclaim(
    conn: &mut RedisConn,
    stream: &str,
    group: &str,
    opts: &ConsumerOptions,
) -> redis::RedisResult<Vec<Entry>> {
    // Most passes find nothing to take over, and XAUTOCLAIM checks that each
    // pending entry it scans still exists in the stream (a seek into the
    // stream's listpacks): such passes were half of Redis's instructions in a
    // drain under callgrind. XPENDING with IDLE only walks the pending list,
    // so it is asked first.
    let idle: Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .arg("IDLE")
        .arg(opts.claim_idle.as_millis() as u64)
        .arg("-")
        .arg("+")
        .arg(1)
        .query_async(conn)
        .await?;
    if matches!(&idle, Value::Array(items) if items.is_empty()) {
        return Ok(Vec::new());
    }
    let mut out: Vec<Entry> = Vec::new();
    let mut events = 0;
    let mut cursor = "0-0".to_owned();
    // Bounded: at most 10 rounds per reclaim pass, about `batch` events in
    // all (an entry holds up to a hundred).
    for _ in 0..10 {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(group)
            .arg(&opts.consumer)
            .arg(opts.claim_idle.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg((opts.batch / 16).max(1))
            .query_async(conn)
            .await?;
        let (next, claimed) = entries_of_autoclaim(reply)
            .ok_or_else(|| redis::RedisError::from((redis::ErrorKind::Parse, "unexpected XAUTOCLAIM reply")))?;
        for entry in claimed.into_iter().map(Entry::of) {
            events += entry.events.len();
            out.push(entry);
        }
        cursor = next;
        if cursor == "0-0" || events >= opts.batch {
            break;
        }
    }
    Ok(out)
}

/// What a shard loop remembers of the batches it applied, to send less.
struct Caches {
    ttl: TtlCache,
    members: MemberCache,
}

/// Apply one batch exactly once, retrying calls of unknown outcome.
async fn process(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    opts: &ConsumerOptions,
    caches: &mut Caches,
    mut entries: Vec<Entry>,
    shutdown: &CancellationToken,
) {
    entries.sort_by_key(|e| parse_stream_id(&e.id).unwrap_or_default());
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(2));
    loop {
        if entries.is_empty() {
            return;
        }
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let events: usize = entries.iter().map(|e| e.events.len()).sum();
        let counted = entries.iter().flat_map(|e| &e.events).filter(|e| opts.rules.admits(e));
        let mut deltas = aggregate(counted, ks, opts.retention);
        let members_added = caches.members.strip(&mut deltas);
        let lifetimes_set = caches.ttl.strip(&mut deltas);
        let started = Instant::now();
        match apply_batch(conn, ks, shard, &opts.consumer, &ids, events, &deltas, opts.retention).await {
            Ok(ApplyOutcome::Applied(_)) => {
                caches.ttl.record(lifetimes_set);
                caches.members.record(members_added);
                metrics::counter!("tally_streamer_events_applied_total").increment(events as u64);
                metrics::histogram!("tally_streamer_apply_seconds").record(started.elapsed().as_secs_f64());
                return;
            }
            Ok(ApplyOutcome::NotPending) => {
                metrics::counter!("tally_streamer_batches_skipped_total").increment(1);
                return;
            }
            Ok(ApplyOutcome::Partial(owned)) => {
                let owned: HashSet<String> = owned.into_iter().collect();
                tracing::info!(shard = %shard, kept = owned.len(), of = entries.len(), "part of the batch was claimed elsewhere");
                entries.retain(|e| owned.contains(&e.id));
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // The group is gone (its keyspace retired): nothing to apply to.
                tracing::info!(shard = %shard, error = %e, "group gone; batch dropped with its keyspace");
                return;
            }
            Err(e) => {
                metrics::counter!("tally_streamer_apply_errors_total").increment(1);
                tracing::warn!(shard = %shard, error = %e, entries = entries.len(), events, "apply failed; retrying the same batch");
                if !backoff.wait(shutdown).await {
                    // Left pending: another consumer (or our successor) will
                    // reclaim and apply it.
                    return;
                }
            }
        }
    }
}

/// Whether `ks` is the active version (assumed so while Redis cannot say).
async fn is_active(conn: &mut RedisConn, ks: Keyspace) -> bool {
    match schema::store::active_keyspace(conn).await {
        Ok(active) => ks == active,
        Err(_) => true,
    }
}

/// Exponential back-off that gives up early on shutdown.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max, next: min }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleep; false if shutdown came first.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(events: usize) -> Entry {
        Entry {
            id: "1-0".into(),
            events: (0..events).map(|i| Event::pageview(i as i64, "a.io", "/", 1)).collect(),
        }
    }

    #[test]
    fn reads_are_sized_in_events_by_the_last_read() {
        let mut size = EntrySize { events_per_entry: 16.0 };
        assert_eq!(size.count_for(1000), 63);
        size.observe(&[entry(100), entry(100), entry(40)]);
        assert_eq!(size.count_for(1000), 13);
        size.observe(&[entry(1), entry(0)]);
        assert_eq!(size.count_for(1000), 1000, "undecodable entries count as one event");
        size.observe(&[]);
        assert_eq!(size.count_for(1000), 1000, "an empty read says nothing");
        assert_eq!(size.count_for(0), 1);
    }
}
