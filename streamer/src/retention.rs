//! Keeping the streams bounded: time-based trimming and consumer cleanup.
//!
//! The streams are the log that replays and ad-hoc queries read, so they are
//! kept for a configurable time and trimmed with `XTRIM MINID ~` beyond it.
//! An entry is never trimmed before every consumer group on the stream has
//! applied it: the cut-off is lowered to the oldest entry still pending or
//! not yet delivered in any group (Redis 7.0 has no `XTRIM ... ACKED`), so a
//! streamer that was down longer than the retention loses nothing.
//!
//! Consumers of crashed processes stay listed in the group; once they have
//! nothing pending and have been idle for an hour they are deleted.

use crate::xinfo::InfoRecord;
use redis::Value;
use schema::Shard;
use schema::keys::parse_stream_id;
use schema::store::RedisConn;
use std::time::Duration;

/// Consumers idle this long with nothing pending are removed.
pub const STALE_CONSUMER: Duration = Duration::from_secs(3600);

/// The oldest entry some group still needs: its oldest pending entry, or the
/// entry after its last delivered one. `None` when no group exists.
async fn oldest_needed(conn: &mut RedisConn, stream: &str) -> redis::RedisResult<Option<(u64, u64)>> {
    let groups: Vec<Value> = redis::cmd("XINFO").arg("GROUPS").arg(stream).query_async(conn).await?;
    let mut oldest: Option<(u64, u64)> = None;
    let mut keep = |id: (u64, u64)| oldest = Some(oldest.map_or(id, |o| o.min(id)));
    for g in groups.into_iter().map(InfoRecord::new) {
        let Some(name) = g.get::<String>("name") else {
            continue;
        };
        if let Some((ms, seq)) = g
            .get::<String>("last-delivered-id")
            .as_deref()
            .and_then(parse_stream_id)
        {
            keep(if seq == u64::MAX { (ms + 1, 0) } else { (ms, seq + 1) });
        }
        let summary: Vec<Value> = redis::cmd("XPENDING").arg(stream).arg(&name).query_async(conn).await?;
        if let Some(first) = summary
            .get(1)
            .and_then(|v| redis::from_redis_value::<String>(v.clone()).ok())
            && let Some(id) = parse_stream_id(&first)
        {
            keep(id);
        }
    }
    Ok(oldest)
}

/// Trim one shard stream to `retention`, never past what a group still
/// needs. Returns the number of entries removed.
pub async fn trim_shard(
    conn: &mut RedisConn,
    shard: Shard,
    retention: Duration,
    now_ms: u64,
) -> redis::RedisResult<u64> {
    let stream = shard.stream_key();
    let exists: bool = redis::cmd("EXISTS").arg(&stream).query_async(conn).await?;
    if !exists {
        return Ok(0);
    }
    let cutoff = (now_ms.saturating_sub(retention.as_millis() as u64), 0);
    let min_id = match oldest_needed(conn, &stream).await? {
        Some(needed) => cutoff.min(needed),
        None => cutoff,
    };
    redis::cmd("XTRIM")
        .arg(&stream)
        .arg("MINID")
        .arg("~")
        .arg(format!("{}-{}", min_id.0, min_id.1))
        .query_async(conn)
        .await
}

/// Delete consumers of `group` on `shard` that have nothing pending and have
/// been idle longer than `idle`. Returns their names.
pub async fn remove_stale_consumers(
    conn: &mut RedisConn,
    shard: Shard,
    group: &str,
    idle: Duration,
) -> redis::RedisResult<Vec<String>> {
    let stream = shard.stream_key();
    let consumers: Vec<Value> = match redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg(group)
        .query_async(conn)
        .await
    {
        Ok(c) => c,
        Err(e) if e.code() == Some("NOGROUP") || e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for c in consumers.into_iter().map(InfoRecord::new) {
        let (Some(name), Some(pending), Some(idle_ms)) =
            (c.get::<String>("name"), c.get::<u64>("pending"), c.get::<u64>("idle"))
        else {
            continue;
        };
        if pending == 0 && idle_ms >= idle.as_millis() as u64 {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(&stream)
                .arg(group)
                .arg(&name)
                .query_async(conn)
                .await?;
            removed.push(name);
        }
    }
    Ok(removed)
}
