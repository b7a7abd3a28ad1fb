//! One mapping from any gateway error to a PostgreSQL SQLSTATE.
//!
//! Every error a client can see passes through [`to_pg`], so the code a
//! client branches on (42P01 unknown table, 42703 unknown column, 42601
//! syntax, 0A000 unsupported, 25006 read-only, ...) is decided in one place.

use crate::keymap::KeymapError;
use datafusion::common::{DataFusionError, SchemaError};
use pgwire::error::{ErrorInfo, PgWireError};

/// Errors of the gateway's query path.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error("cannot execute {0} in a read-only transaction: Tally's tables are derived from the event streams")]
    ReadOnly(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("cannot insert multiple commands into a prepared statement")]
    MultipleStatements,
    /// A refusal with its own SQLSTATE (unknown relation in `::regclass`,
    /// unknown setting in `current_setting`, ...).
    #[error("{message}")]
    Sql { code: &'static str, message: String },
}

impl From<crate::rewrite::RewriteError> for GatewayError {
    fn from(e: crate::rewrite::RewriteError) -> Self {
        GatewayError::Sql {
            code: e.code,
            message: e.message,
        }
    }
}

/// The SQLSTATE of an error.
pub fn sqlstate(e: &GatewayError) -> &'static str {
    match e {
        GatewayError::ReadOnly(_) => "25006",
        GatewayError::Unsupported(_) => "0A000",
        GatewayError::MultipleStatements => "42601",
        GatewayError::Sql { code, .. } => code,
        GatewayError::DataFusion(df) => datafusion_sqlstate(df),
    }
}

fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match e {
        DataFusionError::Context(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Shared(inner) => datafusion_sqlstate(inner),
        DataFusionError::Diagnostic(_, inner) => datafusion_sqlstate(inner),
        DataFusionError::Collection(errs) => errs.first().map_or("XX000", datafusion_sqlstate),
        DataFusionError::SQL(_, _) => "42601",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { .. } => "42703",
            SchemaError::AmbiguousReference { .. } => "42702",
            SchemaError::DuplicateQualifiedField { .. } | SchemaError::DuplicateUnqualifiedField { .. } => "42701",
        },
        DataFusionError::Plan(msg) => {
            let m = msg.to_ascii_lowercase();
            if m.contains("table") && m.contains("not found") {
                "42P01"
            } else if m.contains("no field named") {
                "42703"
            } else if m.contains("invalid function") || m.contains("no function matches") {
                "42883"
            } else if m.contains("cannot be cast") || m.contains("coerc") {
                "42804"
            } else {
                "42601"
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53200",
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            datafusion::arrow::error::ArrowError::DivideByZero => "22012",
            datafusion::arrow::error::ArrowError::CastError(_)
            | datafusion::arrow::error::ArrowError::ParseError(_) => "22P02",
            _ => "XX000",
        },
        DataFusionError::External(inner) => match inner.downcast_ref::<KeymapError>() {
            Some(KeymapError::TooManyBuckets { .. }) => "54000",
            Some(_) => "58000",
            None => match inner.downcast_ref::<DataFusionError>() {
                Some(df) => datafusion_sqlstate(df),
                None => "XX000",
            },
        },
        _ => "XX000",
    }
}

/// The client-facing message: DataFusion's context chain stripped to the root.
fn message(e: &GatewayError) -> String {
    match e {
        GatewayError::DataFusion(df) => df.message().into_owned(),
        other => other.to_string(),
    }
}

/// An ErrorResponse with a SQLSTATE: the one constructor every refusal of
/// the gateway goes through.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// A refusal during startup or authentication: severity FATAL, as
/// PostgreSQL sends it, since the connection ends with it.
pub fn fatal_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.into(),
    )))
}

/// The ErrorResponse fields of an error (for answers that carry it inline,
/// as in a multi-statement query).
pub fn error_info(e: GatewayError) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_owned(), sqlstate(&e).to_owned(), message(&e))
}

/// Convert to a pgwire ErrorResponse.
pub fn to_pg(e: GatewayError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

impl From<GatewayError> for PgWireError {
    fn from(e: GatewayError) -> Self {
        to_pg(e)
    }
}
