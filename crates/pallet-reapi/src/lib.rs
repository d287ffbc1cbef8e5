//! A blocking client of the Bazel Remote Execution API v2 and of the remote-workers Bots API,
//! as pallet's remote builds and `pallet worker` use them.
//!
//! - [`digest`]: SHA-256 digests and the canonical encoding of messages;
//! - [`tree`]: Merkle input roots from files on disk or in memory, and back to disk;
//! - [`action`]: Command and Action messages in canonical form;
//! - [`Client`]: Capabilities, the CAS (FindMissingBlobs first; small blobs batched within the
//!   server's limit, large ones through ByteStream), the ActionCache, and Execute with
//!   WaitExecution;
//! - `grpcs://` (TLS through rustls, trusting the system's roots and a CA file) and
//!   [`Headers`] sent with every call, both in [`ConnectOptions`];
//! - [`bots`]: bot sessions and leases (BuildGrid's worker protocol);
//! - [`worker`]: a worker on those leases, running each action in a fresh folder.
//!
//! tokio stays inside this crate: every call blocks the calling thread, and any number of
//! threads may share one [`Client`].

pub mod action;
pub mod bots;
mod client;
pub mod digest;
mod error;
pub mod tree;
pub mod worker;

pub use client::{Client, ConnectOptions, Headers, Stats, Transport, endpoint_uri};
pub use error::Error;

/// The REAPI v2 messages and services.
pub mod proto {
    pub use bazel_remote_apis::build::bazel::remote::execution::v2::*;
    pub use bazel_remote_apis::google::rpc::Status;
}

/// Wrap a REAPI message in the Bots API's `Any`.
pub fn any<M: prost::Message>(full_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: bots::type_url(full_name),
        value: m.encode_to_vec(),
    }
}
