//! pallet-image
