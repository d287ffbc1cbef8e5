//! The image builder: apko's configuration, the build (resolve, install, accounts, paths,
//! layer, OCI image), and SBOMs. [`image::build_image`] is a whole multi-architecture build
//! with its index and SBOMs; the CLI is a thin layer over it.

pub mod baseimage;
pub mod build;
mod busybox;
pub mod certs;
pub mod clean;
pub mod config;
pub mod cpio;
pub mod docker;
pub mod dot;
pub mod image;
pub mod initramfs;
pub mod layers;
mod ldso;
pub mod lock;
pub mod oci;
pub mod publish;
pub mod resolve;
pub mod sbom;
pub mod template;
pub mod timing;
pub mod uptodate;
pub mod vcs;
