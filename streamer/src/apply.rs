//! The exactly-once apply: one server-side script per batch.
//!
//! See `apply.lua` for the protocol. This module reads the stored facts of
//! the batch's sessions (one MGET), merges the batch's facts into them and
//! folds the change of each session's contribution into the batch's
//! counter deltas, so the script only compares states and writes merged
//! deltas: the per-session work runs here, on the streamer's cores, not on
//! Redis's one. The script refuses the call if a session state changed after
//! it was read (another consumer merged into it); the batch is then merged
//! again from fresh states. The script is idempotent with respect to the
//! pending-entries list, so a call whose outcome is unknown (timeout,
//! dropped connection) is simply sent again.
//!
//! The batch's own sketch members are the one delta that is idempotent (a
//! set union: adding a visitor again changes nothing), so they are not
//! arguments of the script but plain `PFADD`s sent ahead of it on the same
//! connection ([`sketch_adds`]): awaited before the call, or in one pipeline
//! with it (one request, which no reconnect can reorder). Redis runs a
//! connection's commands in order, so a script that acknowledges a batch
//! runs after its members are in; a batch sent again sends them again,
//! which is harmless. Through Lua each member cost Redis about 40 % more
//! (an argument table entry, a Lua string and a command argument made
//! again from it).

use crate::aggregate::{BucketCache, Delta, Deltas, Retention};
use crate::sessions::SessionFacts;
use redis::{Script, ScriptInvocation, Value};
use schema::Keyspace;
use schema::Shard;
use schema::store::RedisConn;
use std::collections::BTreeMap;
use std::sync::LazyLock;

static APPLY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("apply.lua")));

/// Session states read per MGET.
const STATES_PER_READ: usize = 500;

/// Merges of one batch retried after conflicts before the call fails (and
/// the consume loop's back-off takes over).
const MAX_CONFLICTS: usize = 64;

/// What the script did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// All entries were pending for us; deltas applied and entries acked.
    Applied(usize),
    /// None was pending for us: applied earlier, or claimed by another consumer.
    NotPending,
    /// Only these ids are still ours; re-aggregate them and call again.
    Partial(Vec<String>),
}

/// One call of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Done(ApplyOutcome),
    /// A session state differed from the one merged with; nothing written.
    Conflict,
}

/// The stored state of each session of a batch, as read before its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStates {
    /// The sessions' keys, in the order of `deltas.sessions` (built once
    /// for the read and the call).
    pub keys: Vec<String>,
    /// The stored facts under each key, None where there are none.
    pub states: Vec<Option<Vec<u8>>>,
}

/// The stored state of each session of `deltas`.
pub async fn read_states(conn: &mut RedisConn, ks: Keyspace, deltas: &Deltas) -> redis::RedisResult<SessionStates> {
    let keys = session_keys(ks, deltas);
    let states = read_states_of(conn, &keys).await?;
    Ok(SessionStates { keys, states })
}

/// The keys of the sessions of `deltas`, in their order.
pub fn session_keys(ks: Keyspace, deltas: &Deltas) -> Vec<String> {
    deltas
        .sessions
        .values()
        .map(|f| ks.session_key(&f.site, f.session_id))
        .collect()
}

/// The values under `keys`, in their order: one `MGET` per
/// [`STATES_PER_READ`] keys, all of them in one pipelined round trip.
pub async fn read_states_of(conn: &mut RedisConn, keys: &[String]) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for chunk in keys.chunks(STATES_PER_READ) {
        pipe.cmd("MGET").arg(chunk);
    }
    let reads: Vec<Vec<Option<Vec<u8>>>> = pipe.query_async(conn).await?;
    Ok(reads.into_iter().flatten().collect())
}

/// Load the apply script, so that calls sent by hash ahead of their
/// predecessor's reply are not refused (`NOSCRIPT`) and sent again.
pub async fn load_script(conn: &mut RedisConn) -> redis::RedisResult<()> {
    APPLY.prepare_invoke().load_async(conn).await.map(drop)
}

/// One batch of a shard's stream to apply.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Its entries' ids, ascending.
    pub ids: &'a [String],
    /// The events those entries hold.
    pub events: usize,
    /// Their pre-aggregated deltas.
    pub deltas: &'a Deltas,
}

/// Apply `batch` of `shard`'s stream, merging its sessions into their
/// stored facts.
pub async fn apply_batch(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    consumer: &str,
    batch: Batch<'_>,
    retention: Retention,
) -> redis::RedisResult<ApplyOutcome> {
    add_sketch_members(conn, batch.deltas).await?;
    for _ in 0..MAX_CONFLICTS {
        let states = read_states(conn, ks, batch.deltas).await?;
        let call = prepare_call(ks, shard, consumer, batch, &states, retention)?;
        match attempt_of(call.invoke_async(conn).await?)? {
            Attempt::Done(outcome) => return Ok(outcome),
            Attempt::Conflict => metrics::counter!("tally_streamer_session_conflicts_total").increment(1),
        }
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Client,
        "session states kept changing during the apply",
    )))
}

/// One attempt: the batch's sketch members, then its script call with the
/// session states `read` as read by [`read_states`].
pub async fn try_apply(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    consumer: &str,
    batch: Batch<'_>,
    read: &SessionStates,
    retention: Retention,
) -> redis::RedisResult<Attempt> {
    add_sketch_members(conn, batch.deltas).await?;
    let call = prepare_call(ks, shard, consumer, batch, read, retention)?;
    attempt_of(call.invoke_async(conn).await?)
}

/// Send [`sketch_adds`] of `deltas` and wait for them.
pub async fn add_sketch_members(conn: &mut RedisConn, deltas: &Deltas) -> redis::RedisResult<()> {
    match sketch_adds(deltas) {
        Some(adds) => adds.query_async(conn).await,
        None => Ok(()),
    }
}

/// The batch's own sketch members (its `Union` deltas) as `PFADD`s, at most
/// 500 members each, with the lifetimes due (`EXPIRE ... NX`, see
/// `ttl_cache`); None when it has none. They must reach Redis before the
/// batch's script call, on the same connection (see the module's doc). The
/// members that the script's session merges add (visitors per source of a
/// visit's start) stay in the script: they depend on the stored session
/// states it checks.
pub fn sketch_adds(deltas: &Deltas) -> Option<redis::Pipeline> {
    let mut pipe = redis::pipe();
    let mut any = false;
    for ((key, _), (delta, ttl)) in &deltas.ops {
        let Delta::Union(visitors) = delta else { continue };
        let members: Vec<[u8; 16]> = visitors.iter().map(|v| hex16(*v)).collect();
        for chunk in members.chunks(500) {
            pipe.cmd("PFADD").arg(key).ignore();
            for m in chunk {
                pipe.arg(&m[..]);
            }
            any = true;
        }
        if *ttl > 0 && !members.is_empty() {
            pipe.cmd("EXPIRE").arg(key).arg(*ttl).arg("NX").ignore();
        }
    }
    any.then_some(pipe)
}

/// The script call that applies `batch`, merged with the session states
/// `read`, ready to send: the consume loop sends it without waiting for it
/// (see `consumer.rs`); [`try_apply`] sends it and waits.
pub fn prepare_call(
    ks: Keyspace,
    shard: Shard,
    consumer: &str,
    batch: Batch<'_>,
    read: &SessionStates,
    retention: Retention,
) -> redis::RedisResult<ScriptInvocation<'static>> {
    let Batch { ids, events, deltas } = batch;
    let states = &read.states;
    if states.len() != deltas.sessions.len() || read.keys.len() != states.len() {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "one session state per session expected",
        )));
    }
    let mut olds = Vec::with_capacity(states.len());
    let mut news = Vec::with_capacity(states.len());
    let mut sessions = Vec::with_capacity(states.len());
    for ((facts, state), key) in deltas.sessions.values().zip(states).zip(&read.keys) {
        let old = state.as_deref().and_then(|bytes| {
            let decoded = std::str::from_utf8(bytes)
                .ok()
                .and_then(|s| SessionFacts::decode_state(&facts.site, facts.session_id, s));
            if decoded.is_none() {
                tracing::warn!(site = %facts.site, session = facts.session_id, "undecodable session state; the batch starts a new visit");
            }
            decoded
        });
        let new = match &old {
            Some(o) => {
                let mut n = o.clone();
                n.merge(facts);
                n
            }
            None => facts.clone(),
        };
        sessions.push((key, state.as_deref().unwrap_or_default(), new.encode_state()));
        olds.push(old);
        news.push(new);
    }
    let mut changes = Deltas::default();
    changes.replace_sessions(
        olds.iter().map(Option::as_ref).zip(&news),
        &mut BucketCache::new(ks),
        retention,
    );

    let mut inv = APPLY.prepare_invoke();
    inv.key(shard.stream_key()).key(ks.applied_key(shard));
    inv.arg(ks.group()).arg(consumer).arg(events).arg(ids.len());
    for id in ids {
        inv.arg(id);
    }
    inv.arg(sessions.len()).arg(retention.session_secs);
    for (key, expected, new) in &sessions {
        inv.key(key);
        inv.arg(*expected).arg(new);
    }
    let mut next_key = 3 + sessions.len();
    for ((key, kind), (delta, ttl)) in &deltas.ops {
        if matches!(delta, Delta::Union(_)) {
            // Sent ahead of the call (`sketch_adds`); the sessions' own
            // members for this key stay in `changes`.
            continue;
        }
        let combined = match (delta, changes.ops.remove(&(key.clone(), *kind))) {
            (Delta::Incr(a), Some((Delta::Incr(b), _))) => Some(Delta::Incr(sum(a, b))),
            _ => None,
        };
        if op(&mut inv, next_key, key, *kind, combined.as_ref().unwrap_or(delta), *ttl) {
            next_key += 1;
        }
    }
    for ((key, kind), (delta, ttl)) in &changes.ops {
        if op(&mut inv, next_key, key, *kind, delta, *ttl) {
            next_key += 1;
        }
    }
    Ok(inv)
}

/// What the script's reply says.
pub fn attempt_of(reply: Value) -> redis::RedisResult<Attempt> {
    Ok(match reply {
        Value::Int(0) => Attempt::Done(ApplyOutcome::NotPending),
        Value::Int(n) => Attempt::Done(ApplyOutcome::Applied(n as usize)),
        Value::BulkString(b) if b == b"conflict" => Attempt::Conflict,
        Value::SimpleString(s) if s == "conflict" => Attempt::Conflict,
        Value::Array(items) => Attempt::Done(ApplyOutcome::Partial(
            items
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .collect(),
        )),
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected apply script reply",
                format!("{other:?}"),
            )));
        }
    })
}

/// Field-wise sum, zero sums left out.
fn sum(a: &BTreeMap<String, i64>, b: BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let mut out = a.clone();
    for (f, v) in b {
        *out.entry(f).or_insert(0) += v;
    }
    out.retain(|_, v| *v != 0);
    out
}

/// Add one op on key index `index`; false when it has nothing to do.
fn op(inv: &mut ScriptInvocation<'_>, index: usize, key: &str, kind: char, delta: &Delta, ttl: u64) -> bool {
    match delta {
        Delta::Incr(m) | Delta::Min(m) | Delta::Max(m) => {
            let live = || m.iter().filter(|(_, v)| !matches!(delta, Delta::Incr(_)) || **v != 0);
            let count = live().count();
            if count == 0 {
                return false;
            }
            inv.key(key).arg(kind.to_string()).arg(index).arg(ttl).arg(count);
            for (f, v) in live() {
                inv.arg(f).arg(v);
            }
        }
        Delta::Union(s) => {
            if s.is_empty() {
                return false;
            }
            inv.key(key).arg(kind.to_string()).arg(index).arg(ttl).arg(s.len());
            for visitor in s {
                inv.arg(&hex16(*visitor)[..]);
            }
        }
    }
    true
}

/// A visitor id as a sketch member: 16 lower-case hex digits, as
/// `format!("{v:016x}")` writes it, without a string per member.
fn hex16(v: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (pair, byte) in out.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{Delta, hex16, sketch_adds};
    use crate::aggregate::{Retention, aggregate};
    use redis::Arg;
    use schema::{Event, Keyspace};
    use std::collections::BTreeSet;

    #[test]
    fn sketch_adds_carry_every_member_of_the_batch_once() {
        let events: Vec<Event> = (0..1200u64)
            .map(|i| Event::pageview(1_795_000_000_000 + i as i64 * 1000, "a.io", "/", i % 700))
            .collect();
        let deltas = aggregate(&events, Keyspace::default(), Retention::default());
        let mut want = BTreeSet::new();
        for ((key, _), (delta, _)) in &deltas.ops {
            if let Delta::Union(visitors) = delta {
                want.extend(visitors.iter().map(|v| (key.clone(), hex16(*v).to_vec())));
            }
        }
        assert!(want.len() > 700, "the batch has sketch members");
        let mut got = BTreeSet::new();
        let mut largest = 0;
        for cmd in sketch_adds(&deltas).expect("members to add").cmd_iter() {
            let args: Vec<Vec<u8>> = cmd
                .args_iter()
                .map(|a| match a {
                    Arg::Simple(b) => b.to_vec(),
                    _ => Vec::new(),
                })
                .collect();
            if args[0] != b"PFADD" {
                assert_eq!(args[0], b"EXPIRE");
                continue;
            }
            let key = String::from_utf8(args[1].clone()).unwrap();
            largest = largest.max(args.len() - 2);
            for m in &args[2..] {
                assert!(got.insert((key.clone(), m.clone())), "each member once");
            }
        }
        assert_eq!(got, want);
        assert!(largest <= 500, "at most 500 members per PFADD");
        assert!(sketch_adds(&Default::default()).is_none());
    }

    #[test]
    fn sketch_members_are_written_as_sixteen_hex_digits() {
        for v in [0, 1, 0xab, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63] {
            assert_eq!(hex16(v), format!("{v:016x}").as_bytes(), "{v}");
        }
    }
}
