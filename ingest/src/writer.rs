//! Group commit of events to the shard streams.
//!
//! Request handlers hand their event to one writer task over a bounded queue
//! and wait for its verdict. The writer takes whatever has queued up (never
//! waiting for more), groups it by shard stream (one Redis Cluster slot
//! each) and record layout (packed or not, see `schema::event`), and sends
//! each group as one call of the append script (`append.lua`),
//! which assigns each event its session and `XADD`s it, with several calls
//! in flight. Under load many requests share one round trip; when idle an
//! event is written at once, so no request waits for a timer. A handler
//! answers 202 only after its own entry id came back.

use redis::{Script, Value};
use schema::event::SESSION_TIMEOUT_MS;
use schema::keys::visit_key;
use schema::store::RedisConn;
use schema::{Event, Shard};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use tokio::sync::{Semaphore, mpsc, oneshot};
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

/// The stream record of an event: its field names (the same for every event
/// of one append call) and values.
struct Record {
    /// [`Event::to_packed_fields`] (what nearly every event is stored as),
    /// or [`Event::to_fields`] for an event with a value that cannot be
    /// packed.
    packed: bool,
    values: Vec<String>,
}

impl Record {
    fn of(e: &Event) -> Record {
        match e.to_packed_fields() {
            Some(fields) => Record {
                packed: true,
                values: fields.into_iter().map(|(_, v)| v).collect(),
            },
            None => Record {
                packed: false,
                values: e.to_fields().into_iter().map(|(_, v)| v).collect(),
            },
        }
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Queue capacity; a full queue answers 503 rather than buffering without
    /// bound.
    pub queue: usize,
    /// Most events in one pipeline.
    pub max_batch: usize,
    /// Pipelines in flight at once.
    pub max_in_flight: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue: 16_384,
            max_batch: 512,
            max_in_flight: 8,
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
    let permits = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    let mut in_flight = JoinSet::new();
    let mut batch = Vec::with_capacity(opts.max_batch);
    while rx.recv_many(&mut batch, opts.max_batch).await > 0 {
        // One append call per shard and record layout.
        let mut by_shard: HashMap<(Shard, bool), Vec<(WriteRequest, Record)>> = HashMap::new();
        for req in batch.drain(..) {
            let record = Record::of(&req.event);
            by_shard
                .entry((req.shard, record.packed))
                .or_default()
                .push((req, record));
        }
        for ((shard, _), reqs) in by_shard {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let conn = conn.clone();
            in_flight.spawn(async move {
                write_pipeline(conn, shard, reqs).await;
                drop(permit);
            });
        }
        while in_flight.try_join_next().is_some() {}
    }
    // Queue closed: finish what is in flight before returning.
    while in_flight.join_next().await.is_some() {}
}

/// Append `reqs` (records of one layout) to `shard`'s stream in one call.
async fn write_pipeline(mut conn: RedisConn, shard: Shard, reqs: Vec<(WriteRequest, Record)>) {
    let names: &[&str] = match reqs.first() {
        Some((_, r)) if r.packed => &Event::packed_field_names(),
        Some(_) => &Event::field_names(),
        None => return,
    };
    let mut inv = APPEND.prepare_invoke();
    inv.key(shard.stream_key());
    inv.arg(reqs.len()).arg(names.len()).arg(SESSION_TIMEOUT_MS);
    // The field names once per call; per event only the values.
    for name in names {
        inv.arg(*name);
    }
    for (r, record) in &reqs {
        let e = &r.event;
        inv.key(visit_key(&e.site, e.visitor_id));
        inv.arg(candidate_session(e)).arg(e.ts_ms);
        for v in &record.values {
            inv.arg(v);
        }
    }
    let reqs: Vec<WriteRequest> = reqs.into_iter().map(|(r, _)| r).collect();
    let started = std::time::Instant::now();
    let result: Result<Vec<Value>, _> = inv.invoke_async(&mut conn).await;
    metrics::histogram!("tally_ingest_pipeline_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("tally_ingest_pipeline_events").record(reqs.len() as f64);
    match result {
        Ok(ids) if ids.len() == reqs.len() => {
            for (r, id) in reqs.into_iter().zip(ids) {
                let verdict = match id {
                    Value::BulkString(_) | Value::SimpleString(_) => Ok(()),
                    other => Err(WriteError::Unavailable(format!("unexpected XADD reply {other:?}"))),
                };
                let _ = r.reply.send(verdict);
            }
        }
        Ok(ids) => {
            let msg = format!("pipeline returned {} replies for {} events", ids.len(), reqs.len());
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
