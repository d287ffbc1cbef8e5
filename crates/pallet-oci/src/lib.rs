//! pallet-oci
