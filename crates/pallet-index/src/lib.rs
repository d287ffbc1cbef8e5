//! pallet-index
