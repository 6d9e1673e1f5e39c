#!/bin/sh
# Test rust.sys_generated: src/bindings.rs is what generate.sh makes from
# today's headers.  Exit 77 (CTest: skipped) when Debian's bindgen is not
# installed, or is another version than the one that made the file (its
# output differs between versions; the field-by-field checks against the C
# compiler and abi/tether-abi.json still run in `cargo test`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v bindgen >/dev/null 2>&1; then
  echo "SKIP: bindgen is not installed (Debian: apt-get install bindgen)"
  exit 77
fi
have=$(bindgen --version | awk '{print $2}')
made=$(sed -n '1s/.*with bindgen \([^:]*\):.*/\1/p' "$here/src/bindings.rs")
if [ "$have" != "$made" ]; then
  echo "SKIP: bindgen $have is not $made, which generated src/bindings.rs"
  exit 77
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$here/generate.sh" "$tmp"
if ! diff -u "$here/src/bindings.rs" "$tmp"; then
  echo "FAIL: bindings/rust/tether-sys/src/bindings.rs is stale: run bindings/rust/tether-sys/generate.sh"
  exit 1
fi
echo "src/bindings.rs is what bindgen $have makes from the headers"
