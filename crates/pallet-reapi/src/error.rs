//! Errors, each naming the server and the call that failed. The workspace build turns errors
//! into one line of text, so each message carries its cause itself.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{0}` is not a remote execution address (grpc://HOST:PORT; grpcs:// is not supported yet)"
    )]
    Address(String),
    #[error("cannot start the gRPC runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to `{server}`: {message}")]
    Connect { server: String, message: String },
    #[error("{call} on `{server}` failed: {code:?}: {message}")]
    Call {
        server: String,
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{call} on `{server}`: {message}")]
    Protocol {
        server: String,
        call: &'static str,
        message: String,
    },
    #[error("blob {digest} read from `{server}` does not match its digest ({got})")]
    Corrupt {
        server: String,
        digest: String,
        got: String,
    },
    #[error("`{0}` is not a relative path of one tree")]
    Path(String),
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn call(server: &str, call: &'static str, s: &tonic::Status) -> Error {
        Error::Call {
            server: server.to_string(),
            call,
            code: s.code(),
            message: s.message().to_string(),
        }
    }

    /// The gRPC status code, when the server answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Call { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether trying again later may succeed: the server could not be reached or was busy.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connect { .. })
            || matches!(
                self.code(),
                Some(
                    tonic::Code::Unavailable
                        | tonic::Code::ResourceExhausted
                        | tonic::Code::Aborted
                        | tonic::Code::DeadlineExceeded
                )
            )
    }
}
