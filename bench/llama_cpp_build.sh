# shellcheck shell=bash
# llama.cpp from PyPI llama-cpp-python's source distribution (vendor/llama.cpp), built for
# comparisons; sourced by bench/llama_cpp_compare.sh and bench/serve_compare.sh. Never commit
# llama.cpp code: the source and build live under $CACHE (default ~/.cache/kvfold-bench).
#
#   source bench/llama_cpp_build.sh
#   llama_cpp_build llama-bench llama-server   # builds the named targets that are missing
#   "$llama_build/bin/llama-server" ...
#
# Sets llama_src_root, llama_src (vendor/llama.cpp) and llama_build. CPU only,
# -DGGML_NATIVE=ON, Release, 2 jobs under nice. The server is built without its web UI
# (LLAMA_USE_PREBUILT_UI=OFF: no download; LLAMA_BUILD_UI=OFF: no npm).

llama_cpp_build() {  # targets... (default: llama-bench)
  local cache=${CACHE:-$HOME/.cache/kvfold-bench}
  local targets=("$@")
  ((${#targets[@]})) || targets=(llama-bench)
  mkdir -p "$cache"
  local sdist
  sdist=$(ls "$cache"/llama_cpp_python-*.tar.gz 2>/dev/null | sort -V | tail -1 || true)
  if [[ -z "$sdist" ]]; then
    pip download --no-deps --no-binary :all: llama-cpp-python -d "$cache" >&2
    sdist=$(ls "$cache"/llama_cpp_python-*.tar.gz | sort -V | tail -1)
  fi
  llama_src_root="$cache/$(basename "$sdist" .tar.gz)"
  [[ -d "$llama_src_root" ]] || tar -C "$cache" -xzf "$sdist"
  llama_src="$llama_src_root/vendor/llama.cpp"
  llama_build="$llama_src_root/build-cpu"

  local missing=() t
  for t in "${targets[@]}"; do
    [[ -x "$llama_build/bin/$t" ]] || missing+=("$t")
  done
  ((${#missing[@]})) || return 0
  # The server targets exist only with LLAMA_BUILD_SERVER=ON; turning it on adds targets and
  # leaves the ggml/llama objects already built as they are.
  cmake -S "$llama_src" -B "$llama_build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
  nice cmake --build "$llama_build" -j2 --target "${missing[@]}" >&2
}
