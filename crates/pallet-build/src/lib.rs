//! The package builder: run compiled melange pipelines in a bubblewrap sandbox, generate dependencies, assemble and sign packages.

pub mod apkfile;
pub mod assemble;
pub mod compile;
pub mod dotenv;
pub mod driver;
pub mod emulation;
pub mod license;
pub mod lint;
pub mod log;
pub mod policy;
pub mod qemu;
pub mod query;
pub mod rebuild;
pub mod recipe;
pub mod renovate;
pub mod request;
pub mod runner;
pub mod sca;
pub mod scan;
pub mod setcap;
pub mod source;
pub mod textdiff;
pub mod yamledit;
