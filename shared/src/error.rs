//! The error every port and use case returns. Adapters map their failures
//! into these variants once (a conditional-check failure is `Conflict`, never
//! a string match); the edges map them once to an HTTP status, a Lambda
//! diagnostic or a CLI exit code.

use crate::domain::InvalidValue;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input from outside is invalid; nothing was changed.
    #[error("invalid input: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Validation(Vec<InvalidValue>),
    #[error("not found: {0}")]
    NotFound(String),
    /// A conditional write lost: the item exists, or its version moved on.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Worth retrying (throttling, timeouts, 5xx from a dependency).
    #[error("transient failure: {context}")]
    Transient {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
    /// Not worth retrying (misconfiguration, access denied, corrupt data).
    #[error("permanent failure: {context}")]
    Permanent {
        context: String,
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Validation(vec![InvalidValue::new(field, message)])
    }
    pub fn transient(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Transient {
            context: context.into(),
            source: Some(source.into()),
        }
    }
    pub fn permanent(context: impl Into<String>) -> Self {
        Error::Permanent {
            context: context.into(),
            source: None,
        }
    }
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Transient { .. } | Error::Conflict(_))
    }
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
