#!/usr/bin/env bash
# The test command: installs what the tests need on a machine that never saw the project, then
# runs the format check, clippy and every test. `.ci/run` calls this same script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each phase prints its name and, when it ends, how long it took (CI keeps a fresh run under
# 45 minutes; these lines show where the time goes).
phase_name=""
phase_start=$SECONDS
run_started=$SECONDS
phase() {
  if [ -n "$phase_name" ]; then
    echo "tests/run.sh: phase '$phase_name' took $((SECONDS - phase_start)) s" >&2
  fi
  phase_name="$1"
  phase_start=$SECONDS
  [ -z "$phase_name" ] || echo "tests/run.sh: phase '$phase_name'" >&2
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages: systemd (`systemd-analyze verify` checks the packaged unit), strace (proves that `twinloom run` with a bad config opens no socket),
# socat (a pseudo-terminal pair stands in for an RS-485 line in the RTU test), patch (the vendored
# async-opcua-server is checked against the published crate plus its patch series), and Rust 1.96
# with its library source (rustc-web, cargo-web, rust-web-src: the plugin toolchain fallback,
# which builds std from source when rustup cannot download the wasm32-wasip2 target; a test
# builds a plugin with it), and a C compiler with libc's headers (gcc, libc6-dev: the C plugin, the
# ABI header check and the journal's LD_PRELOAD fdatasync shim are compiled by the tests), and
# chromium with chromium-driver (the web view's test drives the page in a real browser).
phase "install test dependencies"
missing=()
command -v cc >/dev/null 2>&1 && [ -f /usr/include/dlfcn.h ] || missing+=(gcc libc6-dev)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v patch >/dev/null 2>&1 || missing+=(patch)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# mosquitto: the MQTT broker of the Sparkplug tests (one per test on a loopback port);
# mosquitto-clients: mosquitto_sub hands a birth's raw bytes to Eclipse Tahu's decoder.
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/bin/cargo ] || missing+=(cargo-web)
[ -x /usr/bin/rustc ] || missing+=(rustc-web)
[ -d /usr/lib/rustlib/src/rust/library/std ] || missing+=(rust-web-src)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/run.sh: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Independent protocol peers from PyPI (pymodbus, asyncua, o6: open62541's client, and pysparkplug:
# a Sparkplug B host) and selenium (drives chromium for the web view's test), in a virtualenv at
# .venv.
if ! .venv/bin/python -c "import pymodbus, asyncua, o6, prometheus_client, pysparkplug, selenium" >/dev/null 2>&1; then
  echo "tests/run.sh: creating .venv with the Python protocol peers" >&2
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/peers/requirements.txt
fi
# node-opcua's client and Eclipse Tahu's sparkplug-payload from npm (the versions in tests/peers/node/package-lock.json), for Node.js 20.
if ! command -v npm >/dev/null 2>&1; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/peers/node/node_modules/node-opcua-client ] ||
  [ tests/peers/node/package-lock.json -nt tests/peers/node/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/peers/node --no-audit --no-fund --loglevel=error
fi

# Toolchain parts the workspace needs.
if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup component list --installed 2>/dev/null | grep -q '^rustfmt'; then rustup component add rustfmt; fi
if ! command -v cargo-nextest >/dev/null 2>&1; then cargo install --locked cargo-nextest; fi
# cargo-deb makes the Debian package; a test installs it without systemd (tests/package.sh).
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.8\.0'; then
  cargo install --locked cargo-deb --version 3.8.0
fi
# Plugins are WebAssembly components built for wasm32-wasip2 (the plugin tests build them). When
# rustup cannot download it, `twinloom plugin build` falls back to building std from the Debian
# sources installed above.
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
  rustup target add wasm32-wasip2 ||
    echo "tests/run.sh: cannot add wasm32-wasip2; plugins will be built with the build-std fallback" >&2
fi

# A CI run builds once from scratch: incremental state would only take disk (several GB).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

phase "format check"
cargo fmt --all --check
# Everything is checked with every feature (the demo and the plugin tools are features of the
# daemon crate), and the production binary is checked on its own (no features).
phase "clippy"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo clippy -p twinloom --bin twinloom --locked -- -D warnings
phase "build the tests"
cargo nextest run --workspace --all-features --locked --no-run
# The plugin components the tests load, built once before the tests run (by the daemon's own
# `plugin build`, the binary the test build just made, into target/wasm where the tests look):
# the tests then find them fresh instead of each waiting for cargo's lock on the same folder.
phase "build the plugin components"
for plugin in plugins/oee plugins/vibration-health plugins/energy plugins/pid plugins/cold-chain tests/plugins/probe; do
  target/debug/twinloom plugin build "$plugin" --target-dir target/wasm >/dev/null
done
target/debug/twinloom plugin build plugins/vibration-health --target-dir target/wasm \
  --toolchain build-std >/dev/null
# The same sources as native libraries (`plugin build --native`, into target/native): the native
# plugin tests compare them with the components bit for bit and run the probe natively.
for plugin in plugins/vibration-health plugins/cold-chain tests/plugins/probe; do
  target/debug/twinloom plugin build --native "$plugin" --target-dir target/native >/dev/null
done
phase "tests"
cargo nextest run --workspace --all-features --locked --no-fail-fast
phase ""
echo "tests/run.sh: all phases took $((SECONDS - run_started)) s" >&2
