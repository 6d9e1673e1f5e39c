#!/usr/bin/env bash
# copy_tree.sh SOURCE_DIR DEST - copies the source tree as a fresh clone
# would have it plus uncommitted edits: the files git tracks or would track
# (not build trees, not ignored files); without git, everything but build/
# and .git.  The package tests build in the copy, never in the source.
set -euo pipefail
src="$1" dest="$2"
mkdir -p "$dest"
if command -v git >/dev/null && git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  # Tracked files deleted in the work tree are left out.
  (cd "$src" && git ls-files -z --cached --others --exclude-standard |
     while IFS= read -r -d '' f; do
       [ -e "$f" ] || [ -L "$f" ] && printf '%s\0' "$f"
     done | tar --null -T - -cf -) | tar -C "$dest" -xf -
else
  (cd "$src" && tar --exclude=./build --exclude='./build-*' --exclude=./.git \
     -cf - .) | tar -C "$dest" -xf -
fi
