//! pallet-apk-stream
