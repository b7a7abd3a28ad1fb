//! The SQL engine: DataFusion over the key-map tables.
//!
//! Planning and execution are separate so the extended protocol can plan
//! once at Parse and execute many times with different parameters. Only
//! read queries are executed; anything that would write is refused as a
//! read-only violation.

use crate::error::GatewayError;
use crate::keymap::KeymapReader;
use crate::rewrite::{SessionView, rewrite};
use crate::tenant::TenantScope;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast::{self, Set, Statement as SqlStatement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use std::sync::Arc;

/// Database name reported to clients.
pub const DATABASE: &str = "tally";

/// What `version()` answers: PostgreSQL-shaped, as clients parse it.
pub const VERSION: &str = concat!(
    "PostgreSQL 16.6 (Tally ",
    env!("CARGO_PKG_VERSION"),
    ") on x86_64-pc-linux-gnu, compiled by rustc, 64-bit"
);

/// One planned statement.
#[derive(Debug, Clone)]
pub enum Command {
    /// A read query.
    Query(LogicalPlan),
    /// BEGIN / START TRANSACTION (read-only; nothing to isolate).
    Begin,
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// SET name = value. Transaction characteristics and similar settings
    /// with no effect here are accepted with `name` empty.
    Set { name: String, value: String },
    /// RESET name, or RESET ALL (`None`).
    Reset(Option<String>),
    /// SHOW name.
    Show(String),
    /// SAVEPOINT / RELEASE / ROLLBACK TO: nothing to undo in a read-only
    /// transaction; answered with the statement's tag.
    Savepoint(&'static str),
    /// DECLARE name CURSOR [WITH HOLD] FOR query.
    Declare {
        name: String,
        plan: LogicalPlan,
        hold: bool,
    },
    /// FETCH [FORWARD] n | ALL | NEXT FROM name (`count` None = all).
    Fetch { name: String, count: Option<usize> },
    /// CLOSE name, or CLOSE ALL (`None`).
    Close(Option<String>),
}

fn fetch_count(direction: &ast::FetchDirection) -> Result<Option<usize>, GatewayError> {
    use ast::FetchDirection as D;
    let number = |v: &ast::ValueWithSpan| -> Result<usize, GatewayError> {
        match &v.value {
            ast::Value::Number(n, _) => n.parse::<usize>().map_err(|_| GatewayError::Sql {
                code: "22023",
                message: format!("invalid FETCH count {n}"),
            }),
            other => Err(GatewayError::Sql {
                code: "42601",
                message: format!("invalid FETCH count {other}"),
            }),
        }
    };
    match direction {
        D::Next => Ok(Some(1)),
        D::All | D::ForwardAll => Ok(None),
        D::Count { limit } => number(limit).map(Some),
        D::Forward { limit } => limit.as_ref().map_or(Ok(Some(1)), |l| number(l).map(Some)),
        other => Err(GatewayError::Unsupported(format!(
            "FETCH {other} (cursors here are forward-only)"
        ))),
    }
}

fn setting_value(values: &[ast::Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            ast::Expr::Identifier(id) => id.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn setting_name(name: &ast::ObjectName) -> String {
    name.to_string().trim_matches('"').to_ascii_lowercase()
}

/// Statements that would change data, schema or privileges, by their first
/// keyword: refused as read-only violations (25006) whatever the parser
/// makes of the rest.
const WRITE_KEYWORDS: &[&str] = &[
    "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "COPY", "CREATE", "DROP", "ALTER", "TRUNCATE", "GRANT", "REVOKE",
    "COMMENT", "VACUUM", "CLUSTER", "REINDEX", "REFRESH", "LOCK", "SECURITY", "IMPORT", "CALL", "DO",
];

/// The write keyword a statement starts with (comments and space skipped).
pub fn write_keyword(sql: &str) -> Option<&'static str> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after).trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after).trim_start();
        } else {
            break;
        }
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase();
    WRITE_KEYWORDS.iter().copied().find(|k| *k == word)
}

/// Session statements answered by the gateway itself.
fn session_command(s: &SqlStatement) -> Option<Command> {
    Some(match s {
        SqlStatement::StartTransaction { .. } => Command::Begin,
        SqlStatement::Commit { .. } => Command::Commit,
        SqlStatement::Rollback { savepoint: Some(_), .. } => Command::Savepoint("ROLLBACK"),
        SqlStatement::Rollback { .. } => Command::Rollback,
        SqlStatement::Savepoint { .. } => Command::Savepoint("SAVEPOINT"),
        SqlStatement::ReleaseSavepoint { .. } => Command::Savepoint("RELEASE"),
        SqlStatement::ShowVariable { variable } => Command::Show(
            variable
                .iter()
                .map(|i| i.value.to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        SqlStatement::Reset(r) => Command::Reset(match &r.reset {
            ast::Reset::ALL => None,
            ast::Reset::ConfigurationParameter(n) => Some(setting_name(n)),
        }),
        SqlStatement::Set(set) => match set {
            Set::SingleAssignment { variable, values, .. } => Command::Set {
                name: setting_name(variable),
                value: setting_value(values),
            },
            Set::SetTimeZone { value, .. } => Command::Set {
                name: "timezone".into(),
                value: setting_value(std::slice::from_ref(value)),
            },
            _ => Command::Set {
                name: String::new(),
                value: String::new(),
            },
        },
        _ => return None,
    })
}

pub struct QueryEngine {
    ctx: SessionContext,
    /// Memory one query may hold for sorts, joins and aggregations.
    query_memory: usize,
    lookup: Arc<crate::pg_catalog::functions::Lookup>,
}

impl QueryEngine {
    pub fn new(reader: KeymapReader) -> Result<Self, GatewayError> {
        let mut config = SessionConfig::new()
            .with_default_catalog_and_schema(DATABASE, "public")
            .with_information_schema(false)
            .with_target_partitions(2);
        // `timestamptz` values and `now()` are in UTC, as the TimeZone the
        // server reports.
        config.options_mut().execution.time_zone = Some(crate::tables::UTC.to_owned());
        let ctx = SessionContext::new_with_config(config);
        ctx.register_udf(create_udf(
            "version",
            vec![],
            DataType::Utf8,
            Volatility::Immutable,
            Arc::new(|_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(VERSION.to_owned()))))),
        ));
        ctx.register_udtf(
            "unique_visitors",
            Arc::new(crate::tables::unique_visitors::UniqueVisitorsFunction::new(
                reader.clone(),
            )),
        );
        for (name, provider) in crate::tables::providers(&reader) {
            ctx.register_table(name.as_str(), provider)?;
        }
        let lookup = crate::pg_catalog::register(&ctx, DATABASE, crate::pg::session::DEFAULTS)?;
        Ok(QueryEngine {
            ctx,
            lookup,
            query_memory: 512 << 20,
        })
    }

    /// Split a query string into statements (PostgreSQL dialect).
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, GatewayError> {
        let sql = crate::rewrite::known_client_sql(sql);
        match DFParser::parse_sql_with_dialect(&sql, &PostgreSqlDialect {}) {
            Ok(statements) => Ok(statements.into_iter().collect()),
            // A write the parser does not know (`COPY t TO STDOUT`) is
            // refused as a write, not as a syntax error.
            Err(e) => match write_keyword(&sql) {
                Some(word) => Err(GatewayError::ReadOnly(word.to_owned())),
                None => Err(GatewayError::DataFusion(e)),
            },
        }
    }

    /// Limit each query's memory (bytes).
    pub fn with_query_memory(mut self, bytes: usize) -> Self {
        self.query_memory = bytes;
        self
    }

    /// Relation lookups (for the connection's SQL rewrite).
    pub fn lookup(&self) -> &crate::pg_catalog::functions::Lookup {
        &self.lookup
    }

    /// Plan one statement for a connection; refuses statements that would
    /// write.
    pub async fn plan(&self, mut statement: Statement, session: &SessionView<'_>) -> Result<Command, GatewayError> {
        match &mut statement {
            Statement::Statement(s) => {
                if let Some(command) = session_command(s) {
                    return Ok(command);
                }
                if !matches!(s.as_ref(), SqlStatement::Query(_))
                    && let Some(word) = write_keyword(&s.to_string())
                {
                    return Err(GatewayError::ReadOnly(word.to_owned()));
                }
                rewrite(s, session)?;
                self.fold_select_list_in_subqueries(s, session.scope).await;
                if let Some(command) = self.cursor_command(s).await? {
                    return Ok(command);
                }
            }
            Statement::Reset(datafusion::sql::parser::ResetStatement::Variable(name)) => {
                let name = name.to_string().trim_matches('"').to_ascii_lowercase();
                return Ok(Command::Reset((name != "all").then_some(name)));
            }
            _ => {}
        }
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        match &plan {
            LogicalPlan::Dml(d) => Err(GatewayError::ReadOnly(d.op.to_string())),
            LogicalPlan::Ddl(d) => Err(GatewayError::ReadOnly(d.name().to_owned())),
            LogicalPlan::Copy(_) => Err(GatewayError::ReadOnly("COPY".into())),
            LogicalPlan::Statement(s) => Err(GatewayError::Unsupported(s.name().to_owned())),
            _ => Ok(Command::Query(plan)),
        }
    }

    /// `CASE WHEN x IN (SELECT ...)` in a select list (Grafana's table
    /// list) cannot be planned by DataFusion. When such a subquery stands
    /// alone, it is run now and its values (at most 1,000) replace it; one
    /// that refers to the outer row is left as it is.
    async fn fold_select_list_in_subqueries(&self, s: &mut SqlStatement, scope: &TenantScope) {
        const MOST_VALUES: usize = 1_000;
        let mut n = 0;
        while let Some(query) = crate::rewrite::select_list_in_subquery(s, n) {
            let values = self.constant_values(query, MOST_VALUES, scope).await;
            match values {
                Some(values) => crate::rewrite::replace_select_list_in_subquery(s, n, values),
                None => n += 1,
            }
            if n > 16 {
                break;
            }
        }
    }

    async fn constant_values(
        &self,
        query: Box<ast::Query>,
        most: usize,
        scope: &TenantScope,
    ) -> Option<Vec<ast::Expr>> {
        use futures::StreamExt;
        let statement = Statement::Statement(Box::new(SqlStatement::Query(query)));
        let plan = self.ctx.state().statement_to_plan(statement).await.ok()?;
        if plan.schema().fields().len() != 1 {
            return None;
        }
        let mut stream = self.execute(plan, scope).await.ok()?;
        let mut out = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.ok()?;
            for row in 0..batch.num_rows() {
                let v = datafusion::common::ScalarValue::try_from_array(batch.column(0), row).ok()?;
                out.push(crate::rewrite::literal_of(&v)?);
                if out.len() > most {
                    return None;
                }
            }
        }
        Some(out)
    }

    /// DECLARE / FETCH / CLOSE.
    async fn cursor_command(&self, s: &SqlStatement) -> Result<Option<Command>, GatewayError> {
        Ok(Some(match s {
            SqlStatement::Declare { stmts } => {
                let [d] = stmts.as_slice() else {
                    return Err(GatewayError::Unsupported("DECLARE of several cursors".into()));
                };
                let (Some(name), Some(query)) = (d.names.first(), d.for_query.as_ref()) else {
                    return Err(GatewayError::Unsupported("DECLARE without a cursor query".into()));
                };
                if d.binary == Some(true) || d.scroll == Some(true) {
                    return Err(GatewayError::Unsupported("BINARY or SCROLL cursors".into()));
                }
                let statement = Statement::Statement(Box::new(SqlStatement::Query(query.clone())));
                let plan = self.ctx.state().statement_to_plan(statement).await?;
                Command::Declare {
                    name: name.value.clone(),
                    plan,
                    hold: d.hold == Some(true),
                }
            }
            SqlStatement::Fetch { name, direction, .. } => Command::Fetch {
                name: name.value.clone(),
                count: fetch_count(direction)?,
            },
            SqlStatement::Close { cursor } => Command::Close(match cursor {
                ast::CloseCursor::All => None,
                ast::CloseCursor::Specific { name } => Some(name.value.clone()),
            }),
            _ => return Ok(None),
        }))
    }

    /// Plan exactly one statement (extended protocol). `None` for an empty query.
    pub async fn plan_single(&self, sql: &str, session: &SessionView<'_>) -> Result<Option<Command>, GatewayError> {
        let mut statements = self.parse(sql)?;
        match statements.len() {
            0 => Ok(None),
            1 => Ok(Some(self.plan(statements.remove(0), session).await?)),
            _ => Err(GatewayError::MultipleStatements),
        }
    }

    /// Execute a planned query under a tenant scope, streaming its batches.
    /// The scope travels in the session config, where every table provider
    /// reads it at scan time.
    pub async fn execute(
        &self,
        plan: LogicalPlan,
        scope: &TenantScope,
    ) -> Result<SendableRecordBatchStream, GatewayError> {
        // Each query gets its own memory pool, and no spilling to disk: a
        // query past its share fails (53200) while the others go on.
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(self.query_memory, 1.0)
            .with_disk_manager_builder(
                datafusion::execution::disk_manager::DiskManagerBuilder::default()
                    .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled),
            )
            .build_arc()?;
        let mut state = datafusion::execution::SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(runtime)
            .build();
        state.config_mut().set_extension(Arc::new(scope.clone()));
        let df = datafusion::dataframe::DataFrame::new(state, plan);
        Ok(df.execute_stream().await?)
    }
}
