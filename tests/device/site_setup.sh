#!/bin/bash
# site_setup.sh SITE CPP_TAR [RUST_SO_XZ] (on the device, from the repository root): the packages
# a device script imports, made in SITE (then put SITE on PYTHONPATH): jax_flash_attn from
# CPP_TAR (a tar.xz of the site that tests/device/gpu_build.py built) and, given RUST_SO_XZ (an
# xz-compressed _jflash_attn_rust.so from `bazel build //python:wheels`), jflash_attn beside it.
# Both take this checkout's front end, so that a prebuilt extension runs the current Python code.
set -e
S=$1; rm -rf "$S"; mkdir -p "$S"
tar xJf "$2" -C "$S"
cp python/frontend/*.py "$S/jax_flash_attn/"
if [ -n "$3" ]; then
  mkdir -p "$S/jflash_attn"
  cp python/frontend/*.py python/jflash_attn/_binding.py "$S/jflash_attn/"
  xz -dc "$3" > "$S/jflash_attn/_jflash_attn_rust.so"
fi
