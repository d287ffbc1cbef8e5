//! The image builder: apko's configuration, the build (resolve, install, accounts, paths,
//! layer, OCI image), and SBOMs. The CLI is a thin layer over [`build::build_arch`].

pub mod build;
mod busybox;
pub mod config;
pub mod cpio;
pub mod dot;
mod ldso;
pub mod lock;
pub mod oci;
pub mod publish;
pub mod resolve;
pub mod sbom;
pub mod template;
pub mod vcs;
