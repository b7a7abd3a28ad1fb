//! One Redis connection type for a single node or a Redis Cluster.
//!
//! Every service talks to Redis through [`RedisConn`], which implements the
//! redis crate's async `ConnectionLike`, so commands, pipelines and scripts are
//! written once. A single node is reached through a `ConnectionManager`
//! (multiplexed, reconnects on its own, created lazily so a service can start
//! while Redis is down); a cluster through the crate's cluster client, which
//! routes each command by its key's slot. Tally's key layout keeps all keys a
//! command touches in one slot, so both behave the same.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// Errors talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid Redis address {0:?}: {1}")]
    Address(String, String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// Where Redis is: one node, or the seed nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Single(String),
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// Parse `REDIS_URL`: `redis://host:port[/db]` for one node;
    /// `redis+cluster://h1:p1,h2:p2` (or several comma-separated `redis://`
    /// URLs) for a cluster.
    pub fn parse(s: &str) -> Result<RedisTarget, StoreError> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("redis+cluster://") {
            let nodes: Vec<String> = rest
                .split(',')
                .filter(|n| !n.is_empty())
                .map(|n| format!("redis://{n}"))
                .collect();
            if nodes.is_empty() {
                return Err(StoreError::Address(s.into(), "no cluster nodes given".into()));
            }
            return Ok(RedisTarget::Cluster(nodes));
        }
        if s.contains(',') {
            return Ok(RedisTarget::Cluster(
                s.split(',').map(|n| n.trim().to_owned()).collect(),
            ));
        }
        if !(s.starts_with("redis://")
            || s.starts_with("rediss://")
            || s.starts_with("redis+unix://")
            || s.starts_with("unix://"))
        {
            return Err(StoreError::Address(s.into(), "expected redis://host:port".into()));
        }
        Ok(RedisTarget::Single(s.to_owned()))
    }

    /// A display form without credentials, for logs.
    pub fn redacted(&self) -> String {
        fn strip(u: &str) -> String {
            match (u.find("://"), u.rfind('@')) {
                (Some(i), Some(j)) if j > i => format!("{}://***@{}", &u[..i], &u[j + 1..]),
                _ => u.to_owned(),
            }
        }
        match self {
            RedisTarget::Single(u) => strip(u),
            RedisTarget::Cluster(n) => n.iter().map(|u| strip(u)).collect::<Vec<_>>().join(","),
        }
    }
}

/// Connection tuning.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions {
    /// How long to wait for a reply before the command fails.
    pub response_timeout: Duration,
    /// How long to wait for a TCP connection.
    pub connect_timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

/// A cloneable async connection to a single node or a cluster.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connect. For a single node the connection is made lazily: this
    /// succeeds while Redis is down and commands fail until it is back.
    pub async fn connect(target: &RedisTarget, opts: ConnectOptions) -> Result<RedisConn, StoreError> {
        match target {
            RedisTarget::Single(url) => {
                let client =
                    redis::Client::open(url.as_str()).map_err(|e| StoreError::Address(url.clone(), e.to_string()))?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(opts.response_timeout))
                    .set_connection_timeout(Some(opts.connect_timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Ok(RedisConn::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisTarget::Cluster(nodes) => {
                let client = redis::cluster::ClusterClient::builder(nodes.iter().map(String::as_str))
                    .response_timeout(opts.response_timeout)
                    .connection_timeout(opts.connect_timeout)
                    .build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Every key matching `pattern`, from every node (each primary of a
/// cluster). For maintenance (replay, removal of an old keyspace), never on
/// a request path: `SCAN` walks the whole keyspace.
pub async fn scan_keys(conn: &mut RedisConn, pattern: &str) -> Result<Vec<String>, StoreError> {
    let mut out = Vec::new();
    let routes = match conn {
        RedisConn::Single(_) => vec![None],
        RedisConn::Cluster(c) => {
            let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(c).await?;
            cluster_primaries(&nodes)
                .into_iter()
                .map(|(host, port)| Some(RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port })))
                .collect()
        }
    };
    for route in routes {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
            let reply = match (&mut *conn, &route) {
                (RedisConn::Cluster(c), Some(route)) => c.route_command(cmd, route.clone()).await?,
                (conn, _) => cmd.query_async::<Value>(conn).await?,
            };
            let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
            out.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// `(host, port)` of each primary in a `CLUSTER NODES` reply.
fn cluster_primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let addr = f.nth(1)?;
            let flags = f.next()?;
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                return None;
            }
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

/// Read the active keyspace version (`tally:keyspace`), defaulting to v1.
pub async fn active_keyspace(conn: &mut RedisConn) -> Result<crate::Keyspace, StoreError> {
    let v: Option<u32> = redis::cmd("GET")
        .arg(crate::keys::keyspace_key())
        .query_async(conn)
        .await?;
    Ok(crate::Keyspace::new(v.unwrap_or(crate::keys::DEFAULT_VERSION)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            RedisTarget::parse("redis+cluster://a:1,b:2").unwrap(),
            RedisTarget::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(RedisTarget::parse("localhost:6379").is_err());
        assert_eq!(
            cluster_primaries(
                "07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                 67ed 127.0.0.1:30004@40004 slave 07c3 0 1 4 connected\n\
                 292f 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922\n"
            ),
            vec![("127.0.0.1".to_owned(), 30001), ("127.0.0.1".to_owned(), 30002)]
        );
        assert_eq!(
            RedisTarget::parse("redis://u:secret@h:1").unwrap().redacted(),
            "redis://***@h:1"
        );
    }
}
