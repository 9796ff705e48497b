#!/usr/bin/env bash
# Builds the seed corpora of the libFuzzer targets from the repository's
# kasm programs: every jit-tests/**/*.kasm, std and tests/fuzz/seeds.
#   corpus/kasm   the text itself (assembler, verify_kasm)
#   corpus/klib   each program that assembles, as a .klib (reader, verifier)
# Usage (from the repository root): tests/fuzz/libfuzzer/seed.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=tests/fuzz/libfuzzer/corpus
mkdir -p "$out/kasm" "$out/klib"
cargo build --release --bin kiln
n=0
while IFS= read -r f; do
  name=$(printf '%s' "$f" | tr '/' '_')
  cp "$f" "$out/kasm/$name"
  if target/release/kiln asm "$f" -o "$out/klib/${name%.kasm}.klib" 2>/dev/null; then
    n=$((n + 1))
  fi
done < <(find jit-tests tests/fuzz/seeds src/runtime -name '*.kasm' | sort)
echo "seeded $out/kasm ($(ls "$out/kasm" | wc -l) files) and $out/klib ($n files)"
