#!/usr/bin/env bash
# bench/gpu-check.sh - the one script to run wherever a GPU is at hand.
#
# First it prints what the machine has: nvidia-smi -L, the driver (nvidia-smi's query and /proc/driver/nvidia/version),
# so that even a run that fails later tells the next one what to fix. Then it runs bench/gpu-runner/Phi2Native.GpuCheck,
# a self-contained .NET build that needs no .NET and no network where it runs. The runner works in stages, each cut
# off when its budget is spent (what it had left is reported NOT RUN, not failed): probe and compile, checks,
# compute-sanitizer, benchmarks, peers; `Phi2Native.GpuCheck --help` says what each does and lists the budgets
# (bench/Phi2Native.GpuCheck/Stages.cs is the table). Its probe comes first, so what CUDA found is in the log whatever
# fails after. The whole run keeps to the budgets' total, total_budget below: the runner is told to start nothing
# after total_budget - reserve seconds (less what this script spent) and is killed at total_budget.
#
# How it is used:
#   1. Here, with the .NET 10 SDK, make the runner (bench/gpu-runner/ is ignored by git; ~28 MiB, and ~25 MiB more
#      for the cuobjdump and compute-sanitizer it carries when .ci/cuda-tools.sh has unpacked them; with the
#      repository, ~9 MiB, it fits the 64 MiB that travels to a GPU machine):
#          bench/gpu-check.sh --build              (publishes, then runs: here that reports "no GPU" and exits 0)
#      or  dotnet tool restore && dotnet cake --target=GpuRunner
#      or  dotnet publish bench/Phi2Native.GpuCheck -c Release -r linux-x64 --self-contained -o bench/gpu-runner
#   2. Carry the repository and bench/gpu-runner to the GPU machine (a CUDA driver; NVRTC and cuBLAS where the
#      runner's probe finds them; compute-sanitizer and /opt/torch/.venv/bin/python3 if they are there).
#   3. There:  bench/gpu-check.sh [runner options]   e.g. --filter layernorm, --markdown, --no-bench, --bench-only
#      (a --time-limit S of your own replaces the default, and the outer timeout becomes S + reserve).
#   4. Record the date, commit and device (the first lines) and the final tables in bench/RESULTS.md, section
#      "GPU check"; --markdown prints the tables ready to paste. The benchmark table prints each case's modelled ms
#      (the profiler's roofline model of this GPU) beside the measured ms: record those ratios under "Where the time
#      goes" too, the model's first calibration.
#
# Exit status: the runner's. 0: every check passed and nothing else failed, or there is no GPU here (reported, not
# failed: CI relies on it). 1: a check failed, threw or did not run, a kernel did not compile, a benchmark threw,
# compute-sanitizer reported an error, a peer script failed, or a GPU is present but could not be opened. 2: the
# runner is missing (this script says how to make it) or got bad arguments. 124: the runner overran the total and
# was killed.
set -euo pipefail
cd "$(dirname "$0")/.."

total_budget=340 # seconds: the stage budgets added up (Stages.Total; a test keeps the two equal)
reserve=10       # of which the runner keeps back to print its tables (Stages.Reserve; the same test)
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
    # The toolkit programs CI unpacks (.ci/cuda-tools.sh), carried beside the runner for a GPU machine that has none:
    # cuobjdump (tensor-core instruction counts in the resource table) and compute-sanitizer (~24 MiB without its
    # headers). The runner prefers the machine's own. Skipped when this machine has not unpacked them.
    tools=${PHI2NATIVE_CUDA_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/phi2native/cuda-tools}
    rm -rf bench/gpu-runner/cuda-tools
    if [ -x "$tools/bin/cuobjdump" ] && [ -x "$tools/compute-sanitizer/compute-sanitizer" ]; then
        mkdir -p bench/gpu-runner/cuda-tools/bin
        cp -a "$tools/bin/cuobjdump" bench/gpu-runner/cuda-tools/bin/
        cp -a "$tools/compute-sanitizer" bench/gpu-runner/cuda-tools/
        rm -rf bench/gpu-runner/cuda-tools/compute-sanitizer/include bench/gpu-runner/cuda-tools/compute-sanitizer/docs
        echo "carried beside the runner: cuobjdump and compute-sanitizer from $tools ($(cat "$tools/VERSION" 2>/dev/null || echo "version unknown"))"
    else
        echo "not carried: cuobjdump and compute-sanitizer ($tools has none; .ci/cuda-tools.sh unpacks them)"
    fi
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
started=$SECONDS # the budget counts from here, not from the publish

# What the machine has. Informational only (the runner's CUDA probe decides whether there is a GPU), and bounded:
# nvidia-smi can hang on a GPU in a bad state.
echo "== the machine =="
if command -v nvidia-smi >/dev/null 2>&1; then
    timeout 10 nvidia-smi -L || echo "(nvidia-smi -L failed)"
    timeout 10 nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,memory.used,temperature.gpu,clocks.max.sm \
        --format=csv || echo "(nvidia-smi --query-gpu failed)"
else
    echo "nvidia-smi: not found (the runner's CUDA probe below decides whether there is a GPU)"
fi
if [ -r /proc/driver/nvidia/version ]; then
    head -n 1 /proc/driver/nvidia/version
else
    echo "/proc/driver/nvidia/version: none (no NVIDIA kernel driver loaded here)"
fi
echo

# The runner's limit: what is left of the total, less its reserve; or the caller's own --time-limit.
limit=$((total_budget - (SECONDS - started) - reserve))
outer=$((limit + reserve))
limit_args=(--time-limit "$limit")
previous=""
for argument in "$@"; do
    if [ "$previous" = "--time-limit" ]; then
        limit_args=()
        # A number: the outer timeout follows it; anything else the runner rejects (exit 2).
        if [[ $argument =~ ^[0-9]+(\.[0-9]*)?$ ]]; then outer=$((${argument%.*} + 1 + reserve)); fi
    fi
    previous=$argument
done

status=0
timeout --kill-after=5 "$outer" "$runner" "${limit_args[@]}" "$@" || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "error: the runner did not finish within $outer s and was killed (exit $status, reported as 124)"
    status=124
fi
exit "$status"
