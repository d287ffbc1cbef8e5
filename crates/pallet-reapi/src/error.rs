//! Errors, each naming the server and the call that failed. The workspace build turns errors
//! into one line of text, so each message carries its cause itself.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "`{0}` is not a remote execution address (grpc://HOST:PORT for plaintext, \
         grpcs://HOST:PORT for TLS)"
    )]
    Address(String),
    /// A `--remote-header` that cannot be sent; `message` never holds the value.
    #[error("--remote-header `{name}`: {message}")]
    Header { name: String, message: String },
    #[error("--remote-tls-ca `{}`: {message}", path.display())]
    TlsCa { path: PathBuf, message: String },
    #[error(
        "TLS with `{server}` failed: {message} (check --remote-tls-ca: the server's certificate \
         must be signed by a CA of this system or of that file, for the host in the URL; use \
         grpc:// if the server does not speak TLS)"
    )]
    Tls { server: String, message: String },
    #[error("cannot start the gRPC runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot connect to `{server}`: {message}")]
    Connect { server: String, message: String },
    #[error("{call} on `{server}` failed: {code:?}: {message}{}", hint(server, *.code, message))]
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

/// What to do about a failed call: credentials the server wants, or TLS it speaks.
fn hint(server: &str, code: tonic::Code, message: &str) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => {
            " (the server wants credentials: check --remote-header, e.g. `authorization=Bearer …`)"
        }
        tonic::Code::PermissionDenied => {
            " (the credentials given with --remote-header do not allow this call)"
        }
        // A TLS server answers HTTP/2 in the clear by closing the connection.
        tonic::Code::Unknown
            if server.starts_with("grpc://") && message.starts_with("transport error") =>
        {
            " (if the server speaks TLS, use grpcs://)"
        }
        _ => "",
    }
}

impl Error {
    pub(crate) fn call(server: &str, call: &'static str, s: &tonic::Status) -> Error {
        // A status made from a transport failure says only "transport error"; the cause is in
        // its sources.
        let mut message = s.message().to_string();
        if let Some(src) = std::error::Error::source(s) {
            let chain = crate::client::source_chain(src);
            if chain.starts_with(&message) {
                message = chain;
            } else if !message.contains(&chain) {
                message = format!("{message}: {chain}");
            }
        }
        Error::Call {
            server: server.to_string(),
            call,
            code: s.code(),
            message,
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
