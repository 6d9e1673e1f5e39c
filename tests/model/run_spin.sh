#!/bin/sh
# run_spin.sh MODEL WORKDIR SPIN_DEFS CC_DEFS PAN_FLAGS
#
# Generates a verifier for one configuration of the Promela model
# (core/model/gil.pml), compiles it and runs it.  Passes only if spin found
# no error AND the search was complete: no depth or memory bound was hit.
# The verifier's report is printed either way.
set -eu
model=$1
dir=$2
spin_defs=$3
cc_defs=$4
pan_flags=$5

case $model in
/*) ;;
*) model=$PWD/$model ;;
esac
mkdir -p "$dir"
cd "$dir"
rm -f pan pan.* ./*.trail
# shellcheck disable=SC2086 # the define lists are meant to split
spin $spin_defs -a "$model" > spin.log
# shellcheck disable=SC2086
"${CC:-cc}" -O2 -w -DMEMLIM=2048 $cc_defs -o pan pan.c
# shellcheck disable=SC2086
./pan $pan_flags -m3000000 > pan.log 2>&1 || true
cat pan.log
if ! grep -q "errors: 0" pan.log; then
    echo "run_spin.sh: spin found an error; replay it with:" >&2
    echo "  (cd $dir && spin $spin_defs -t -k gil.pml.trail -p $model)" >&2
    exit 1
fi
if grep -E "max search depth too small|reached -DMEMLIM|Search not completed" pan.log; then
    echo "run_spin.sh: the search was not complete" >&2
    exit 1
fi
