#!/usr/bin/env bash
# Sets up Bazel's Rust build (rust/, MODULE.bazel's Rust section) on a machine
# that reaches package registries (Rust's through cargo) but neither GitHub
# nor the Rust project's download server, such as our build machines. It writes
# three things into user.bazelrc at the repository root (git-ignored; .bazelrc
# try-imports it), between marker lines, keeping anything else in that file:
#
#  1. crate_universe's generator. rules_rust's crate extension runs a
#     `cargo-bazel` binary it normally downloads from GitHub. This script builds
#     the release that matches rules_rust 0.54.1 (cargo-bazel 0.15.0, see
#     rules_rust's crate_universe/version.bzl) from the crate registry, once:
#         cargo install cargo-bazel --version 0.15.0 --locked --root <cache>
#     and hands it to rules_rust through the repository environment:
#         --repo_env=CARGO_BAZEL_GENERATOR_URL=file://<cache>/bin/cargo-bazel
#         --repo_env=CARGO_BAZEL_GENERATOR_SHA256=<its sha256>
#  2. crate_universe's cargo and rustc. The extension runs them from
#     @rust_host_tools, which rules_rust downloads; this points that repository
#     at a directory linking the host toolchain's sysroot (`rustc --print sysroot`):
#         --override_repository=rules_rust~~rust_host_tools~rust_host_tools=<cache>/rust_host_tools
#     cargo-bazel 0.15.0 looks for cargo's cache of the registry's index in
#     the directory cargo named it before Rust 1.85 (<host>-6f17d22bba15001f);
#     newer cargo names it <host>-1949cf8c6b5b557f. So crate_universe gets a
#     CARGO_HOME of its own, where this script fetches rust/Cargo.lock's crates
#     and links the old name to the new one (the user's ~/.cargo is left alone):
#         --repo_env=CARGO_HOME=<cache>/cargo_home
#  3. The Rust toolchain for builds: the host's rustc (third_party/rust/local_rust.bzl),
#     considered before the toolchain MODULE.bazel registers, which is never fetched:
#         --extra_toolchains=@local_rust//:toolchain
#
# Usage: rust/offline-setup.sh            (from anywhere; idempotent)
# Needs: rustc and cargo on PATH (rustup's stable is fine), sha256sum.
# Environment: JFA_RUST_CACHE, where the above lives (default ~/.cache/jax-flash-attn-rust).
# Re-run it after changing the host Rust toolchain. Undo: delete the block from user.bazelrc.
set -euo pipefail

CARGO_BAZEL_VERSION=0.15.0 # matches rules_rust 0.54.1 (MODULE.bazel)
HOST_TOOLS_REPO=rules_rust~~rust_host_tools~rust_host_tools # its canonical name in Bazel 7
BEGIN="# >>> rust/offline-setup.sh >>> (generated; re-run the script to refresh)"
END="# <<< rust/offline-setup.sh <<<"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${JFA_RUST_CACHE:-$HOME/.cache/jax-flash-attn-rust}"

for tool in rustc cargo sha256sum; do
  command -v "$tool" >/dev/null || { echo "offline-setup.sh: $tool is not on PATH" >&2; exit 1; }
done

# 1. cargo-bazel, built once per version.
generator_root="$cache/cargo-bazel-$CARGO_BAZEL_VERSION"
generator="$generator_root/bin/cargo-bazel"
if ! "$generator" --version 2>/dev/null | grep -qx "cargo-bazel $CARGO_BAZEL_VERSION"; then
  echo "offline-setup.sh: building cargo-bazel $CARGO_BAZEL_VERSION (a few minutes)" >&2
  cargo install cargo-bazel --version "$CARGO_BAZEL_VERSION" --locked --root "$generator_root"
fi
generator_sha256="$(sha256sum "$generator" | cut -d' ' -f1)"

# 2. A repository standing in for @rust_host_tools: the host sysroot's bin/ and lib/.
sysroot="$(rustc --print sysroot)"
host_tools="$cache/rust_host_tools"
mkdir -p "$host_tools"
ln -sfn "$sysroot/bin" "$host_tools/bin"
ln -sfn "$sysroot/lib" "$host_tools/lib"
: >"$host_tools/REPO.bazel"
cat >"$host_tools/BUILD.bazel" <<EOF
# Written by rust/offline-setup.sh: the host's Rust toolchain ($(rustc --version)),
# in place of the one rules_rust's rust_host_tools extension downloads.
exports_files(glob(["bin/*"]))
EOF

# crate_universe's CARGO_HOME: fetch the locked crates, then make the index
# cache reachable under the pre-1.85 directory name too.
cargo_home="$cache/cargo_home"
CARGO_HOME="$cargo_home" cargo fetch --locked --manifest-path "$repo_root/rust/Cargo.toml"
for index in "$cargo_home"/registry/index/*-1949cf8c6b5b557f; do
  [[ -d "$index" ]] && ln -sfn "$(basename "$index")" "${index%-*}-6f17d22bba15001f"
done

# 3. The block in user.bazelrc.
block="$BEGIN
common --repo_env=CARGO_BAZEL_GENERATOR_URL=file://$generator
common --repo_env=CARGO_BAZEL_GENERATOR_SHA256=$generator_sha256
common --override_repository=$HOST_TOOLS_REPO=$host_tools
common --repo_env=CARGO_HOME=$cargo_home
common --extra_toolchains=@local_rust//:toolchain
$END"

rc="$repo_root/user.bazelrc"
kept=""
if [[ -f "$rc" ]]; then
  # Everything but an earlier block of ours.
  kept="$(awk -v b="$BEGIN" -v e="$END" '$0 == b {skip = 1} !skip {print} $0 == e {skip = 0}' "$rc")"
fi
{
  [[ -n "$kept" ]] && printf '%s\n' "$kept"
  printf '%s\n' "$block"
} >"$rc.tmp"
mv "$rc.tmp" "$rc"
echo "offline-setup.sh: wrote the Rust settings into $rc:" >&2
printf '%s\n' "$block" >&2
