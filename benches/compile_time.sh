#!/usr/bin/env bash
# Compile-time cost of #[saga]: `cargo check` of a crate with a 30-step saga,
# beside the same 30 async functions without the macro. Dependencies are
# built first; then each crate's own check is timed (best of 5).
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

best_check() { # dir
    local best=999999
    (cd "$1" && cargo check --quiet)
    for _ in 1 2 3 4 5; do
        touch "$1/src/lib.rs"
        local start end
        start=$(date +%s%N)
        (cd "$1" && cargo check --quiet)
        end=$(date +%s%N)
        local ms=$(((end - start) / 1000000))
        [ "$ms" -lt "$best" ] && best=$ms
    done
    echo "$best"
}

make_crate with_macro yes
make_crate without_macro no
with=$(best_check "$work/with_macro")
without=$(best_check "$work/without_macro")
echo "cargo check, 30-step saga with #[saga]:     ${with} ms"
echo "cargo check, the same functions, no macro:  ${without} ms"
awk -v a="$with" -v b="$without" 'BEGIN { printf "the macro adds %.0f%%\n", (a - b) * 100 / b }'
