//! DECLARE CURSOR / FETCH / CLOSE: server-side cursors per connection.
//!
//! psycopg's named cursors, Tableau and postgres_fdw read large results a
//! page at a time with `FETCH n`. A cursor here is the query's open Arrow
//! stream: FETCH pulls just the rows it returns (keeping the rest of a batch
//! for the next FETCH), so a cursor over a million events never holds more
//! than one batch. Cursors belong to their connection; those declared
//! without HOLD close at the end of the transaction, as in PostgreSQL.

use super::encode;
use crate::error::user_error;
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Mutex;

/// Most cursors one connection may hold open.
pub const MAX_CURSORS: usize = 64;

/// One open cursor.
pub struct Cursor {
    pub plan: LogicalPlan,
    stream: SendableRecordBatchStream,
    /// Rows of the current batch not yet fetched.
    pending: Option<RecordBatch>,
    hold: bool,
}

/// The cursors of one connection (kept in pgwire's session extensions).
#[derive(Default)]
pub struct Cursors {
    open: Mutex<HashMap<String, Cursor>>,
}

impl Cursors {
    pub async fn declare(
        &self,
        name: String,
        plan: LogicalPlan,
        stream: SendableRecordBatchStream,
        hold: bool,
    ) -> PgWireResult<()> {
        let mut open = self.open.lock().await;
        if open.contains_key(&name) {
            return Err(user_error("42P03", format!("cursor \"{name}\" already exists")));
        }
        if open.len() >= MAX_CURSORS {
            return Err(user_error(
                "54000",
                format!("too many open cursors (at most {MAX_CURSORS})"),
            ));
        }
        open.insert(
            name,
            Cursor {
                plan,
                stream,
                pending: None,
                hold,
            },
        );
        Ok(())
    }

    /// Fetch up to `count` rows (all when `None`), encoded for `format`.
    pub async fn fetch(
        &self,
        name: &str,
        count: Option<usize>,
        format: &Format,
        fields_of: impl Fn(&LogicalPlan, &Format) -> Vec<FieldInfo>,
    ) -> PgWireResult<(Arc<Vec<FieldInfo>>, Vec<DataRow>)> {
        let mut open = self.open.lock().await;
        let cursor = open
            .get_mut(name)
            .ok_or_else(|| user_error("34000", format!("cursor \"{name}\" does not exist")))?;
        let fields = Arc::new(fields_of(&cursor.plan, format));
        let mut rows = Vec::new();
        let want = count.unwrap_or(usize::MAX);
        while rows.len() < want {
            let batch = match cursor.pending.take() {
                Some(b) => b,
                None => match cursor.stream.next().await {
                    Some(Ok(b)) => b,
                    Some(Err(e)) => return Err(crate::error::to_pg(e.into())),
                    None => break,
                },
            };
            let take = (want - rows.len()).min(batch.num_rows());
            rows.extend(encode::encode_batch(&batch.slice(0, take), &fields)?);
            if take < batch.num_rows() {
                cursor.pending = Some(batch.slice(take, batch.num_rows() - take));
            }
        }
        Ok((fields, rows))
    }

    /// The plan of a cursor (for Describe of a FETCH).
    pub async fn plan_of(&self, name: &str) -> Option<LogicalPlan> {
        self.open.lock().await.get(name).map(|c| c.plan.clone())
    }

    /// CLOSE name, or CLOSE ALL (`None`).
    pub async fn close(&self, name: Option<&str>) -> PgWireResult<()> {
        let mut open = self.open.lock().await;
        match name {
            None => open.clear(),
            Some(n) => {
                if open.remove(n).is_none() {
                    return Err(user_error("34000", format!("cursor \"{n}\" does not exist")));
                }
            }
        }
        Ok(())
    }

    /// End of a transaction: cursors without HOLD close.
    pub async fn end_transaction(&self) {
        self.open.lock().await.retain(|_, c| c.hold);
    }
}
