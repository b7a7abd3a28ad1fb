//! Group commit of events to the shard streams.
//!
//! Request handlers hand their event to one writer task over a bounded queue
//! and wait for its verdict. The writer takes whatever has queued up (never
//! waiting for more) and keeps it per shard stream (one Redis Cluster slot
//! each). A shard's turn sends one call of the append script (`append.lua`)
//! per record layout (packed or not, see `schema::event`) and visit window
//! (30 minutes of event time, see the script); the script assigns each
//! event its session and `XADD`s the records, up to
//! [`WriterOptions::entry_events`] to an entry (see `schema::entry`).
//!
//! Order: a visitor's events must be assigned their sessions in the order
//! received. The writer hands each call to the connection itself, in order,
//! and Redis runs one connection's commands in order, so a shard can have
//! two turns in flight (one running, the next queued behind it) without
//! reordering; what arrives meanwhile gathers for the turn after. Under
//! load many requests share one round trip and one entry, which costs Redis
//! about a third less per event than an entry each (`bench/append_cost.py`);
//! when idle an event is written at once, so no request waits for a timer.
//! A handler answers 202 only after the call that holds its event came back.

use redis::{Script, Value};
use schema::event::SESSION_TIMEOUT_MS;
use schema::keys::visit_field;
use schema::store::RedisConn;
use schema::{Event, Shard};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// The append script; it is sent by its hash (`EVALSHA`) and loaded when
/// Redis does not have it.
const APPEND_SOURCE: &str = include_str!("append.lua");
static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(APPEND_SOURCE));

/// A fresh session id for an event that may start a session: a hash of the
/// visitor and the event time, positive as an `i64` (the record's type) and
/// never 0 (0 means "no session").
fn candidate_session(e: &Event) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in e.visitor_id.to_le_bytes().into_iter().chain(e.ts_ms.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ((h >> 1) as i64).max(1)
}

/// Why an event was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("ingest is shutting down")]
    Closed,
    #[error("ingest queue is full")]
    Overloaded,
}

struct WriteRequest {
    shard: Shard,
    event: Event,
    reply: Reply,
}

/// Where the outcome of one queued event goes.
enum Reply {
    /// A caller waiting for this event alone ([`EventWriter::write`]).
    One(oneshot::Sender<Result<(), WriteError>>),
    /// The event at this position of an [`EventWriter::write_many`] call.
    Part(Arc<ManyReply>, usize),
}

impl Reply {
    fn send(self, outcome: Result<(), WriteError>) {
        match self {
            Reply::One(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Part(many, i) => {
                let mut results = many.results.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some(slot) = results.get_mut(i) {
                    *slot = outcome;
                }
            }
        }
    }
}

/// The outcomes of a `write_many` call's events. They are sent to the
/// caller, all at once, when the last of its requests is answered or
/// dropped: one reply per call rather than a channel and a future per
/// event. An event whose request is dropped unanswered (the writer
/// stopped) keeps the outcome it starts with, `Closed`.
struct ManyReply {
    results: Mutex<Vec<Result<(), WriteError>>>,
    done: Option<oneshot::Sender<Vec<Result<(), WriteError>>>>,
}

impl Drop for ManyReply {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let results = self.results.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = tx.send(std::mem::take(results));
        }
    }
}

/// The stream record of an event: its layout (the field names are the same
/// for every event of one append call) and the values the append script
/// does not set itself (all but the first, the time, and the last, the
/// session).
struct Record {
    /// [`Event::to_packed_fields`] (what nearly every event is stored as),
    /// or [`Event::to_fields`] for an event with a value that cannot be
    /// packed.
    packed: bool,
    values: Vec<String>,
}

impl Record {
    fn of(e: &Event) -> Record {
        fn middle<const N: usize>(fields: [(&str, String); N]) -> Vec<String> {
            fields.into_iter().skip(1).take(N - 2).map(|(_, v)| v).collect()
        }
        match e.to_packed_fields() {
            Some(fields) => Record {
                packed: true,
                values: middle(fields),
            },
            None => Record {
                packed: false,
                values: middle(e.to_fields()),
            },
        }
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Queue capacity, and most events taken from it that wait for their
    /// shard; a full queue answers 503 rather than buffering without bound.
    pub queue: usize,
    /// Most events in one turn of a shard.
    pub max_batch: usize,
    /// Shard turns in flight at once (`SHARD_DEPTH` per shard at most).
    pub max_in_flight: usize,
    /// Most events in one stream entry.
    pub entry_events: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue: 16_384,
            max_batch: 512,
            // Every shard at once: a shard never waits for another's turn.
            max_in_flight: SHARD_DEPTH * schema::keys::SHARDS as usize,
            entry_events: 100,
        }
    }
}

/// Handle used by request handlers.
#[derive(Clone)]
pub struct EventWriter {
    tx: mpsc::Sender<WriteRequest>,
}

impl EventWriter {
    /// Start the writer task. It ends once every `EventWriter` clone is
    /// dropped and all queued events are written.
    pub fn spawn(conn: RedisConn, opts: WriterOptions) -> (EventWriter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(opts.queue);
        let task = tokio::spawn(run(conn, rx, opts));
        (EventWriter { tx }, task)
    }

    /// Append one event; resolves once Redis accepted it (or failed).
    pub async fn write(&self, event: Event) -> Result<(), WriteError> {
        let (reply, done) = oneshot::channel();
        let req = WriteRequest {
            shard: Shard::of_site(&event.site),
            event,
            reply: Reply::One(reply),
        };
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(WriteError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriteError::Closed),
        }
        done.await.unwrap_or(Err(WriteError::Closed))
    }

    /// Append events; resolves once Redis accepted or refused each, with
    /// their outcomes in order. The events are queued together, so they
    /// share group commits; an event that finds the queue full is refused
    /// alone (`Overloaded`).
    pub async fn write_many(&self, events: Vec<Event>) -> Vec<Result<(), WriteError>> {
        let n = events.len();
        let (tx, done) = oneshot::channel();
        let many = Arc::new(ManyReply {
            results: Mutex::new(vec![Err(WriteError::Closed); n]),
            done: Some(tx),
        });
        for (i, event) in events.into_iter().enumerate() {
            let req = WriteRequest {
                shard: Shard::of_site(&event.site),
                event,
                reply: Reply::Part(many.clone(), i),
            };
            match self.tx.try_send(req) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(req)) => req.reply.send(Err(WriteError::Overloaded)),
                Err(mpsc::error::TrySendError::Closed(req)) => req.reply.send(Err(WriteError::Closed)),
            }
        }
        drop(many);
        done.await.unwrap_or_else(|_| vec![Err(WriteError::Closed); n])
    }
}

async fn run(conn: RedisConn, mut rx: mpsc::Receiver<WriteRequest>, opts: WriterOptions) {
    // Events taken from the queue, per shard, waiting for a turn of their
    // shard; at most `queue` in all, beyond which the queue fills and
    // requests are refused (503).
    let mut waiting: HashMap<Shard, Vec<WriteRequest>> = HashMap::new();
    let mut waiting_events = 0;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    // The shard of each task in flight; a shard has at most SHARD_DEPTH.
    let mut busy: HashMap<tokio::task::Id, Shard> = HashMap::new();
    let mut batch = Vec::with_capacity(opts.max_batch);
    let mut open = true;
    loop {
        // Send what waits, for every shard with room.
        let ready: Vec<Shard> = waiting
            .keys()
            .filter(|s| busy.values().filter(|b| b == s).count() < SHARD_DEPTH)
            .copied()
            .collect();
        for shard in ready {
            if busy.len() >= opts.max_in_flight.max(1) {
                break;
            }
            let Some(mut reqs) = waiting.remove(&shard) else {
                continue;
            };
            if reqs.len() > opts.max_batch {
                waiting.insert(shard, reqs.split_off(opts.max_batch));
            }
            waiting_events -= reqs.len();
            // Each call is polled once here, which hands it to the
            // connection: calls go out in the order made, and Redis runs
            // one connection's commands in order.
            let mut sent = Vec::new();
            for append in appends(shard, reqs, opts.entry_events.max(1)) {
                let mut call = Box::pin(append.send(conn.clone()));
                if futures::poll!(call.as_mut()).is_pending() {
                    sent.push(call);
                }
            }
            let task = in_flight.spawn(async move {
                futures::future::join_all(sent).await;
            });
            busy.insert(task.id(), shard);
        }
        if !open && in_flight.is_empty() && waiting.is_empty() {
            return;
        }
        tokio::select! {
            n = rx.recv_many(&mut batch, opts.max_batch), if open && waiting_events < opts.queue => {
                if n == 0 {
                    // Queue closed: write what was taken, then return.
                    open = false;
                }
                waiting_events += batch.len();
                // Room for each shard's events at once: a request is a few
                // hundred bytes, and growing by doubling copied each about
                // once more (2 % of a batch event's instructions).
                let mut per_shard = [0usize; schema::keys::SHARDS as usize];
                for req in &batch {
                    if let Some(n) = per_shard.get_mut(usize::from(req.shard.0)) {
                        *n += 1;
                    }
                }
                for req in batch.drain(..) {
                    let queue = waiting.entry(req.shard).or_default();
                    if let Some(n) = per_shard.get_mut(usize::from(req.shard.0))
                        && *n > 0
                    {
                        queue.reserve(*n);
                        *n = 0;
                    }
                    queue.push(req);
                }
            }
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => {
                        tracing::error!(error = %e, "append task failed");
                        e.id()
                    }
                };
                busy.remove(&id);
            }
        }
    }
}

/// Turns of one shard in flight at once: while Redis runs one, the next is
/// already on its way (sent after it on the same connection, so run after
/// it), and what arrives meanwhile gathers for the one after.
const SHARD_DEPTH: usize = 2;

/// The visit window of an event time: see `append.lua`.
fn visit_window(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(SESSION_TIMEOUT_MS)
}

/// The append calls for `reqs` of `shard`, in the order to send them: one
/// per record layout (packed or not) and visit window, the windows in
/// ascending order (live traffic is in one window, or two at a boundary),
/// so that a visit in one window is stored before the events of the next
/// look for it; within a call, events in the order received.
fn appends(shard: Shard, reqs: Vec<WriteRequest>, entry_events: usize) -> Vec<Append> {
    // (unpacked layout, visit window) -> events, in the order first seen.
    type Group = ((bool, i64), Vec<(WriteRequest, Record)>);
    let mut groups: Vec<Group> = Vec::new();
    let turn = reqs.len();
    for req in reqs {
        let record = Record::of(&req.event);
        let key = (!record.packed, visit_window(req.event.ts_ms));
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push((req, record)),
            None => {
                // Nearly every turn is one group: the first gets room for
                // all the turn holds. Later ones (a backfill spread over
                // many windows) grow as they fill, so a turn never sets
                // aside room for its events many times over.
                let room = if groups.is_empty() { turn } else { 0 };
                let mut group = Vec::with_capacity(room);
                group.push((req, record));
                groups.push((key, group));
            }
        }
    }
    groups.sort_by_key(|(k, _)| *k);
    groups
        .into_iter()
        .map(|((_, window), group)| Append::new(shard, window, group, entry_events))
        .collect()
}

/// One call of the append script: events of one layout and visit window.
struct Append {
    shard: Shard,
    cmd: redis::Cmd,
    reqs: Vec<WriteRequest>,
    /// Stream entries the call makes.
    entries: usize,
}

impl Append {
    fn new(shard: Shard, window: i64, reqs: Vec<(WriteRequest, Record)>, entry_events: usize) -> Append {
        let names: &[&str] = match reqs.first() {
            Some((_, record)) if !record.packed => &Event::field_names(),
            _ => &Event::packed_field_names(),
        };
        // Sized for the whole call at once rather than grown by doubling:
        // per event a visit field (17 bytes and the site), a session
        // candidate and a time (at most 20 bytes each) and the record's
        // values; the rest is well under 512 bytes.
        let event_bytes: usize = reqs
            .iter()
            .map(|(r, record)| 57 + r.event.site.len() + record.values.iter().map(String::len).sum::<usize>())
            .sum();
        let per_event_args = 3 + reqs.first().map_or(0, |(_, record)| record.values.len());
        let mut cmd = redis::Cmd::with_capacity(12 + names.len() + reqs.len() * per_event_args, 512 + event_bytes);
        cmd.arg("EVALSHA");
        cmd.arg(APPEND.get_hash()).arg(4).arg(shard.stream_key());
        for w in window - 1..=window + 1 {
            cmd.arg(shard.visits_key(w));
        }
        cmd.arg(reqs.len())
            .arg(names.len())
            .arg(SESSION_TIMEOUT_MS)
            .arg(entry_events);
        // The field names once per call, then the visit fields in one run;
        // then each event's record in its stored order, with the event time
        // in the first value and the candidate session in the last (the
        // script stores the time relative to the entry id and the session
        // the event joins there).
        for name in names {
            cmd.arg(*name);
        }
        for (r, _) in &reqs {
            cmd.arg(visit_field(&r.event.site, r.event.visitor_id));
        }
        for (r, record) in &reqs {
            cmd.arg(r.event.ts_ms);
            for v in &record.values {
                cmd.arg(v);
            }
            cmd.arg(candidate_session(&r.event));
        }
        Append {
            shard,
            cmd,
            entries: reqs.len().div_ceil(entry_events),
            reqs: reqs.into_iter().map(|(r, _)| r).collect(),
        }
    }

    /// Run the call and answer its events' handlers. A Redis that lost the
    /// script (restarted, flushed) answers NOSCRIPT without running it; the
    /// script is loaded and the call sent again (behind any call sent
    /// meanwhile, which failed the same way unless another client loaded
    /// the script in between).
    async fn send(self, mut conn: RedisConn) {
        let started = std::time::Instant::now();
        let mut result: redis::RedisResult<Vec<Value>> = self.cmd.query_async(&mut conn).await;
        if matches!(&result, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)) {
            let loaded: redis::RedisResult<String> = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(APPEND_SOURCE)
                .query_async(&mut conn)
                .await;
            result = match loaded {
                Ok(_) => self.cmd.query_async(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        metrics::histogram!("tally_ingest_pipeline_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("tally_ingest_pipeline_events").record(self.reqs.len() as f64);
        let verdict = match result {
            Ok(ids) if ids.len() == self.entries => {
                match ids
                    .iter()
                    .find(|id| !matches!(id, Value::BulkString(_) | Value::SimpleString(_)))
                {
                    None => Ok(()),
                    Some(other) => Err(WriteError::Unavailable(format!("unexpected XADD reply {other:?}"))),
                }
            }
            Ok(ids) => Err(WriteError::Unavailable(format!(
                "append returned {} entry ids for {} events, {} expected",
                ids.len(),
                self.reqs.len(),
                self.entries
            ))),
            Err(e) => {
                tracing::warn!(error = %e, shard = %self.shard, events = self.reqs.len(), "append failed");
                Err(WriteError::Unavailable(e.to_string()))
            }
        };
        for r in self.reqs {
            r.reply.send(verdict.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::RedisServer;
    use schema::store::{ConnectOptions, RedisTarget};

    /// A private Redis (kept running while the first value lives) and a
    /// connection to it.
    async fn private_redis() -> (RedisServer, RedisConn) {
        let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
        let conn = RedisConn::connect(&RedisTarget::parse(&redis.url()).unwrap(), ConnectOptions::default())
            .await
            .unwrap();
        (redis, conn)
    }

    #[tokio::test]
    async fn events_queued_together_share_entries_in_their_order() {
        let (_redis, conn) = private_redis().await;
        let (writer, task) = EventWriter::spawn(conn.clone(), WriterOptions::default());
        let site = "entries.test";
        let now = chrono::Utc::now().timestamp_millis();
        // All of one visit window: the current one, or the one before when
        // now is within a second of a boundary.
        let base = now.min(visit_window(now) * SESSION_TIMEOUT_MS + SESSION_TIMEOUT_MS - 1_000);
        let sent: Vec<Event> = (0..250)
            .map(|i| Event::pageview(base - 250 + i, site, &format!("/p{i}"), 1 + (i as u64 % 7)))
            .collect();
        // On this single-threaded runtime every write is queued before the
        // writer task runs, so it takes all 250 at once.
        let results = futures::future::join_all(sent.iter().cloned().map(|e| writer.write(e))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        drop(writer);
        task.await.unwrap();

        let mut conn = conn;
        let entries = schema::entry::range(&mut conn, &Shard::of_site(site).stream_key(), "-", "+", 100)
            .await
            .unwrap();
        let sizes: Vec<usize> = entries.iter().map(|e| e.events.as_ref().unwrap().len()).collect();
        assert_eq!(sizes, [100, 100, 50], "at most WriterOptions::entry_events per entry");
        // Several records are stored by value after the field `#`.
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(Shard::of_site(site).stream_key())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(raw[0].1[0], ("#".to_owned(), "100".to_owned()));
        assert_eq!(raw[0].1.len(), 1 + 100 * 2, "four values per record, two to a pair");
        let stored: Vec<Event> = entries.into_iter().flat_map(|e| e.events.unwrap()).collect();
        for (s, e) in stored.iter().zip(&sent) {
            assert_eq!(s.url, e.url);
            assert_eq!(s.ts_ms, e.ts_ms, "{} keeps its time in an entry of several", s.url);
            assert_ne!(s.session_id, 0);
        }
        assert_eq!(stored.len(), sent.len());
        // One visitor, one visit: every event of visitor 3 has one session.
        let sessions: std::collections::HashSet<u64> = stored
            .iter()
            .filter(|e| e.visitor_id == 3)
            .map(|e| e.session_id)
            .collect();
        assert_eq!(sessions.len(), 1);
    }

    #[tokio::test]
    async fn a_batch_written_together_gets_each_outcome_in_its_place() {
        let (_redis, conn) = private_redis().await;
        // A queue of 4: on this single-threaded runtime the writer task does
        // not run while the batch is queued, so events 5 and 6 find it full.
        let opts = WriterOptions {
            queue: 4,
            ..WriterOptions::default()
        };
        let (writer, task) = EventWriter::spawn(conn.clone(), opts);
        let site = "many.test";
        let now = chrono::Utc::now().timestamp_millis();
        let sent: Vec<Event> = (0..6)
            .map(|i| Event::pageview(now - 6 + i, site, &format!("/m{i}"), 40 + i as u64))
            .collect();
        let results = writer.write_many(sent).await;
        assert_eq!(results.len(), 6);
        assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
        assert!(
            results[4..].iter().all(|r| matches!(r, Err(WriteError::Overloaded))),
            "{results:?}"
        );
        assert!(writer.write_many(Vec::new()).await.is_empty());
        drop(writer);
        task.await.unwrap();
        let mut conn = conn;
        let stored = schema::entry::range(&mut conn, &Shard::of_site(site).stream_key(), "-", "+", 100)
            .await
            .unwrap();
        let paths: Vec<String> = stored
            .into_iter()
            .flat_map(|e| e.events.unwrap())
            .map(|e| e.path().to_owned())
            .collect();
        assert_eq!(
            paths,
            ["/m0", "/m1", "/m2", "/m3"],
            "exactly the accepted events, in order"
        );
    }
}
