//! APK v2 format types: versions and their ordering, dependency atoms, package metadata
//! (`.PKGINFO` and APKINDEX records) and the installed database. No I/O lives here.

pub mod checksum;
pub mod dep;
pub mod installed;
pub mod package;
pub mod version;

pub use dep::{DepError, Dependency, Op};
pub use installed::{Acl, InstalledDir, InstalledFile, InstalledPackage};
pub use package::{InfoError, PackageInfo};
pub use version::Version;
