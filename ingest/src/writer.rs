//! Group commit of events to the shard streams.
//!
//! Request handlers hand their event to one writer task over a bounded queue
//! and wait for its verdict. The writer takes whatever has queued up (never
//! waiting for more) and keeps it per shard stream (one Redis Cluster slot
//! each). Each shard has at most one append in flight, and what arrives
//! meanwhile waits for the next one, so a visitor's events are assigned
//! their sessions in the order received; shards are written in parallel. An
//! append sends one call of the append script (`append.lua`) per record
//! layout (packed or not, see `schema::event`) and visit window (30 minutes
//! of event time, see the script), one after the other; the script assigns
//! each event its session and `XADD`s the records, up to
//! [`WriterOptions::entry_events`] to an entry (see `schema::entry`). Under
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
use std::sync::LazyLock;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

static APPEND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("append.lua")));

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
    reply: oneshot::Sender<Result<(), WriteError>>,
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
    /// Most events in one append of a shard.
    pub max_batch: usize,
    /// Shards with an append in flight at once (one each at most).
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
            max_in_flight: schema::keys::SHARDS as usize,
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
            reply,
        };
        match self.tx.try_send(req) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(WriteError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(WriteError::Closed),
        }
        done.await.unwrap_or(Err(WriteError::Closed))
    }
}

async fn run(conn: RedisConn, mut rx: mpsc::Receiver<WriteRequest>, opts: WriterOptions) {
    // Events taken from the queue, per shard, waiting for that shard's call
    // in flight (one per shard at a time, so that a visitor's events are
    // assigned their sessions in the order received); at most `queue` in
    // all, beyond which the queue fills and requests are refused (503).
    let mut waiting: HashMap<Shard, Vec<WriteRequest>> = HashMap::new();
    let mut waiting_events = 0;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut busy: HashMap<tokio::task::Id, Shard> = HashMap::new();
    let mut batch = Vec::with_capacity(opts.max_batch);
    let mut open = true;
    loop {
        // A call for every idle shard with events waiting.
        let idle: Vec<Shard> = waiting
            .keys()
            .filter(|s| !busy.values().any(|b| b == *s))
            .copied()
            .collect();
        for shard in idle {
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
            let (conn, entry_events) = (conn.clone(), opts.entry_events.max(1));
            let task = in_flight.spawn(write_shard(conn, shard, reqs, entry_events));
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
                for req in batch.drain(..) {
                    waiting.entry(req.shard).or_default().push(req);
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

/// Append `reqs` to `shard`'s stream: the events of each record layout
/// (packed or not) in calls of their own, one after the other.
async fn write_shard(conn: RedisConn, shard: Shard, reqs: Vec<WriteRequest>, entry_events: usize) {
    let (mut packed, mut full) = (Vec::with_capacity(reqs.len()), Vec::new());
    for req in reqs {
        let record = Record::of(&req.event);
        if record.packed {
            packed.push((req, record));
        } else {
            full.push((req, record));
        }
    }
    for group in [packed, full] {
        if !group.is_empty() {
            write_windows(conn.clone(), shard, group, entry_events).await;
        }
    }
}

/// The visit window of an event time: see `append.lua`.
fn visit_window(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(SESSION_TIMEOUT_MS)
}

/// Append `reqs` (records of one layout) to `shard`'s stream: one call per
/// visit window, one after the other in the order of the windows (live
/// traffic is in one window, or two at a boundary), so that a visit in one
/// window is stored before the events of the next look for it; within a
/// window, in the order received.
async fn write_windows(conn: RedisConn, shard: Shard, mut reqs: Vec<(WriteRequest, Record)>, entry_events: usize) {
    reqs.sort_by_key(|(r, _)| visit_window(r.event.ts_ms));
    let mut run: Vec<(WriteRequest, Record)> = Vec::with_capacity(reqs.len());
    for item in reqs {
        if let Some((first, _)) = run.first()
            && visit_window(first.event.ts_ms) != visit_window(item.0.event.ts_ms)
        {
            write_pipeline(conn.clone(), shard, std::mem::take(&mut run), entry_events).await;
        }
        run.push(item);
    }
    write_pipeline(conn, shard, run, entry_events).await;
}

/// Append `reqs` (records of one layout, events of one visit window) to
/// `shard`'s stream in one call, `entry_events` to an entry.
async fn write_pipeline(mut conn: RedisConn, shard: Shard, reqs: Vec<(WriteRequest, Record)>, entry_events: usize) {
    let (names, window): (&[&str], i64) = match reqs.first() {
        Some((r, record)) if record.packed => (&Event::packed_field_names(), visit_window(r.event.ts_ms)),
        Some((r, _)) => (&Event::field_names(), visit_window(r.event.ts_ms)),
        None => return,
    };
    let mut inv = APPEND.prepare_invoke();
    inv.key(shard.stream_key());
    for w in window - 1..=window + 1 {
        inv.key(shard.visits_key(w));
    }
    inv.arg(reqs.len())
        .arg(names.len())
        .arg(SESSION_TIMEOUT_MS)
        .arg(entry_events);
    // The field names once per call, then the visit fields in one run; per
    // event only the values the script does not set (the time and the
    // session, first and last).
    for name in names {
        inv.arg(*name);
    }
    for (r, _) in &reqs {
        inv.arg(visit_field(&r.event.site, r.event.visitor_id));
    }
    for (r, record) in &reqs {
        inv.arg(candidate_session(&r.event)).arg(r.event.ts_ms);
        for v in &record.values {
            inv.arg(v);
        }
    }
    let reqs: Vec<WriteRequest> = reqs.into_iter().map(|(r, _)| r).collect();
    let started = std::time::Instant::now();
    let result: Result<Vec<Value>, _> = inv.invoke_async(&mut conn).await;
    metrics::histogram!("tally_ingest_pipeline_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("tally_ingest_pipeline_events").record(reqs.len() as f64);
    let entries = reqs.len().div_ceil(entry_events);
    match result {
        Ok(ids) if ids.len() == entries => {
            let verdict = match ids
                .iter()
                .find(|id| !matches!(id, Value::BulkString(_) | Value::SimpleString(_)))
            {
                None => Ok(()),
                Some(other) => Err(WriteError::Unavailable(format!("unexpected XADD reply {other:?}"))),
            };
            for r in reqs {
                let _ = r.reply.send(verdict.clone());
            }
        }
        Ok(ids) => {
            let msg = format!(
                "append returned {} entry ids for {} events, {entries} expected",
                ids.len(),
                reqs.len()
            );
            for r in reqs {
                let _ = r.reply.send(Err(WriteError::Unavailable(msg.clone())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, shard = %shard, events = reqs.len(), "append failed");
            let msg = e.to_string();
            for r in reqs {
                let _ = r.reply.send(Err(WriteError::Unavailable(msg.clone())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::RedisServer;
    use schema::store::{ConnectOptions, RedisTarget};

    #[tokio::test]
    async fn events_queued_together_share_entries_in_their_order() {
        let redis = RedisServer::start_ephemeral().expect("redis-server must be installed");
        let conn = RedisConn::connect(&RedisTarget::parse(&redis.url()).unwrap(), ConnectOptions::default())
            .await
            .unwrap();
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
}
