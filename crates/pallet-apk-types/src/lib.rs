//! pallet-apk-types
