#!/usr/bin/env bash
# Installs the Debian packages the project builds and tests with. Idempotent: asks apt only for
# what dpkg says is missing, so a machine that has everything spends well under a second here.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ pkg-config
  # engine and server libraries
  libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libsentencepiece-dev sentencepiece prometheus-cpp-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  python3-torch python3-numpy python3-grpcio python3-protobuf python3-yaml python3-jinja2 prometheus curl nodejs gnuplot-nox
)

# npm ships inside some nodejs builds (NodeSource's) and separately in Debian's.
if ! command -v npm >/dev/null 2>&1; then packages+=(npm); fi

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
