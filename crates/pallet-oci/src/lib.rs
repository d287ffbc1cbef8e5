//! Everything OCI for pallet: deterministic parallel gzip for layers, image
//! config/manifest/index JSON, and the OCI layout and docker-archive writers.

pub mod auth;
pub mod error;
pub mod gzip;
pub mod image;
pub mod push;
pub mod write;

pub use error::{Error, Result};
pub use gzip::{BLOCK_SIZE, LayerDigests, LayerWriter};
pub use image::{
    Descriptor, History, ImageConfig, Index, MEDIA_CONFIG, MEDIA_INDEX, MEDIA_LAYER_GZIP,
    MEDIA_MANIFEST, Manifest, Platform, RootFs, RuntimeConfig,
};
pub use write::{BuiltImage, Layer, write_docker_archive, write_oci_layout};
