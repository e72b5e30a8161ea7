//! The crate's one error type and its one mapping onto gRPC statuses.

use ferrox_bdev::lvol::LvolError;
use ferrox_bdev::RegistryError;
use ferrox_nvmeof::TargetError;
use ferrox_reactor::ReplyError;

use crate::state::StoreError;

/// Everything the control plane can fail with. Each variant says which gRPC code it
/// becomes ([`ControlError::code`]); the message is what the client prints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error("invalid argument {field}: {why}")]
    InvalidArgument { field: &'static str, why: String },
    #[error("no {kind} named {name:?}")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists with different parameters: {difference}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        difference: String,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    /// What another node of the cluster answered a forwarded request.
    #[error("node {node}: {msg}")]
    Peer {
        node: String,
        kind: Kind,
        msg: String,
    },
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("the control plane is not ready: {0}")]
    Unavailable(String),
    /// A concurrent change got there first, or held what this one needed too long.
    #[error("{0}")]
    Aborted(String),
    #[error("{during}: {source}")]
    Lvol {
        during: String,
        #[source]
        source: LvolError,
    },
    #[error("{during}: {source}")]
    Target {
        during: String,
        #[source]
        source: TargetError,
    },
    #[error("{during}: {source}")]
    Registry {
        during: String,
        #[source]
        source: RegistryError,
    },
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("state store: record {key:?} is unreadable: {source}")]
    Record {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a reactor did not answer: {0}")]
    Reactor(#[source] ReplyError),
    #[error("{during}: {source}")]
    Io {
        during: String,
        #[source]
        source: std::io::Error,
    },
    #[error("internal: {0}")]
    Internal(String),
}

/// What a caller may do about an error: the gRPC code, as a small enum of our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    /// A concurrent change won a race (a compare-and-swap lost): retry.
    Aborted,
    Unavailable,
    Internal,
}

impl ControlError {
    pub fn invalid(field: &'static str, why: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            why: why.into(),
        }
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    pub fn lvol(during: impl Into<String>, source: LvolError) -> Self {
        Self::Lvol {
            during: during.into(),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Self::InvalidArgument { .. } => Kind::InvalidArgument,
            Self::NotFound { .. } => Kind::NotFound,
            Self::AlreadyExists { .. } => Kind::AlreadyExists,
            Self::FailedPrecondition(_) => Kind::FailedPrecondition,
            Self::Peer { kind, .. } => *kind,
            Self::ResourceExhausted(_) => Kind::ResourceExhausted,
            Self::Unavailable(_) | Self::Reactor(_) => Kind::Unavailable,
            Self::Aborted(_) => Kind::Aborted,
            Self::Lvol { source, .. } => match source {
                LvolError::NotFound(_) => Kind::NotFound,
                LvolError::Exists(_) => Kind::AlreadyExists,
                LvolError::NoSpace { .. } | LvolError::MetadataFull(_) => Kind::ResourceExhausted,
                LvolError::Invalid(_) => Kind::InvalidArgument,
                LvolError::HasClones(..)
                | LvolError::Busy(..)
                | LvolError::ReadOnly(_)
                | LvolError::NotSnapshot(_)
                | LvolError::WouldDropData { .. }
                | LvolError::NotAPool { .. }
                | LvolError::NewerFormat { .. }
                | LvolError::Corrupt { .. } => Kind::FailedPrecondition,
                LvolError::Reactor(_) | LvolError::Closed => Kind::Unavailable,
                _ => Kind::Internal,
            },
            Self::Target { source, .. } => match source {
                TargetError::Nqn { .. } | TargetError::HostNqn { .. } => Kind::InvalidArgument,
                TargetError::Duplicate(_) => Kind::AlreadyExists,
                TargetError::Reactor => Kind::Unavailable,
                _ => Kind::FailedPrecondition,
            },
            Self::Registry { source, .. } => match source {
                RegistryError::NotFound(_) => Kind::NotFound,
                RegistryError::Exists(_) => Kind::AlreadyExists,
                RegistryError::Invalid { .. } => Kind::InvalidArgument,
                _ => Kind::FailedPrecondition,
            },
            Self::Io { .. } => Kind::FailedPrecondition,
            Self::Store(e) => match e {
                StoreError::Conflict { .. } => Kind::Aborted,
                StoreError::Unavailable { .. } => Kind::Unavailable,
                _ => Kind::Internal,
            },
            Self::Record { .. } | Self::Internal(_) => Kind::Internal,
        }
    }
}

/// The one mapping from the control plane's errors to gRPC statuses.
impl From<ControlError> for tonic::Status {
    fn from(e: ControlError) -> Self {
        let code = match e.kind() {
            Kind::InvalidArgument => tonic::Code::InvalidArgument,
            Kind::NotFound => tonic::Code::NotFound,
            Kind::AlreadyExists => tonic::Code::AlreadyExists,
            Kind::FailedPrecondition => tonic::Code::FailedPrecondition,
            Kind::ResourceExhausted => tonic::Code::ResourceExhausted,
            Kind::Aborted => tonic::Code::Aborted,
            Kind::Unavailable => tonic::Code::Unavailable,
            Kind::Internal => tonic::Code::Internal,
        };
        // The whole chain: the context and every cause.
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            let t = s.to_string();
            if !msg.contains(&t) {
                msg.push_str(": ");
                msg.push_str(&t);
            }
            src = s.source();
        }
        tonic::Status::new(code, msg)
    }
}
