//! pallet-fs
