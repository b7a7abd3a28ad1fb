//! The exactly-once apply: one server-side script per batch.
//!
//! See `apply.lua` for the protocol. This module turns [`Deltas`] into the
//! script's keys and arguments and interprets its answer. The script is
//! idempotent with respect to the pending-entries list, so a call whose
//! outcome is unknown (timeout, dropped connection) is simply sent again.

use crate::aggregate::{Delta, Deltas};
use redis::{Script, Value};
use schema::store::RedisConn;
use schema::{Keyspace, Shard};
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

/// Apply `deltas` for the entries `ids` (ascending) of `shard`'s stream.
pub async fn apply_batch(
    conn: &mut RedisConn,
    ks: Keyspace,
    shard: Shard,
    consumer: &str,
    ids: &[String],
    deltas: &Deltas,
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
