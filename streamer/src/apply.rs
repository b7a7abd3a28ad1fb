//! The exactly-once apply: one server-side script per batch.
//!
//! See `apply.lua` for the protocol. This module turns [`Deltas`] into the
//! script's keys and arguments and interprets its answer. The script is
//! idempotent with respect to the pending-entries list, so a call whose
//! outcome is unknown (timeout, dropped connection) is simply sent again.

use crate::aggregate::{Delta, Deltas, Retention};
use crate::sessions::SessionFacts;
use redis::ScriptInvocation;
use redis::{Script, Value};
use schema::store::RedisConn;
use schema::{Grain, Keyspace, Shard};
use std::sync::LazyLock;

static APPLY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("apply.lua")));

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

/// Items of a session op, in the order `apply.lua` reads them.
const SESSION_ITEMS: usize = 23;

fn session_op(inv: &mut ScriptInvocation<'_>, index: usize, prefix: &str, f: &SessionFacts, retention: Retention) {
    let pick = |p: &Option<crate::sessions::Pick>| match p {
        Some(p) => (p.ts_ms.to_string(), p.tie.to_string(), p.value.clone()),
        None => (String::new(), String::new(), String::new()),
    };
    let (et, et_tie, ep) = pick(&f.entry);
    let (xt, xt_tie, xp) = pick(&f.exit);
    inv.arg("S")
        .arg(index)
        .arg(retention.session_secs)
        .arg(SESSION_ITEMS)
        .arg(prefix)
        .arg(&f.site)
        .arg(format!("{:016x}", f.visitor_id))
        .arg(f.start.ts_ms)
        .arg(f.start.tie)
        .arg(&f.start.value)
        .arg(f.end_ms)
        .arg(f.pageviews)
        .arg(f.interactive)
        .arg(et)
        .arg(et_tie)
        .arg(ep)
        .arg(xt)
        .arg(xt_tie)
        .arg(xp)
        .arg(&f.device)
        .arg(&f.country);
    for g in Grain::ALL {
        inv.arg(g.label(f.start.ts_ms));
    }
    for g in Grain::ALL {
        inv.arg(retention.for_grain(g));
    }
}

/// Apply `deltas` for the entries `ids` (ascending) of `shard`'s stream.
pub async fn apply_batch(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    consumer: &str,
    ids: &[String],
    deltas: &Deltas,
    retention: Retention,
) -> redis::RedisResult<ApplyOutcome> {
    let mut inv = APPLY.prepare_invoke();
    inv.key(shard.stream_key()).key(ks.applied_key(shard));
    inv.arg(ks.group()).arg(consumer).arg(ids.len());
    for id in ids {
        inv.arg(id);
    }
    for (i, ((key, kind), (delta, ttl))) in deltas.ops.iter().enumerate() {
        inv.key(key);
        let index = i + 3;
        match delta {
            Delta::Incr(m) | Delta::Min(m) | Delta::Max(m) => {
                inv.arg(kind.to_string()).arg(index).arg(ttl).arg(m.len());
                for (f, v) in m {
                    inv.arg(f).arg(v);
                }
            }
            Delta::Union(s) => {
                inv.arg(kind.to_string()).arg(index).arg(ttl).arg(s.len());
                for member in s {
                    inv.arg(member);
                }
            }
        }
    }
    let prefix = ks.shard_prefix(shard);
    for (i, facts) in deltas.sessions.values().enumerate() {
        inv.key(ks.session_key(&facts.site, facts.session_id));
        let index = deltas.ops.len() + i + 3;
        session_op(&mut inv, index, &prefix, facts, retention);
    }
    let reply: Value = inv.invoke_async(conn).await?;
    Ok(match reply {
        Value::Int(0) => ApplyOutcome::NotPending,
        Value::Int(n) => ApplyOutcome::Applied(n as usize),
        Value::Array(items) => ApplyOutcome::Partial(
            items
                .into_iter()
                .filter_map(|v| redis::from_redis_value::<String>(v).ok())
                .collect(),
        ),
        other => {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected apply script reply",
                format!("{other:?}"),
            )));
        }
    })
}
