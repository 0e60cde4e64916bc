#!/usr/bin/env bash
# Compile-time cost of #[saga]: `cargo check` of a crate with a 30-step saga,
# beside the same 30 async functions without the macro. Dependencies are
# built first; then each crate's own check is timed (best of 5), three ways:
#   full    the whole crate checked (incremental compilation off), as on a
#           clean build or in CI;
#   edit    one step's body changed, then checked incrementally, as while
#           working on a saga;
#   touch   checked again with nothing changed (incremental caches answer
#           almost everything: the floor, not a realistic edit).
#
# Run with: bash benches/compile_time.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CARGO_TARGET_DIR="$work/target"

make_crate() { # name, with_macro
    local dir="$work/$1"
    mkdir -p "$dir/src"
    cat > "$dir/Cargo.toml" <<TOML
[package]
name = "$1"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
saga = { path = "$root" }

[workspace]
TOML
    {
        echo "#![allow(dead_code)]"
        echo "use saga::prelude::*;"
        echo "pub struct Big;"
        if [ "$2" = yes ]; then echo "#[saga(input = u64)]"; fi
        echo "impl Big {"
        for i in $(seq 0 29); do
            if [ "$2" = yes ]; then
                if [ "$i" = 29 ]; then echo "    #[step(pivot)]"; else echo "    #[step(compensate = undo_$i)]"; fi
            fi
            if [ "$i" = 0 ]; then
                echo "    async fn s$i(&self, input: &u64) -> Result<u64, StepError> { Ok(*input) }"
            else
                echo "    async fn s$i(&self, s$((i - 1)): &u64) -> Result<u64, StepError> { Ok(s$((i - 1)) + 1) }"
            fi
            if [ "$i" != 29 ]; then
                echo "    async fn undo_$i(&self, s$i: &u64) -> Result<(), StepError> { let _ = s$i; Ok(()) }"
            fi
        done
        echo "}"
    } > "$dir/src/lib.rs"
}

# Prints the best of 5 wall-clock times (ms) of `cargo check` in crate $1,
# each after running $2 (which prepares the check) in it, with incremental
# compilation $3 (0 or 1).
best_check() { # dir, prepare, incremental
    local best=999999
    (cd "$1" && CARGO_INCREMENTAL=$3 cargo check --quiet)
    for i in 1 2 3 4 5; do
        (cd "$1" && $2 "$i")
        local start end
        start=$(date +%s%N)
        (cd "$1" && CARGO_INCREMENTAL=$3 cargo check --quiet)
        end=$(date +%s%N)
        local ms=$(((end - start) / 1000000))
        [ "$ms" -lt "$best" ] && best=$ms
    done
    echo "$best"
}

touch_it() { touch src/lib.rs; }
edit_it() { sed -i "s/Ok(s4 + [0-9]*)/Ok(s4 + $1)/" src/lib.rs; }

make_crate with_macro yes
make_crate without_macro no
for how in "full touch_it 0" "edit edit_it 1" "touch touch_it 1"; do
    set -- $how
    with=$(best_check "$work/with_macro" "$2" "$3")
    without=$(best_check "$work/without_macro" "$2" "$3")
    awk -v how="$1" -v a="$with" -v b="$without" \
        'BEGIN { printf "%-6s with #[saga] %4d ms, without %4d ms: the macro adds %.0f%%\n", how, a, b, (a - b) * 100 / b }'
done
