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
use schema::catalog::REALTIME_WINDOW_MS;
use schema::keys::span_fields;
use schema::report::Report;
use schema::report::{self, MeasureKind, code};
use schema::site::list_sites;
use schema::store::{RedisConn, active_keyspace};
use schema::{Grain, Keyspace};
use std::collections::{BTreeMap, HashMap};

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

/// One row of a report: a bucket, the dimension values, and the measures in
/// the order of [`Report::measures`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub bucket_ms: i64,
    pub dims: Vec<String>,
    pub values: Vec<i64>,
}

/// One row of the `realtime` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeRow {
    pub visitors: i64,
    pub pageviews: i64,
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

    /// All rows of `report` at `grain` for one site within `bounds`;
    /// HyperLogLogs are counted only when `with_uniques` (the query reads a
    /// visitors column), otherwise those measures are 0.
    pub async fn read_site(
        &self,
        ks: Keyspace,
        report: Report,
        grain: Grain,
        site: &str,
        bounds: &ScanBounds,
        with_uniques: bool,
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
        // Clip to the buckets holding data: a filter on a bucket's start
        // (`bucket = '2026-11-25'`) is earlier than the first event in it.
        let first = grain.truncate(first);
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
        let mut rows = Vec::new();
        for chunk in buckets.chunks(PIPELINE_CHUNK) {
            let mut pipe = redis::pipe();
            for &b in chunk {
                pipe.cmd("HGETALL").arg(ks.report_key(report, grain, site, b));
            }
            let hashes: Vec<HashMap<String, i64>> = pipe.query_async(&mut conn).await?;
            let mut chunk_rows = Vec::new();
            for (&b, hash) in chunk.iter().zip(hashes) {
                chunk_rows.extend(rows_of_bucket(report, b, hash));
            }
            if with_uniques {
                self.count_uniques(&mut conn, ks, report, grain, site, &mut chunk_rows)
                    .await?;
            }
            if report.dimensions().is_empty() {
                chunk_rows.retain(|r| r.values.iter().any(|v| *v != 0));
            }
            rows.extend(chunk_rows);
        }
        Ok(rows)
    }

    /// Fill the visitors measures of `rows` with `PFCOUNT`s, pipelined.
    async fn count_uniques(
        &self,
        conn: &mut RedisConn,
        ks: Keyspace,
        report: Report,
        grain: Grain,
        site: &str,
        rows: &mut [ReportRow],
    ) -> Result<(), KeymapError> {
        let uniques: Vec<(usize, &str)> = report
            .measures()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match m.kind {
                MeasureKind::Unique(variant) => Some((i, variant)),
                MeasureKind::Counter(_) => None,
            })
            .collect();
        if uniques.is_empty() || rows.is_empty() {
            return Ok(());
        }
        let has_dims = !report.dimensions().is_empty();
        for chunk in rows.chunks_mut(PIPELINE_CHUNK / uniques.len().max(1)) {
            let mut pipe = redis::pipe();
            for row in chunk.iter() {
                for (_, variant) in &uniques {
                    let suffix = if has_dims {
                        report::tuple(&row.dims)
                    } else {
                        (*variant).to_owned()
                    };
                    pipe.cmd("PFCOUNT")
                        .arg(ks.unique_key(report, grain, site, row.bucket_ms, &suffix));
                }
            }
            let counts: Vec<i64> = pipe.query_async(conn).await?;
            for (row, counts) in chunk.iter_mut().zip(counts.chunks(uniques.len())) {
                for ((i, _), n) in uniques.iter().zip(counts) {
                    row.values[*i] = *n;
                }
            }
        }
        Ok(())
    }

    /// Visitors and page views of the last [`REALTIME_WINDOW_MS`] of a site
    /// (the minute buckets from `now - window` to now).
    pub async fn read_realtime(&self, ks: Keyspace, site: &str, now_ms: i64) -> Result<RealtimeRow, KeymapError> {
        let mut conn = self.conn.clone();
        let buckets: Vec<i64> = Grain::Minute.buckets(now_ms - REALTIME_WINDOW_MS, now_ms).collect();
        let mut pipe = redis::pipe();
        pipe.cmd("PFCOUNT").arg(
            buckets
                .iter()
                .map(|&b| ks.unique_key(Report::Traffic, Grain::Minute, site, b, ""))
                .collect::<Vec<_>>(),
        );
        for &b in &buckets {
            pipe.cmd("HGET")
                .arg(ks.report_key(Report::Traffic, Grain::Minute, site, b))
                .arg(code::PAGEVIEWS);
        }
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        let mut replies = replies.into_iter();
        let visitors: i64 = redis::from_redis_value(replies.next().unwrap_or(Value::Int(0)))?;
        let mut pageviews = 0;
        for r in replies {
            let v: Option<i64> = redis::from_redis_value(r)?;
            pageviews += v.unwrap_or(0);
        }
        Ok(RealtimeRow { visitors, pageviews })
    }
}

/// The rows of one bucket's counter hash, sorted by dimension tuple.
fn rows_of_bucket(report: Report, bucket_ms: i64, hash: HashMap<String, i64>) -> Vec<ReportRow> {
    let measures = report.measures();
    let arity = report.dimensions().len();
    if arity == 0 {
        let mut values = vec![0; measures.len()];
        for (i, m) in measures.iter().enumerate() {
            if let MeasureKind::Counter(code) = m.kind {
                values[i] = hash.get(code).copied().unwrap_or(0);
            }
        }
        return vec![ReportRow {
            bucket_ms,
            dims: Vec::new(),
            values,
        }];
    }
    let mut by_tuple: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (field, v) in hash {
        let (code, tuple) = report::parse_field(&field);
        let Some(i) = measures
            .iter()
            .position(|m| matches!(m.kind, MeasureKind::Counter(c) if c == code))
        else {
            continue; // a field of a newer version: ignore
        };
        by_tuple
            .entry(tuple.to_owned())
            .or_insert_with(|| vec![0; measures.len()])[i] = v;
    }
    by_tuple
        .into_iter()
        .map(|(tuple, values)| ReportRow {
            bucket_ms,
            dims: report::split_tuple(&tuple, arity)
                .into_iter()
                .map(str::to_owned)
                .collect(),
            values,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_hashes_become_rows() {
        let hash = HashMap::from([
            ("pv\u{1f}/b".to_owned(), 2),
            ("pv\u{1f}/a".to_owned(), 5),
            ("en\u{1f}/a".to_owned(), 1),
            ("zz\u{1f}/a".to_owned(), 9),
        ]);
        let rows = rows_of_bucket(Report::Pages, 60_000, hash);
        assert_eq!(
            rows,
            vec![
                ReportRow {
                    bucket_ms: 60_000,
                    dims: vec!["/a".into()],
                    values: vec![5, 0, 1, 0]
                },
                ReportRow {
                    bucket_ms: 60_000,
                    dims: vec!["/b".into()],
                    values: vec![2, 0, 0, 0]
                },
            ]
        );
        let traffic = rows_of_bucket(
            Report::Traffic,
            0,
            HashMap::from([("pv".to_owned(), 3), ("vi".to_owned(), 1)]),
        );
        assert_eq!(traffic[0].values, vec![3, 0, 0, 1, 0, 0, 0, 0]);
    }
}
