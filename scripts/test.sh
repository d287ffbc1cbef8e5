#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test in the workspace.
# Tests that need ../shared/ (real packages made by others) say so when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo build --release --bin pallet
cargo test --workspace --release
