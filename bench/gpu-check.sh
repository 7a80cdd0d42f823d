#!/usr/bin/env bash
# bench/gpu-check.sh - the one script to run wherever a GPU is at hand (DESIGN.md, "A real GPU").
#
# It runs bench/gpu-runner/Phi2Native.GpuCheck, a self-contained .NET build that needs no .NET and no network where
# it runs: it NVRTC-compiles every kernel file for the GPU, runs every device check (tests/Phi2Native.DeviceChecks,
# the same check bodies CI runs on the kernel emulator) against its CPU reference, then the benchmarks (Phi-2-sized
# BF16 Linears, attention, LayerNorm, gelu, 1- and 2-layer training steps, a 32-layer model's prefill and decode step;
# device-event times, bench/Phi2Native.GpuCheck/Benchmarks.cs), and prints the tables last: the checks', the
# benchmarks' ("benchmarks: N of N cases ran on DEVICE ..."), then "N of N checks passed on DEVICE; the emulated
# catalog has N checks". Well under 5 minutes: the benchmarks start cases for 75 s at most, the runner starts
# nothing (check or benchmark) after 240 s in all and reports what it did not run, and it is killed at 280 s.
#
# How it is used:
#   1. Here, with the .NET 10 SDK, make the runner (bench/gpu-runner/ is ignored by git; ~26 MiB, so with the
#      repository, ~7 MiB, it fits the 64 MiB that travels to a GPU machine):
#          bench/gpu-check.sh --build              (publishes, then runs: here that reports "no GPU" and exits 0)
#      or  dotnet tool restore && dotnet cake --target=GpuRunner
#      or  dotnet publish bench/Phi2Native.GpuCheck -c Release -r linux-x64 --self-contained -o bench/gpu-runner
#   2. Carry the repository and bench/gpu-runner to the GPU machine (CUDA toolkit and driver: libcuda, libnvrtc and
#      libcublas on the loader's paths or under /usr/local/cuda*).
#   3. There:  bench/gpu-check.sh [runner options]   e.g. --filter layernorm, --markdown, --time-limit 120,
#      --no-bench (checks only), --bench-only (benchmarks only)
#      (bench/gpu-runner/Phi2Native.GpuCheck --help lists them; --emulated runs the checks on the emulator instead.)
#   4. Record the date, commit and device (the runner's first lines) and the final tables (checks and benchmarks)
#      in bench/RESULTS.md, section "GPU check"; --markdown prints the tables ready to paste.
#
# Exit status: the runner's. 0: every check passed and no benchmark threw, or there is no GPU here (reported, not
# failed). 1: a check failed, threw or did not run, a benchmark threw, a kernel did not compile, or a GPU is present
# but could not be opened (benchmarks the time limit left unrun are reported, not failed). 124: the runner
# overran 280 s and was killed. 2: the runner is missing (this script says how to make it) or got bad arguments.
set -euo pipefail
cd "$(dirname "$0")/.."

runner=bench/gpu-runner/Phi2Native.GpuCheck
publish=(dotnet publish bench/Phi2Native.GpuCheck -c Release -r linux-x64 --self-contained -o bench/gpu-runner)

if [ "${1:-}" = "--build" ]; then
    shift
    if ! command -v dotnet >/dev/null 2>&1; then
        echo "error: --build needs the .NET 10 SDK on PATH; build the runner on a machine that has it and carry bench/gpu-runner here" >&2
        exit 2
    fi
    echo "== publishing the runner: ${publish[*]} =="
    "${publish[@]}"
    echo
fi

if [ ! -e "$runner" ]; then
    cat >&2 <<HOW
error: $runner is missing. Make it on a machine with the .NET 10 SDK (the runner itself needs no .NET), then carry
bench/gpu-runner/ to this machine beside the repository:
    bench/gpu-check.sh --build
    dotnet tool restore && dotnet cake --target=GpuRunner
    ${publish[*]}
HOW
    exit 2
fi
# A copy that lost its mode bits (an archive, a sync tool) would otherwise fail with "Permission denied".
[ -x "$runner" ] || chmod +x "$runner"

if command -v nvidia-smi >/dev/null 2>&1; then
    echo "== nvidia-smi =="
    # Informational only: the runner's own CUDA probe decides whether there is a GPU.
    nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,memory.used,temperature.gpu,clocks.max.sm \
        --format=csv || echo "(nvidia-smi failed)"
    echo
else
    echo "nvidia-smi: not found (the runner's CUDA probe below decides)"
fi

status=0
timeout --kill-after=10 280 "$runner" "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "error: the runner did not finish within 280 s and was killed (exit $status)"
fi
exit "$status"
