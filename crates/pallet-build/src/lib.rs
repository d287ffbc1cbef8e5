//! The package builder: run compiled melange pipelines in a bubblewrap sandbox, generate dependencies, assemble and sign packages.

pub mod assemble;
pub mod compile;
pub mod driver;
pub mod lint;
pub mod policy;
pub mod recipe;
pub mod runner;
pub mod sca;
