#!/bin/sh
# Redactor throughput: 100 MB of build-output lines with 20 secrets (each
# in every encoding the redactor knows) through the one redaction point.
# Usage: scripts/bench/redact.sh [CARGO TEST ARGS, e.g. --release]
set -eu
cd "$(dirname "$0")/../.."
cargo test "$@" --lib ui::redact::tests::redact_throughput -- --ignored --nocapture 2>&1 | grep -E "^redactor:|test result"
