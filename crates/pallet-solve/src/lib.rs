//! pallet-solve
