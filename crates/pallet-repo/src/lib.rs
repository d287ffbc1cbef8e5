//! pallet-repo
