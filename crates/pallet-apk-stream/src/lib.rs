//! APK v2 packages as streams: read and verify (signature, `datahash`, per-file SHA-1) in one
//! pass, and write them deterministically.

mod hashing;
mod inflate;
pub mod pgzip;
pub mod reader;
pub mod tarw;
pub mod writer;
pub mod xattr;

pub use reader::{
    ApkError, ApkMeta, DataEntry, MemberRange, ReadOptions, Trust, check_path, member_ranges,
    read_apk, read_signed_archive,
};
pub use writer::{WriteError, WriteOptions, Written, resign_apk, signature_member, write_apk};
