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
//!
//! The loop is a two-stage pipeline, so that the streamer's folding and
//! Redis's apply script overlap rather than take turns (which matters most
//! when one shard is left to drain alone): the read of the next batch is
//! sent ahead of the current batch's apply call, so its entries come back
//! while the script runs and are folded meanwhile; the next batch's session
//! states are then read behind that call (Redis runs one connection's
//! commands in order), so they include its merges. A batch whose call did
//! not settle it (a session conflict, entries claimed elsewhere, an error)
//! is applied again by the serial path, [`process`], and the next batch's
//! states are read afresh after it.

use crate::aggregate::{Deltas, Retention, aggregate};
use crate::apply::{self, ApplyOutcome, Attempt, Batch, SessionStates, apply_batch};
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
use std::future::Future;
use std::pin::Pin;
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
    // Calls are sent by hash before the previous one is answered.
    if let Err(e) = apply::load_script(&mut conn).await {
        tracing::warn!(shard = %shard, error = %e, "cannot load the apply script; calls will load it");
    }
    // The batch whose call goes out with the next read.
    let mut ready: Option<Ready> = None;
    while !shutdown.is_cancelled() {
        if last_claim.elapsed() >= opts.claim_every {
            last_claim = Instant::now();
            if let Some(batch) = ready.take() {
                let applying = batch.send(&conn, ks, shard, &opts).await;
                finish(&mut conn, ks, shard, &opts, &mut caches, Some(applying), &shutdown).await;
            }
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
        // The next batch's read goes out ahead of the current batch's call.
        let read = {
            let cmd = read_cmd(&group, &opts.consumer, entry_size.count_for(opts.batch), &stream);
            let mut conn = conn.clone();
            Call::send(async move { cmd.query_async::<Value>(&mut conn).await }).await
        };
        let applying = match ready.take() {
            Some(batch) => Some(batch.send(&conn, ks, shard, &opts).await),
            None => None,
        };
        let entries = match read.wait().await {
            Ok(reply) => entries_of_read(reply).into_iter().map(Entry::of).collect::<Vec<_>>(),
            Err(e) => {
                finish(&mut conn, ks, shard, &opts, &mut caches, applying, &shutdown).await;
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
            finish(&mut conn, ks, shard, &opts, &mut caches, applying, &shutdown).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(idle) => {}
            }
            idle = (idle * 2).min(opts.max_idle_poll);
            continue;
        }
        idle = min_poll;
        entry_size.observe(&entries);
        // Folded while Redis runs the call in flight; its states read behind it.
        let folded = Folded::of(entries, ks, &opts, &mut caches);
        let keys = apply::session_keys(ks, &folded.deltas);
        let states = Call::send(read_states_owned(conn.clone(), keys)).await;
        let settled = finish(&mut conn, ks, shard, &opts, &mut caches, applying, &shutdown).await;
        let (keys, states) = states.wait().await;
        // A batch applied again after its call read sessions after this
        // read: read them again rather than conflict.
        let states = match states {
            Ok(states) if settled => Ok(states),
            _ => apply::read_states_of(&mut conn, &keys).await,
        };
        match states {
            Ok(states) => {
                ready = Some(Ready {
                    folded,
                    states: SessionStates { keys, states },
                })
            }
            Err(e) => {
                tracing::warn!(shard = %shard, error = %e, "reading session states failed");
                process(&mut conn, ks, shard, &opts, &mut caches, folded.entries, &shutdown).await;
            }
        }
    }
    // Nothing this consumer read is left pending for a successor.
    if let Some(batch) = ready.take() {
        let applying = batch.send(&conn, ks, shard, &opts).await;
        finish(&mut conn, ks, shard, &opts, &mut caches, Some(applying), &shutdown).await;
    }
}

/// `XREADGROUP` of up to `count` new entries for `consumer`, not blocking.
fn read_cmd(group: &str, consumer: &str, count: usize, stream: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(">");
    cmd
}

/// [`apply::read_states_of`] on a connection and keys of its own, so that
/// the read can be in flight while the loop goes on; the keys come back
/// with the states.
async fn read_states_owned(
    mut conn: RedisConn,
    keys: Vec<String>,
) -> (Vec<String>, redis::RedisResult<Vec<Option<Vec<u8>>>>) {
    let states = apply::read_states_of(&mut conn, &keys).await;
    (keys, states)
}

/// A Redis call handed to the connection but maybe not answered yet.
///
/// The first poll of a call on the multiplexed (or cluster) connection
/// queues it there, so calls sent one after another run in that order; the
/// answer is awaited later.
enum Call<T> {
    Sent(Pin<Box<dyn Future<Output = T> + Send>>),
    Done(T),
}

impl<T> Call<T> {
    async fn send(call: impl Future<Output = T> + Send + 'static) -> Call<T> {
        let mut call = Box::pin(call);
        match futures::poll!(call.as_mut()) {
            std::task::Poll::Ready(answer) => Call::Done(answer),
            std::task::Poll::Pending => Call::Sent(call),
        }
    }

    async fn wait(self) -> T {
        match self {
            Call::Sent(call) => call.await,
            Call::Done(answer) => answer,
        }
    }
}

/// A batch read, decoded and pre-aggregated, with what the caches took out
/// of it (recorded once it is applied).
struct Folded {
    /// Its entries, in stream order.
    entries: Vec<Entry>,
    ids: Vec<String>,
    events: usize,
    deltas: Deltas,
    members_added: Vec<u64>,
    lifetimes_set: Vec<String>,
}

impl Folded {
    fn of(mut entries: Vec<Entry>, ks: Keyspace, opts: &ConsumerOptions, caches: &mut Caches) -> Folded {
        entries.sort_by_key(|e| parse_stream_id(&e.id).unwrap_or_default());
        let ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        let events: usize = entries.iter().map(|e| e.events.len()).sum();
        let counted = entries.iter().flat_map(|e| &e.events).filter(|e| opts.rules.admits(e));
        let mut deltas = aggregate(counted, ks, opts.retention);
        let members_added = caches.members.strip(&mut deltas);
        let lifetimes_set = caches.ttl.strip(&mut deltas);
        Folded {
            entries,
            ids,
            events,
            deltas,
            members_added,
            lifetimes_set,
        }
    }

    /// What the apply call needs of it.
    fn batch(&self) -> Batch<'_> {
        Batch {
            ids: &self.ids,
            events: self.events,
            deltas: &self.deltas,
        }
    }

    /// Count an applied batch and remember what it sent.
    fn applied(self, caches: &mut Caches, started: Instant) {
        caches.ttl.record(self.lifetimes_set);
        caches.members.record(self.members_added);
        metrics::counter!("tally_streamer_events_applied_total").increment(self.events as u64);
        metrics::histogram!("tally_streamer_apply_seconds").record(started.elapsed().as_secs_f64());
    }
}

/// A folded batch with its sessions' stored states: ready for its call.
struct Ready {
    folded: Folded,
    states: SessionStates,
}

/// A batch whose apply call is in flight, behind its sketch members.
struct Applying {
    folded: Folded,
    call: Call<redis::RedisResult<Value>>,
    started: Instant,
}

impl Ready {
    /// Hand the batch's sketch members and then its call to the connection,
    /// as one pipeline: one request, written whole, so Redis runs the adds
    /// before the call even when the connection is being re-established
    /// (two requests sent one after the other could then be reordered, and
    /// a crash right after the call would leave an acknowledged batch
    /// without its members).
    async fn send(self, conn: &RedisConn, ks: Keyspace, shard: Shard, opts: &ConsumerOptions) -> Applying {
        let Ready { folded, states } = self;
        let started = Instant::now();
        let call = match apply::prepare_call(ks, shard, &opts.consumer, folded.batch(), &states, opts.retention) {
            Ok(inv) => {
                let mut pipe = apply::sketch_adds(&folded.deltas).unwrap_or_else(redis::pipe);
                pipe.invoke_script(&inv);
                let mut conn = conn.clone();
                Call::send(async move {
                    // The adds are ignored: the one reply is the call's; a
                    // refused add fails the whole request.
                    let mut replies: Vec<Value> = pipe.query_async(&mut conn).await?;
                    replies.pop().ok_or_else(|| {
                        redis::RedisError::from((redis::ErrorKind::Client, "apply pipeline without a reply"))
                    })
                })
                .await
            }
            Err(e) => Call::Done(Err(e)),
        };
        Applying { folded, call, started }
    }
}

/// Wait for the call in flight, if any; a batch its call did not settle is
/// applied by [`process`]. True if nothing was applied again (so reads sent
/// meanwhile still hold).
async fn finish(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    opts: &ConsumerOptions,
    caches: &mut Caches,
    applying: Option<Applying>,
    shutdown: &CancellationToken,
) -> bool {
    let Some(Applying { folded, call, started }) = applying else {
        return true;
    };
    // Members that did not go in make the batch unsettled even if its call
    // went through: the serial path sends them again.
    match call.wait().await.and_then(apply::attempt_of) {
        Ok(Attempt::Done(ApplyOutcome::Applied(_))) => {
            folded.applied(caches, started);
            true
        }
        Ok(Attempt::Done(ApplyOutcome::NotPending)) => {
            metrics::counter!("tally_streamer_batches_skipped_total").increment(1);
            true
        }
        other => {
            if matches!(other, Ok(Attempt::Conflict)) {
                metrics::counter!("tally_streamer_session_conflicts_total").increment(1);
            }
            process(conn, ks, shard, opts, caches, folded.entries, shutdown).await;
            false
        }
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
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(2));
    loop {
        if entries.is_empty() {
            return;
        }
        let folded = Folded::of(entries, ks, opts, caches);
        let started = Instant::now();
        let applied = apply_batch(conn, ks, shard, &opts.consumer, folded.batch(), opts.retention).await;
        match applied {
            Ok(ApplyOutcome::Applied(_)) => {
                folded.applied(caches, started);
                return;
            }
            Ok(ApplyOutcome::NotPending) => {
                metrics::counter!("tally_streamer_batches_skipped_total").increment(1);
                return;
            }
            Ok(ApplyOutcome::Partial(owned)) => {
                let owned: HashSet<String> = owned.into_iter().collect();
                tracing::info!(shard = %shard, kept = owned.len(), of = folded.entries.len(), "part of the batch was claimed elsewhere");
                entries = folded.entries;
                entries.retain(|e| owned.contains(&e.id));
            }
            Err(e) if e.code() == Some("NOGROUP") => {
                // The group is gone (its keyspace retired): nothing to apply to.
                tracing::info!(shard = %shard, error = %e, "group gone; batch dropped with its keyspace");
                return;
            }
            Err(e) => {
                metrics::counter!("tally_streamer_apply_errors_total").increment(1);
                tracing::warn!(shard = %shard, error = %e, entries = folded.entries.len(), events = folded.events, "apply failed; retrying the same batch");
                if !backoff.wait(shutdown).await {
                    // Left pending: another consumer (or our successor) will
                    // reclaim and apply it.
                    return;
                }
                entries = folded.entries;
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
