//! pallet-image-config
