//! How far the streamer has got: lag and pending entries per shard.
//!
//! Read from `XINFO GROUPS` (Redis 7: `lag` = entries not yet delivered to
//! the group, `pending` = delivered but not acknowledged). Tests and
//! `tally status` use it to wait until every accepted event is in the
//! key-map, with a bound instead of a sleep.

use crate::xinfo::InfoRecord;
use redis::Value;
use schema::store::RedisConn;
use schema::{Keyspace, Shard};

/// Progress of the group on one shard stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardProgress {
    pub shard: Shard,
    /// Entries not yet read by the group (`None` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Entries read but not yet applied and acknowledged.
    pub pending: u64,
}

impl ShardProgress {
    pub fn caught_up(&self) -> bool {
        self.lag == Some(0) && self.pending == 0
    }
}

/// Progress on every shard. A shard whose stream or group does not exist yet
/// has nothing to do and counts as caught up.
pub async fn progress(conn: &mut RedisConn, ks: Keyspace) -> redis::RedisResult<Vec<ShardProgress>> {
    let group = ks.group();
    let mut out = Vec::new();
    for shard in Shard::all() {
        let reply: redis::RedisResult<Vec<Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(shard.stream_key())
            .query_async(conn)
            .await;
        let groups = match reply {
            Ok(g) => g,
            Err(e) if e.to_string().contains("no such key") => {
                out.push(ShardProgress {
                    shard,
                    lag: Some(0),
                    pending: 0,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        // The stream exists; until the group does, nothing of it is read.
        let length: u64 = redis::cmd("XLEN").arg(shard.stream_key()).query_async(conn).await?;
        let mut found = ShardProgress {
            shard,
            lag: (length == 0).then_some(0),
            pending: 0,
        };
        for g in groups.into_iter().map(InfoRecord::new) {
            if g.get::<String>("name").as_deref() == Some(group.as_str()) {
                found.pending = g.get("pending").unwrap_or(0);
                found.lag = g.get("lag");
            }
        }
        out.push(found);
    }
    Ok(out)
}

/// True when every shard is caught up.
pub async fn caught_up(conn: &mut RedisConn, ks: Keyspace) -> redis::RedisResult<bool> {
    Ok(progress(conn, ks).await?.iter().all(ShardProgress::caught_up))
}
