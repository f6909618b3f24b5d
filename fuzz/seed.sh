#!/usr/bin/env bash
# Seeds the fuzz corpus with real VCL.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/compile
cp ../samples/*.vcl corpus/compile/ 2>/dev/null || true
cp ../../shared/corpus/vcl/*.vcl corpus/compile/ 2>/dev/null || true
