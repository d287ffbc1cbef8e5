//! pallet-sbom
