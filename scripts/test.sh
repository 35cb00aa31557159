#!/usr/bin/env bash
# Runs every check taskledger has: clippy, Rust unit, property and end-to-end tests (official
# `taskcluster` crate against the real binary), then the official Python client's scenario.
# Installs what it needs on a fresh machine: libclang-dev (RocksDB's bindgen), openssl (the
# GitHub tests' App key), noida-db (a Kafka-protocol broker), a Python venv with the
# `taskcluster` package.
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

# The GitHub tests make their App's RSA key with the openssl command-line tool.
if ! command -v openssl >/dev/null; then
  echo "== installing openssl (the GitHub tests make a GitHub App key with it)"
  apt-get update -qq && apt-get install -y -qq openssl >/dev/null
fi

# The Pulse bridge's tests publish to and consume from the real RabbitMQ on 127.0.0.1:5672
# (guest/guest, the package's default user).
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && ! command -v rabbitmq-server >/dev/null; then
  echo "== installing rabbitmq-server (the Pulse tests' broker)"
  apt-get update -qq && apt-get install -y -qq rabbitmq-server >/dev/null
fi
if command -v rabbitmq-server >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "== starting RabbitMQ"
  rabbitmq-server -detached || true
fi

# The Kafka backend's tests run against a real Kafka-protocol broker: noida-db, pinned, from
# crates.io (../shared/KAFKA.md has why). Set KAFKA_BOOTSTRAP to use a broker of your own.
noida_root="$cache/noida-db"
export NOIDA_DB_BIN="$noida_root/bin/noida-db"
if [ ! -x "$NOIDA_DB_BIN" ]; then
  echo "== installing noida-db 0.2.3 (a Kafka-protocol broker for the tests)"
  CARGO_TARGET_DIR="$cache/noida-target" cargo install noida-db --version 0.2.3 --locked \
    --no-default-features --features kafka --root "$noida_root"
fi
if [ -z "${KAFKA_BOOTSTRAP:-}" ]; then
  kafka_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kafka_dir=$(mktemp -d /tmp/taskledger-kafka.XXXXXX)
  "$NOIDA_DB_BIN" start --only kafka --host 127.0.0.1 --kafka-port "$kafka_port" \
    --data-dir "$kafka_dir/data" >"$kafka_dir/broker.log" 2>&1 &
  kafka_pid=$!
  trap 'kill "$kafka_pid" 2>/dev/null; wait "$kafka_pid" 2>/dev/null; rm -rf "$kafka_dir"' EXIT
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
    sleep 0.1
  done
  export KAFKA_BOOTSTRAP="127.0.0.1:$kafka_port"
  echo "== Kafka-protocol broker (noida-db) at $KAFKA_BOOTSTRAP"
fi

# STYLE.md's lints (every match names its variants, among others), warnings as errors; the
# release profile shares RocksDB's compiled build script with the build below
echo "== cargo clippy"
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy
fi
cargo clippy --release --workspace --all-targets --features failpoints -- -D warnings

echo "== cargo test (release profile: the binary and the tests share one build)"
# Short panics: the crash tests' servers panic on purpose, and their backtraces would bury a
# failing test's message in the output (TASKLEDGER_TEST_BACKTRACE=1 brings them back)
export RUST_BACKTRACE="${TASKLEDGER_TEST_BACKTRACE:-0}"
# `failpoints`: the crash tests arm fail points in the binary they start
cargo test --release --workspace --features failpoints

venv="$cache/venv"
if [ ! -x "$venv/bin/pytest" ] || ! "$venv/bin/python" -c "import taskcluster, pika, aiosmtpd" 2>/dev/null; then
  echo "== creating the Python venv with the official client (and pika, a plain AMQP consumer, and aiosmtpd, an SMTP server)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "taskcluster>=90" pytest requests "pika>=1.3" "aiosmtpd>=1.4"
fi
echo "== official Python client against the real binary"
TASKLEDGER_BIN="$CARGO_TARGET_DIR/release/taskledger" "$venv/bin/pytest" -q tests/python
