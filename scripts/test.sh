#!/usr/bin/env bash
# Runs every test taskledger has: Rust unit, property and end-to-end tests (official
# `taskcluster` crate against the real binary), then the official Python client's scenario.
# Installs what it needs on a fresh machine: libclang-dev (RocksDB's bindgen), a Python venv
# with the `taskcluster` package.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/taskledger/target}"
cache="$HOME/.cache/taskledger"
mkdir -p "$cache"

# bindgen loads libclang.so / libclang-N.so; libclang-cpp (often preinstalled) does not count.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* >/dev/null 2>&1 \
   && ! ldconfig -p | grep -qE 'libclang(-[0-9.]+)?\.so'; then
  echo "== installing libclang-dev (needed by librocksdb-sys)"
  apt-get update -qq && apt-get install -y -qq libclang-dev >/dev/null
fi

# The Pulse bridge's tests publish to and consume from the real RabbitMQ on 127.0.0.1:5672.
if command -v rabbitmq-server >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "== starting RabbitMQ"
  rabbitmq-server -detached || true
fi

echo "== cargo test (release profile: the binary and the tests share one build)"
cargo test --release --workspace

venv="$cache/venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import taskcluster, pika" 2>/dev/null; then
  echo "== creating the Python venv with the official client (and pika, a plain AMQP consumer)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "taskcluster>=90" pytest requests "pika>=1.3"
fi
echo "== official Python client against the real binary"
TASKLEDGER_BIN="$CARGO_TARGET_DIR/release/taskledger" "$venv/bin/pytest" -q tests/python
