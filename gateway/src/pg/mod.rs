//! The PostgreSQL wire protocol front of the gateway (pgwire).
//!
//! One handler serves startup, the simple and the extended query protocol.
//! Startup reports the ParameterStatus values drivers check (a 16.x
//! server_version, UTF8, ISO DateStyle, ...). Simple queries may hold several
//! statements; extended queries are planned once at Parse and executed with
//! bound parameters. Results stream batch by batch to the socket.

pub mod auth;
pub mod cursor;
pub mod encode;
pub mod idle;
pub mod limits;
pub mod names;
pub mod params;
pub mod server;
pub mod session;

use crate::engine::{Command, QueryEngine};
use crate::error::{GatewayError, error_info, to_pg, user_error};
use crate::result_cache::{CacheKey, Cached};
use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use futures::{Sink, StreamExt, stream};
use pgwire::api::auth::ServerParameterProvider;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

/// The PostgreSQL version Tally presents itself as.
pub const SERVER_VERSION: &str = "16.6";

/// ParameterStatus values sent after authentication.
pub struct ServerParams;

impl ServerParameterProvider for ServerParams {
    fn server_parameters<C: ClientInfo>(&self, client: &C) -> Option<HashMap<String, String>> {
        let meta = client.metadata();
        let mut p = HashMap::new();
        for (k, v) in [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
            ("in_hot_standby", "off"),
            ("default_transaction_read_only", "on"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        p.insert(
            "application_name".into(),
            meta.get("application_name").cloned().unwrap_or_default(),
        );
        p.insert(
            "session_authorization".into(),
            meta.get("user").cloned().unwrap_or_default(),
        );
        Some(p)
    }
}

/// A statement planned at Parse.
#[derive(Debug)]
pub struct Prepared {
    pub command: Command,
    pub inferred: Vec<Option<datafusion::arrow::datatypes::DataType>>,
}

/// Row description of a query, with PostgreSQL's column names.
fn query_fields(plan: &LogicalPlan, format: &Format) -> Vec<FieldInfo> {
    let schema = plan.schema().as_arrow();
    match names::postgres_names(plan) {
        Some(names) => encode::named_fields(schema, names, format),
        None => encode::fields(schema, format),
    }
}

/// Result columns of a command (SHOW has one text column, named as in
/// PostgreSQL; session commands have none).
fn command_fields(command: &Command, format: &Format) -> Vec<FieldInfo> {
    match command {
        Command::Query(plan) => query_fields(plan, format),
        Command::Show(name) => vec![FieldInfo::new(
            session::canonical(name),
            None,
            None,
            Type::TEXT,
            format.format_for(0),
        )],
        _ => Vec::new(),
    }
}

/// The sites a connection may read: set at authentication, none if it
/// never was.
fn connection_scope<C: ClientInfo>(client: &C) -> Arc<crate::tenant::TenantScope> {
    client
        .session_extensions()
        .get::<crate::tenant::TenantScope>()
        .unwrap_or_else(|| Arc::new(crate::tenant::TenantScope::none()))
}

/// What a connection brings to planning: its settings, user and pid.
pub struct ConnectionState {
    pub settings: Arc<session::SessionSettings>,
    /// The sites this connection may read (set at authentication; none
    /// if it was never set).
    pub scope: Arc<crate::tenant::TenantScope>,
    pub user: String,
    pub database: String,
    pub pid: i32,
}

impl ConnectionState {
    pub fn of<C: ClientInfo>(client: &C) -> Self {
        let meta = client.metadata();
        ConnectionState {
            settings: client
                .session_extensions()
                .get_or_insert_with(session::SessionSettings::default),
            scope: connection_scope(client),
            user: meta.get("user").cloned().unwrap_or_default(),
            database: meta
                .get("database")
                .cloned()
                .unwrap_or_else(|| crate::engine::DATABASE.to_owned()),
            pid: client.pid_and_secret_key().0,
        }
    }

    pub fn view<'a>(&'a self, engine: &'a QueryEngine) -> crate::rewrite::SessionView<'a> {
        crate::rewrite::SessionView {
            settings: &self.settings,
            user: &self.user,
            database: &self.database,
            pid: self.pid,
            lookup: engine.lookup(),
            scope: &self.scope,
        }
    }
}

/// Plans extended-protocol statements.
pub struct Parser {
    engine: Arc<QueryEngine>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Arc<Prepared>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let state = ConnectionState::of(client);
        let Some(command) = self
            .engine
            .plan_single(sql, &state.view(&self.engine))
            .await
            .map_err(to_pg)?
        else {
            return Ok(None);
        };
        let inferred = match &command {
            Command::Query(plan) | Command::Declare { plan, .. } => params::inferred_types(plan)?,
            _ => Vec::new(),
        };
        Ok(Some(Arc::new(Prepared { command, inferred })))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.inferred.iter().map(|t| params::wire_type(t.as_ref())).collect())
    }

    fn get_result_schema(&self, stmt: &Self::Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(command_fields(&stmt.command, format.unwrap_or(&Format::UnifiedText)))
    }
}

/// The per-server handler (stateless per connection for now).
pub struct PgHandler {
    engine: Arc<QueryEngine>,
    parser: Arc<Parser>,
    /// Routes CancelRequests (by pid and secret key) to running queries.
    pub cancels: Arc<ConnectionManager>,
    /// The operator's statement timeout (`None` = no limit).
    statement_timeout: Option<std::time::Duration>,
    /// Recent small results, for dashboard refreshes.
    cache: Arc<crate::result_cache::ResultCache>,
    /// Which connections are running a statement (idle timeout).
    pub activity: Arc<idle::ActivityBoard>,
}

impl PgHandler {
    pub fn new(
        engine: Arc<QueryEngine>,
        statement_timeout: Option<std::time::Duration>,
        cache: Arc<crate::result_cache::ResultCache>,
    ) -> Self {
        PgHandler {
            cache,
            activity: Arc::new(idle::ActivityBoard::default()),
            parser: Arc::new(Parser { engine: engine.clone() }),
            engine,
            cancels: Arc::new(ConnectionManager::new()),
            statement_timeout,
        }
    }

    /// What stops the statement about to run: a cancel request for this
    /// connection or its statement timeout.
    async fn stop_signal<C: ClientInfo>(
        &self,
        client: &C,
        settings: &session::SessionSettings,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = limits::StopReason> + Send>> {
        let cancel = match client.session_extensions().get::<Arc<pgwire::api::ConnectionHandle>>() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        let session = settings
            .get("statement_timeout")
            .ok()
            .and_then(|v| limits::parse_timeout(&v));
        Box::pin(limits::stop_signal(
            cancel,
            limits::effective_timeout(self.statement_timeout, session),
        ))
    }

    /// Answer a command: session commands here, queries through DataFusion.
    async fn answer<C: ClientInfo>(
        &self,
        client: &C,
        command: Command,
        format: &Format,
        text_key: Option<CacheKey>,
    ) -> PgWireResult<Response> {
        // Busy until the response (and its rows) is gone.
        let busy = self.activity.busy(&client.socket_addr());
        let settings = client
            .session_extensions()
            .get_or_insert_with(session::SessionSettings::default);
        let cursors = client.session_extensions().get_or_insert_with(cursor::Cursors::default);
        let scope = connection_scope(client);
        let setting_error = |e: session::SettingError| user_error(e.sqlstate(), e.message());
        match command {
            Command::Query(plan) => {
                let stop = self.stop_signal(client, &settings).await;
                self.run(plan, format, stop, &scope, text_key, busy).await
            }
            Command::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Command::Commit => {
                cursors.end_transaction().await;
                Ok(Response::TransactionEnd(Tag::new("COMMIT")))
            }
            Command::Rollback => {
                cursors.end_transaction().await;
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Command::Savepoint(tag) => Ok(Response::Execution(Tag::new(tag))),
            Command::Declare { name, plan, hold } => {
                let stream = self.engine.execute(plan.clone(), &scope).await.map_err(to_pg)?;
                cursors.declare(name, plan, stream, hold).await?;
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Command::Fetch { name, count } => {
                let (fields, rows) = cursors.fetch(&name, count, format, query_fields).await?;
                let mut response = QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok)));
                response.set_command_tag("FETCH");
                Ok(Response::Query(response))
            }
            Command::Close(name) => {
                cursors.close(name.as_deref()).await?;
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            Command::Set { name, value } => {
                // Engine settings would reach past this session.
                if name.starts_with("datafusion.") {
                    return Err(user_error(
                        "42501",
                        format!("permission denied to set parameter \"{name}\""),
                    ));
                }
                if name == "statement_timeout" && limits::parse_timeout(&value).is_none() {
                    return Err(user_error(
                        "22023",
                        format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
                    ));
                }
                if !name.is_empty() {
                    settings.set(&name, &value).map_err(setting_error)?;
                }
                Ok(Response::Execution(Tag::new("SET")))
            }
            Command::Reset(name) => {
                settings.reset(name.as_deref()).map_err(setting_error)?;
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Command::Show(name) => {
                let value = settings.get(&name).map_err(setting_error)?;
                let fields = Arc::new(command_fields(&Command::Show(name), format));
                let mut encoder = pgwire::api::results::DataRowEncoder::new(fields.clone());
                encoder.encode_field(&value)?;
                let row = encoder.take_row();
                Ok(Response::Query(QueryResponse::new(fields, stream::iter(vec![Ok(row)]))))
            }
        }
    }

    /// Execute a plan and wrap its stream as a pgwire response; small
    /// results are cached under the plan (and `text_key`, if given).
    async fn run(
        &self,
        plan: LogicalPlan,
        format: &Format,
        stop: std::pin::Pin<Box<dyn std::future::Future<Output = limits::StopReason> + Send>>,
        scope: &crate::tenant::TenantScope,
        text_key: Option<CacheKey>,
        busy: Option<idle::Busy>,
    ) -> PgWireResult<Response> {
        metrics::counter!("tally_gateway_queries_total").increment(1);
        // The plan is cloned into a key only when there is a cache to ask.
        let plan_key = self
            .cache
            .enabled()
            .then(|| CacheKey::Plan(plan.clone(), scope.clone(), format_key(format)));
        if let Some(cached) = plan_key.as_ref().and_then(|k| self.cache.get(k)) {
            return Ok(cached_response(cached));
        }
        let fields = Arc::new(query_fields(&plan, format));
        let started = std::time::Instant::now();
        let batches = self.engine.execute(plan, scope).await.map_err(to_pg)?;
        // Keep the encoded rows while they stream; a complete, small result
        // is cached when the stream ends (not when it fails or is stopped).
        let collector = self.cache.collector();
        let (keep, finished) = (collector.clone(), collector);
        let row_fields = fields.clone();
        let rows = batches
            .map(move |batch| match batch {
                Ok(b) => match encode::encode_batch(&b, &row_fields) {
                    Ok(rows) => {
                        keep.push(&rows);
                        stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>())
                    }
                    Err(e) => {
                        keep.abandon();
                        stream::iter(vec![Err(e)])
                    }
                },
                Err(e) => {
                    keep.abandon();
                    stream::iter(vec![Err(to_pg(GatewayError::DataFusion(e)))])
                }
            })
            .flatten();
        let cache = self.cache.clone();
        let cached_fields = fields.clone();
        let finish = stream::once(async move {
            drop(busy);
            if let Some(rows) = finished.finish() {
                let keys = plan_key.into_iter().chain(text_key).collect();
                cache.put(
                    keys,
                    started,
                    Cached {
                        fields: cached_fields,
                        rows: Arc::new(rows),
                    },
                );
            }
        })
        .filter_map(|()| async { None::<PgWireResult<pgwire::messages::data::DataRow>> });
        let rows = rows.chain(finish);
        Ok(Response::Query(QueryResponse::new(fields, limits::guarded(rows, stop))))
    }
}

/// A cached result as a response.
fn cached_response(cached: Cached) -> Response {
    metrics::counter!("tally_gateway_result_cache_hits_total").increment(1);
    let rows: Vec<PgWireResult<pgwire::messages::data::DataRow>> = cached.rows.iter().cloned().map(Ok).collect();
    Response::Query(QueryResponse::new(cached.fields, stream::iter(rows)))
}

/// The result format as part of a cache key.
fn format_key(format: &Format) -> String {
    match format {
        Format::UnifiedText => "text".into(),
        Format::UnifiedBinary => "binary".into(),
        Format::Individual(codes) => format!("{codes:?}"),
    }
}

#[async_trait]
impl SimpleQueryHandler for PgHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let state = ConnectionState::of(client);
        // A repeated statement within the cache's TTL: no parse, no plan.
        let text_key = self.cache.enabled().then(|| {
            CacheKey::text(
                query,
                &state.scope,
                format!("{}\u{1f}{}", state.user, state.settings.fingerprint()),
            )
        });
        if let Some(cached) = text_key
            .as_ref()
            .and_then(|k| k.as_ref())
            .and_then(|k| self.cache.get(k))
        {
            return Ok(vec![cached_response(cached)]);
        }
        let statements = self.engine.parse(query).map_err(to_pg)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        // Only a single statement is cached by its text.
        let text_key = text_key.flatten().filter(|_| statements.len() == 1);
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            // PostgreSQL stops a multi-statement query at the first error.
            let command = match self.engine.plan(statement, &state.view(&self.engine)).await {
                Ok(c) => c,
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(e))));
                    break;
                }
            };
            match self
                .answer(client, command, &Format::UnifiedText, text_key.clone())
                .await
            {
                Ok(r) => responses.push(r),
                Err(PgWireError::UserError(info)) => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgHandler {
    type Statement = Arc<Prepared>;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let command = match &prepared.command {
            Command::Query(plan) => Command::Query(bind(portal, prepared, plan)?),
            Command::Declare { name, plan, hold } => Command::Declare {
                name: name.clone(),
                plan: bind(portal, prepared, plan)?,
                hold: *hold,
            },
            other => other.clone(),
        };
        // A declared cursor is also a portal of that name (psycopg 3
        // describes it before its first FETCH).
        let cursor_portal = match &command {
            Command::Declare { name, plan, .. } => Some((name.clone(), plan.clone())),
            _ => None,
        };
        let closed = match &command {
            Command::Close(Some(name)) => Some(name.clone()),
            _ => None,
        };
        let response = self.answer(client, command, &portal.result_column_format, None).await?;
        if let Some((name, plan)) = cursor_portal {
            let prepared = Arc::new(Prepared {
                command: Command::Query(plan),
                inferred: Vec::new(),
            });
            let stored = Arc::new(StoredStatement::new(name.clone(), prepared, Vec::new()));
            client
                .portal_store()
                .put_portal(Arc::new(Portal::new_cursor(name, stored)));
        }
        if let Some(name) = closed {
            client.portal_store().rm_portal(&name);
        }
        Ok(response)
    }
}

/// A prepared plan with the portal's parameter values bound.
fn bind(portal: &Portal<Arc<Prepared>>, prepared: &Prepared, plan: &LogicalPlan) -> PgWireResult<LogicalPlan> {
    let values = params::decode(portal, &prepared.inferred)?;
    if values.is_empty() {
        return Ok(plan.clone());
    }
    plan.clone()
        .with_param_values(values)
        .map_err(|e| to_pg(GatewayError::DataFusion(e)))
}

/// Hands the same handler to every connection.
pub struct HandlerFactory {
    pub handler: Arc<PgHandler>,
    pub auth: Arc<auth::Authenticator>,
}

impl PgWireServerHandlers for HandlerFactory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.auth.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(
            self.handler.cancels.clone(),
        ))
    }
}
