//! pallet-melange
