#!/usr/bin/env bash
# Builds kvfold and runs every test: one Release build (unit, golden, end-to-end, fuzz-corpus
# replay; GPU tests skip without a GPU), then an ASan/UBSan build of the unit tests, then a TSan
# build of the scheduler's tests (the engine loop's threads). Each sanitizer build compiles only
# what its tests link (tests/CMakeLists.txt): every unit test under ASan/UBSan, and just
# kvfold_scheduler and its three tests under TSan. A hung test fails after --timeout seconds
# instead of holding CI for ctest's default 1500.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/setup.sh

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
ctest --test-dir build --output-on-failure -j "$jobs" --timeout 600

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFOLD_CUDA=OFF \
  -DKVFOLD_BENCH=OFF -DKVFOLD_SANITIZE=address,undefined -DKVFOLD_TEST_LAYERS=unit
cmake --build build-asan -j "$jobs" --target kvfold_unit_tests
ctest --test-dir build-asan --output-on-failure -j "$jobs" --timeout 600 -L unit

cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFOLD_CUDA=OFF \
  -DKVFOLD_BENCH=OFF -DKVFOLD_SANITIZE=thread -DKVFOLD_TEST_LAYERS=unit
cmake --build build-tsan -j "$jobs" --target kvfold_scheduler_tests
ctest --test-dir build-tsan --output-on-failure -j "$jobs" --timeout 600 -R '^(BlockManagerTest|SchedulerTest|EngineTest)\.'
