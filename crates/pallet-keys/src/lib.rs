//! pallet-keys
