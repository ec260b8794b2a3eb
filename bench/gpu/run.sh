#!/usr/bin/env bash
# The GPU suite in one command per machine (issue 10); bench/gpu/README.md says how to call it.
#
#   bash bench/gpu/run.sh package   on the development machine (Abseil, glog, gtest, CUDA, no GPU):
#       configures a GPU-only build (-DKVFOLD_GPU_SUITE=ON: kernels, worker, GPU tests, GPU
#       benchmarks; no server, no gRPC), builds it for sm_80 and sm_90a, and copies the stripped
#       binaries plus every shared library they need that the device machine lacks into
#       .gpu-suite/ (ignored by git), with MANIFEST.txt. Then builds the full `kvfold` binary with
#       CUDA (build-cuda/, gRPC and all) and packs it with the shared libraries the suite does not
#       already carry into .gpu-suite/kvfold.tar.xz (about 16 MB: unpacked, ICU's data and gRPC
#       would take the suite past the 64 MiB the device tool carries). KVFOLD_PACKAGE_CLI=0 skips it.
#   bash bench/gpu/run.sh run       on the device machine (CUDA toolkit, PyTorch; none of Abseil,
#       glog, gtest): runs nvidia-smi, every GPU test binary (--gtest_output=json), the GPU decode
#       benchmark, the `kvfold` binary's checks (bench/gpu/cli_checks.py: generate --device cuda
#       against --device cpu, a serve --device cuda completion) and, when transformers imports,
#       bench/gpu/hf_generate_bench.py; prints a table
#       last. Results go to $OUT when set (the device tool brings that folder back), else to
#       .gpu-suite/results. Without a GPU every test skips and the run still exits 0.
#
# Environment: KVFOLD_GPU_SUITE_DIR (default .gpu-suite), KVFOLD_GPU_BUILD_DIR (build-gpu-suite),
# KVFOLD_CLI_BUILD_DIR (build-cuda), KVFOLD_PACKAGE_CLI=0 (package no kvfold binary),
# KVFOLD_JOBS (build jobs, default 2), KVFOLD_GGUF (SmolLM2 GGUF for the benchmark when present),
# KVFOLD_BENCH_ARGS (extra benchmark flags), KVFOLD_SKIP_HF=1 (skip the transformers comparison).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
suite=${KVFOLD_GPU_SUITE_DIR:-.gpu-suite}
build=${KVFOLD_GPU_BUILD_DIR:-build-gpu-suite}
cli_build=${KVFOLD_CLI_BUILD_DIR:-build-cuda}

# Libraries the device machine provides itself: the C runtime, the driver, and the CUDA
# toolkit's large libraries (cuBLAS/cuBLASLt are ~600 MB, NCCL ~220 MB: far over what travels).
system_lib() {
  case "$1" in
    linux-vdso.so.* | ld-linux-* | libc.so.* | libm.so.* | libdl.so.* | libpthread.so.* | \
      librt.so.* | libcuda.so.* | libnvidia-*) return 0 ;;
  esac
  return 1
}
device_lib() {
  case "$1" in
    libcublas.so.* | libcublasLt.so.* | libnccl.so.*) return 0 ;;
  esac
  return 1
}
# Used on the device only when its own copy is too old (checked there before the run).
compat_lib() {
  case "$1" in
    libstdc++.so.* | libgcc_s.so.*) return 0 ;;
  esac
  return 1
}

package() {
  set -e
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-/work} CCACHE_DIR=${CCACHE_DIR:-/work/.ccache}
  local launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
  fi
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVFOLD_GPU_SUITE=ON \
    -DCMAKE_CUDA_ARCHITECTURES="80;90a" "${launcher[@]}"
  nice cmake --build "$build" -j "${KVFOLD_JOBS:-2}" --target kvfold_gpu_tests \
    kvfold_gpu_decode_bench kvfold_gpu_sampling_bench kvfold_gpu_attention_bench

  rm -rf "$suite"
  mkdir -p "$suite/bin" "$suite/lib/compat"
  local binaries=()
  for f in "$build"/tests/gpu_*; do
    [[ -f $f && -x $f ]] && binaries+=("$f")
  done
  binaries+=("$build/bench/kvfold_gpu_decode_bench" "$build/bench/kvfold_gpu_sampling_bench"
    "$build/bench/kvfold_gpu_attention_bench")
  local manifest="$suite/MANIFEST.txt"
  {
    echo "kvfold GPU suite, packaged $(date -u +%FT%TZ) from $(git rev-parse --short=12 HEAD)$(
      git diff --quiet HEAD -- . ':!bench/RESULTS.md' || echo '+dirty')"
    echo "built on: $(. /etc/os-release && echo "$PRETTY_NAME"), $(nvcc --version | tail -1)"
    echo "CUDA architectures: 80;90a"
    echo
    echo "binaries (bin/, stripped):"
  } >"$manifest"
  for b in "${binaries[@]}"; do
    cp "$b" "$suite/bin/"
    strip --strip-unneeded "$suite/bin/$(basename "$b")"
    echo "  $(basename "$b") $(stat -c %s "$suite/bin/$(basename "$b")")" >>"$manifest"
  done
  # Every shared library the binaries load, by what ldd resolves here.
  local -A seen=()
  local bundled=() from_device=() compat=()
  while read -r name path; do
    [[ -n ${seen[$name]:-} ]] && continue
    seen[$name]=1
    if system_lib "$name"; then continue; fi
    if device_lib "$name"; then from_device+=("$name"); continue; fi
    if compat_lib "$name"; then
      cp -L "$path" "$suite/lib/compat/$name"
      compat+=("$name")
      continue
    fi
    cp -L "$path" "$suite/lib/$name"
    strip --strip-unneeded "$suite/lib/$name" 2>/dev/null || true
    bundled+=("$name")
  done < <(for b in "${binaries[@]}"; do ldd "$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
  {
    echo
    echo "bundled (lib/): ${bundled[*]}"
    echo "compat (lib/compat/, used only when the device's own is too old): ${compat[*]}"
    echo "from the device's CUDA toolkit or its nvidia-* wheels (run.sh finds them): ${from_device[*]}"
    echo "glibc needed: $(for b in "${binaries[@]}" "$suite"/lib/*.so*; do
      objdump -T "$b" 2>/dev/null | grep -o 'GLIBC_[0-9.]*'; done | sort -uV | tail -1)"
    echo "GLIBCXX needed: $(for b in "${binaries[@]}" "$suite"/lib/*.so*; do
      objdump -T "$b" 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*'; done | sort -uV | tail -1)"
    echo "total: $(du -sb "$suite" | cut -f1) bytes"
  } >>"$manifest"
  # Stripped test binaries compress about 4x: they travel packed, well under the carry limit.
  tar -C "$suite" -cJf "$suite/bin.tar.xz" bin && rm -rf "$suite/bin"
  echo "bin.tar.xz: $(stat -c %s "$suite/bin.tar.xz") bytes" >>"$manifest"
  if [[ ${KVFOLD_PACKAGE_CLI:-1} != 0 ]]; then
    package_cli "${launcher[@]}"
  fi
  cat "$manifest"
  local bytes
  bytes=$(du -sb "$suite" | cut -f1)
  if ((bytes > 60 * 1024 * 1024)); then
    echo "run.sh package: $suite is $bytes bytes, over the 60 MiB this suite allows itself" >&2
    exit 1
  fi
}

# The full `kvfold` binary (CUDA on) and the libraries it needs beyond lib/, xz-packed: ICU's data
# (30 MB) and gRPC do not fit the carry limit unpacked. Arguments: the compiler launcher flags.
package_cli() {
  cmake -S . -B "$cli_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVFOLD_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="80;90a" "$@"
  nice cmake --build "$cli_build" -j "${KVFOLD_JOBS:-2}" --target kvfold
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/lib"
  cp "$cli_build/kvfold" "$stage/"
  strip --strip-unneeded "$stage/kvfold"
  local extra=()
  while read -r name path; do
    if system_lib "$name" || device_lib "$name" || compat_lib "$name"; then continue; fi
    [[ -e $suite/lib/$name ]] && continue
    cp -L "$path" "$stage/lib/$name"
    strip --strip-unneeded "$stage/lib/$name" 2>/dev/null || true
    extra+=("$name")
  done < <(ldd "$cli_build/kvfold" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
  tar -C "$stage" -cJf "$suite/kvfold.tar.xz" .
  {
    echo
    echo "kvfold.tar.xz: kvfold $(stat -c %s "$stage/kvfold") bytes, unpacked $(du -sb "$stage" |
      cut -f1) bytes, packed $(stat -c %s "$suite/kvfold.tar.xz"); its libraries beyond lib/: ${extra[*]}"
    echo "total with kvfold.tar.xz: $(du -sb "$suite" | cut -f1) bytes"
  } >>"$suite/MANIFEST.txt"
  rm -rf "$stage"
}

# Folders holding the libraries the device provides (cuBLAS, NCCL): the toolkit's, then the
# nvidia-* wheels beside PyTorch.
device_lib_dirs() {
  local dirs=() d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib; do
    [[ -d $d ]] && dirs+=("$d")
  done
  local site
  site=$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' \
    2>/dev/null || true)
  if [[ -n $site ]]; then
    while read -r f; do dirs+=("$(dirname "$f")"); done < <(
      find "$site/nvidia" \( -name 'libcublas.so.*' -o -name 'libnccl.so.*' \) 2>/dev/null)
  fi
  local IFS=:
  echo "${dirs[*]}"
}

run() {
  local out=${OUT:-$suite/results}
  mkdir -p "$out"
  # The binaries travel packed (bin.tar.xz); Python unpacks them: the device may lack xz.
  local bin
  if [[ -f $suite/bin.tar.xz ]]; then
    bin=$(mktemp -d)
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$suite/bin.tar.xz" "$bin"
    bin=$bin/bin
  elif [[ -d $suite/bin ]]; then
    bin=$suite/bin
  else
    echo "run.sh run: no $suite/bin.tar.xz: run 'bash bench/gpu/run.sh package' first and carry $suite" >&2
    exit 1
  fi
  local log="$out/log.txt"
  : >"$log"
  local json_dir
  json_dir=$(mktemp -d)
  # Tests find models/ through it (the binaries were configured in another checkout).
  export KVFOLD_SOURCE_DIR="$root"
  export LD_LIBRARY_PATH="$root/$suite/lib:$(device_lib_dirs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # The bundled binaries were built against Debian 12's libstdc++; use the carried one only when
  # the device's own cannot load them.
  if ! "$bin/gpu_cuda_ops_test" --gtest_list_tests >/dev/null 2>&1; then
    if LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$root/$suite/lib/compat" \
      "$bin/gpu_cuda_ops_test" --gtest_list_tests >/dev/null 2>&1; then
      export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$root/$suite/lib/compat"
      echo "using the carried libstdc++/libgcc_s" | tee -a "$log"
    fi
  fi
  {
    echo "== manifest"
    cat "$suite/MANIFEST.txt"
    echo "== host: $(uname -srm), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "== nvidia-smi"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    echo "== libraries"
    ldd "$bin/gpu_nccl_communicator_test" "$bin/kvfold_gpu_decode_bench" 2>&1 |
      grep -E 'not found|cublas|nccl|cudart|stdc\+\+' | awk '{print $1, $2, $3}' | sort -u
  } 2>&1 | tee -a "$log"

  local status=0
  for t in "$bin"/gpu_*; do
    local name
    name=$(basename "$t")
    echo "== test $name" | tee -a "$log"
    "$t" --gtest_output="json:$json_dir/$name.json" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "$name exit $rc" >>"$json_dir/exit_codes.txt"
    ((rc != 0)) && status=1
  done

  echo "== bench kvfold_gpu_decode_bench" | tee -a "$log"
  local gguf=${KVFOLD_GGUF:-$HOME/.cache/kvfold/SmolLM2-135M-Instruct.Q4_1.gguf}
  # shellcheck disable=SC2086
  "$bin/kvfold_gpu_decode_bench" --gguf="$gguf" --json="$json_dir/decode_bench.json" \
    ${KVFOLD_BENCH_ARGS:-} 2>&1 | tee "$json_dir/decode_bench.txt" | tee -a "$log"
  local bench_rc=${PIPESTATUS[0]}
  echo "kvfold_gpu_decode_bench exit $bench_rc" >>"$json_dir/exit_codes.txt"
  ((bench_rc != 0)) && status=1

  "$bin/kvfold_gpu_sampling_bench" 2>&1 | tee "$json_dir/sampling_bench.txt" | tee -a "$log"
  "$bin/kvfold_gpu_attention_bench" 2>&1 | tee "$json_dir/attention_bench.txt" | tee -a "$log"

  if [[ -f $suite/kvfold.tar.xz ]]; then
    echo "== kvfold CLI (bench/gpu/cli_checks.py)" | tee -a "$log"
    local cli_dir
    cli_dir=$(mktemp -d)
    # Python unpacks it: the device image may lack the xz tool.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$suite/kvfold.tar.xz" "$cli_dir"
    LD_LIBRARY_PATH="$cli_dir/lib:$LD_LIBRARY_PATH" python3 bench/gpu/cli_checks.py \
      "$cli_dir/kvfold" "$root/models/stories260K" "$json_dir" 2>&1 | tee -a "$log"
    local cli_rc=${PIPESTATUS[0]}
    echo "kvfold_cli_checks exit $cli_rc" >>"$json_dir/exit_codes.txt"
    ((cli_rc != 0)) && status=1
    rm -rf "$cli_dir"
  else
    echo "== kvfold CLI: not packaged (KVFOLD_PACKAGE_CLI=0)" | tee -a "$log"
  fi

  if [[ ${KVFOLD_SKIP_HF:-0} != 1 ]] && nvidia-smi >/dev/null 2>&1 &&
    python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== bench hf_generate_bench.py" | tee -a "$log"
    PYTHONUNBUFFERED=1 python3 bench/gpu/hf_generate_bench.py 2>&1 |
      tee "$json_dir/hf_generate.txt" | tee -a "$log"
  else
    echo "== bench hf_generate_bench.py: skipped (no GPU, or no torch/transformers)" | tee -a "$log"
  fi

  python3 bench/gpu/summarize.py "$json_dir" | tee "$out/summary.txt"
  tar -C "$json_dir" -czf "$out/results.tar.gz" .
  rm -rf "$json_dir"
  return $status
}

case "${1:-}" in
  package) package ;;
  run) run ;;
  *)
    echo "usage: bash bench/gpu/run.sh package|run" >&2
    exit 2
    ;;
esac
