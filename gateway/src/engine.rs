//! The SQL engine: DataFusion over the key-map tables.
//!
//! Planning and execution are separate so the extended protocol can plan
//! once at Parse and execute many times with different parameters. Only
//! read queries are executed; anything that would write is refused as a
//! read-only violation.

use crate::error::GatewayError;
use crate::keymap::KeymapReader;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;

/// Database name reported to clients.
pub const DATABASE: &str = "tally";

pub struct QueryEngine {
    ctx: SessionContext,
}

impl QueryEngine {
    pub fn new(reader: KeymapReader) -> Result<Self, GatewayError> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE, "public")
            .with_information_schema(false)
            .with_target_partitions(2);
        let ctx = SessionContext::new_with_config(config);
        for (name, provider) in crate::tables::providers(&reader) {
            ctx.register_table(name.as_str(), provider)?;
        }
        Ok(QueryEngine { ctx })
    }

    /// Split a query string into statements (PostgreSQL dialect).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, GatewayError> {
        let statements =
            DFParser::parse_sql_with_dialect(sql, &PostgreSqlDialect {}).map_err(GatewayError::DataFusion)?;
        Ok(statements.into_iter().collect())
    }

    /// Plan one statement; refuses statements that are not queries.
    pub async fn plan(&self, statement: Statement) -> Result<LogicalPlan, GatewayError> {
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        match &plan {
            LogicalPlan::Dml(d) => Err(GatewayError::ReadOnly(d.op.to_string())),
            LogicalPlan::Ddl(d) => Err(GatewayError::ReadOnly(d.name().to_owned())),
            LogicalPlan::Copy(_) => Err(GatewayError::ReadOnly("COPY".into())),
            LogicalPlan::Statement(s) => Err(GatewayError::Unsupported(s.name().to_owned())),
            LogicalPlan::DescribeTable(_) | LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => Ok(plan),
            _ => Ok(plan),
        }
    }

    /// Plan exactly one statement (extended protocol). `None` for an empty query.
    pub async fn plan_single(&self, sql: &str) -> Result<Option<LogicalPlan>, GatewayError> {
        let mut statements = self.parse(sql)?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(Some(self.plan(statements.remove(0)).await?)),
            _ => Err(GatewayError::MultipleStatements),
        }
    }

    /// Execute a planned query, streaming its batches.
    pub async fn execute(&self, plan: LogicalPlan) -> Result<SendableRecordBatchStream, GatewayError> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        Ok(df.execute_stream().await?)
    }
}
