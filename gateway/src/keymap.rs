//! Reading the key-map: rows of a report for a set of sites and a time range.
//!
//! Keys are computed, never scanned: the site list comes from the filter or
//! the registry, the time range from the filter clipped to the site's span
//! (first and last event seen), and each bucket in it names its keys. All
//! keys of one site share a hash tag, so one pipeline per site works on a
//! single node and on Redis Cluster alike. Buckets without data produce no
//! row, as in a table that was never written for them.

use crate::pushdown::ScanBounds;
use redis::Value;
use schema::catalog::Report;
use schema::keys::{Family, span_fields, traffic_fields};
use schema::site::list_sites;
use schema::store::{RedisConn, active_keyspace};
use schema::{Grain, Keyspace};
use std::collections::HashMap;

/// Most commands in one pipeline (bounds reply size and latency).
const PIPELINE_CHUNK: usize = 2000;

/// Errors reading the key-map.
#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Reply(#[from] redis::ParsingError),
    #[error(transparent)]
    Store(#[from] schema::store::StoreError),
    #[error(
        "query would read {buckets} buckets of site {site:?} (limit {limit}); add a narrower filter on bucket or use a coarser table"
    )]
    TooManyBuckets { site: String, buckets: usize, limit: usize },
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRow {
    Traffic {
        bucket_ms: i64,
        pageviews: i64,
        events: i64,
        visitors: i64,
    },
    Page {
        bucket_ms: i64,
        path: String,
        pageviews: i64,
    },
}

/// Reads reports from Redis.
#[derive(Clone)]
pub struct KeymapReader {
    conn: RedisConn,
    /// Most buckets one site may contribute to one scan.
    pub max_buckets: usize,
}

impl KeymapReader {
    pub fn new(conn: RedisConn) -> Self {
        KeymapReader {
            conn,
            max_buckets: 200_000,
        }
    }

    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The sites a scan covers: the filtered ones, or every registered site.
    pub async fn sites(&self, bounds: &ScanBounds) -> Result<Vec<String>, KeymapError> {
        match &bounds.sites {
            Some(s) => Ok(s.iter().cloned().collect()),
            None => {
                let mut conn = self.conn.clone();
                Ok(list_sites(&mut conn).await?)
            }
        }
    }

    pub async fn keyspace(&self) -> Result<Keyspace, KeymapError> {
        let mut conn = self.conn.clone();
        Ok(active_keyspace(&mut conn).await?)
    }

    /// All rows of `report` at `grain` for one site within `bounds`.
    pub async fn read_site(
        &self,
        ks: Keyspace,
        report: Report,
        grain: Grain,
        site: &str,
        bounds: &ScanBounds,
    ) -> Result<Vec<ReportRow>, KeymapError> {
        let mut conn = self.conn.clone();
        let (first, last): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(ks.span_key(site))
            .arg(span_fields::FIRST_MS)
            .arg(span_fields::LAST_MS)
            .query_async(&mut conn)
            .await?;
        let (Some(first), Some(last)) = (first, last) else {
            return Ok(Vec::new()); // no data for this site
        };
        let from = bounds.from_ms.map_or(first, |f| f.max(first));
        let to = bounds.to_ms.map_or(last, |t| t.min(last));
        if from > to {
            return Ok(Vec::new());
        }
        let buckets: Vec<i64> = grain.buckets(from, to).collect();
        if buckets.len() > self.max_buckets {
            return Err(KeymapError::TooManyBuckets {
                site: site.to_owned(),
                buckets: buckets.len(),
                limit: self.max_buckets,
            });
        }
        match report {
            Report::Traffic => self.read_traffic(&mut conn, ks, grain, site, &buckets).await,
            Report::Pages => self.read_pages(&mut conn, ks, grain, site, &buckets).await,
        }
    }

    async fn read_traffic(
        &self,
        conn: &mut RedisConn,
        ks: Keyspace,
        grain: Grain,
        site: &str,
        buckets: &[i64],
    ) -> Result<Vec<ReportRow>, KeymapError> {
        let mut rows = Vec::new();
        for chunk in buckets.chunks(PIPELINE_CHUNK / 2) {
            let mut pipe = redis::pipe();
            for &b in chunk {
                pipe.cmd("HMGET")
                    .arg(ks.bucket_key(Family::Traffic, grain, site, b))
                    .arg(traffic_fields::PAGEVIEWS)
                    .arg(traffic_fields::EVENTS);
                pipe.cmd("PFCOUNT").arg(ks.bucket_key(Family::Visitors, grain, site, b));
            }
            let replies: Vec<Value> = pipe.query_async(conn).await?;
            for (&b, pair) in chunk.iter().zip(replies.chunks(2)) {
                let (pv, ev): (Option<i64>, Option<i64>) = redis::from_redis_value(pair[0].clone())?;
                let visitors: i64 = redis::from_redis_value(pair[1].clone())?;
                if pv.is_none() && ev.is_none() && visitors == 0 {
                    continue;
                }
                rows.push(ReportRow::Traffic {
                    bucket_ms: b,
                    pageviews: pv.unwrap_or(0),
                    events: ev.unwrap_or(0),
                    visitors,
                });
            }
        }
        Ok(rows)
    }

    async fn read_pages(
        &self,
        conn: &mut RedisConn,
        ks: Keyspace,
        grain: Grain,
        site: &str,
        buckets: &[i64],
    ) -> Result<Vec<ReportRow>, KeymapError> {
        let mut rows = Vec::new();
        for chunk in buckets.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            for &b in chunk {
                pipe.cmd("HGETALL").arg(ks.bucket_key(Family::Pages, grain, site, b));
            }
            let replies: Vec<HashMap<String, i64>> = pipe.query_async(conn).await?;
            for (&b, paths) in chunk.iter().zip(replies) {
                let mut paths: Vec<(String, i64)> = paths.into_iter().collect();
                paths.sort();
                rows.extend(paths.into_iter().map(|(path, pageviews)| ReportRow::Page {
                    bucket_ms: b,
                    path,
                    pageviews,
                }));
            }
        }
        Ok(rows)
    }
}
