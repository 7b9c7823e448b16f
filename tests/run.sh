#!/usr/bin/env bash
# The test command: installs what the tests need on a machine that never saw the project, then
# runs the format check, clippy and every test. `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: strace (proves that `twinloom run` with a bad config opens no socket),
# socat (a pseudo-terminal pair stands in for an RS-485 line in the RTU test), and Rust 1.96
# with its library source (rustc-web, cargo-web, rust-web-src: the plugin toolchain fallback,
# which builds std from source when rustup cannot download the wasm32-wasip2 target; a test
# builds a plugin with it).
missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v socat >/dev/null 2>&1 || missing+=(socat)
[ -x /usr/bin/cargo ] || missing+=(cargo-web)
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -d /usr/lib/rustlib/src/rust/library/std ] || missing+=(rust-web-src)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Independent protocol peers from PyPI (pymodbus, asyncua), in a virtualenv at .venv.
if ! .venv/bin/python -c "import pymodbus, asyncua, prometheus_client" >/dev/null 2>&1; then
  echo "tests/run.sh: creating .venv with the Python protocol peers" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
fi

# Toolchain parts the workspace needs.
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then rustup component add rustfmt; fi
if ! command -v cargo-nextest >/dev/null 2>&1; then cargo install --locked cargo-nextest; fi
# Plugins are WebAssembly components built for wasm32-wasip2 (the plugin tests build them). When
# rustup cannot download it, `twinloom plugin build` falls back to building std from the Debian
# sources installed above.
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
  rustup target add wasm32-wasip2 ||
    echo "tests/run.sh: cannot add wasm32-wasip2; plugins will be built with the build-std fallback" >&2
fi

# A CI run builds once from scratch: incremental state would only take disk (several GB).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast
