#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, in one go and within 10 minutes,
#   1. installs what MedLSDM needs (from PyPI, or offline from wheels in .whl/),
#   2. runs the engine test suite, the CUDA tests included (Testing/engine/generation/test_cuda.py),
#   3. runs the demo on --device cuda,
#   4. runs the benchmark on the demo model: the default sampler, DDIM-50 and the published reference,
#      at the demo's size and on a 256x256x32 map,
# and writes every figure to gpu_check/ (or $OUT/gpu_check on the project's device machine):
# summary.txt, the test log, the demo's output and both benchmark reports.
#
#   scripts/gpu_check.sh                  # on the GPU machine, from the repository's root
#   scripts/gpu_check.sh --fetch-wheels   # here, with internet: put the wheels for an offline GPU machine in .whl/
#
# Without PyPI on the GPU machine, first run --fetch-wheels where PyPI is reachable and take .whl/ along.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PACKAGES=("monai>=1.5" "einops>=0.6" "SimpleITK>=2.2" "slicerio>=1.0" "pynrrd" "nibabel>=4")

if [[ "${1:-}" == "--fetch-wheels" ]]; then
    # the GPU image's Python is 3.12 with PyTorch, NumPy, SciPy, matplotlib, tqdm, PyYAML, safetensors
    mkdir -p .whl
    "$PYTHON" -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --no-deps -d .whl "${PACKAGES[@]}"
    echo "wheels in .whl/: $(ls .whl | tr '\n' ' ')"
    exit 0
fi

RESULTS=${OUT:+$OUT/}gpu_check
mkdir -p "$RESULTS"
SUMMARY="$RESULTS/summary.txt"
export PYTHONUNBUFFERED=1
started=$(date +%s)
say() { echo "$*" | tee -a "$SUMMARY"; }
: >"$SUMMARY"

"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'PyTorch sees no CUDA GPU: run this on a GPU machine')"

# 1. what MedLSDM needs beside PyTorch, installed into a folder of its own (the system stays as it is)
SITE=${MEDLSDM_GPU_SITE:-/tmp/medlsdm-site}
if ! "$PYTHON" -c "import monai, einops, SimpleITK, slicerio" 2>/dev/null; then
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$SITE" .whl/*.whl
    else
        "$PYTHON" -m pip install --quiet --target "$SITE" "${PACKAGES[@]}"
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
MEDLSDM=("$PYTHON" -m MedLSDMLib)

say "MedLSDM GPU check, $(date -u '+%Y-%m-%d %H:%M UTC')"
"$PYTHON" - <<'EOF' | tee -a "$SUMMARY"
import torch
from MedLSDMLib.runtime.hardware import choose_precision, probe_cpu
print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB; "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}; precision auto -> {choose_precision('auto', 'cuda').name}")
print(f"CPU: {probe_cpu().describe()}")
EOF

# 2. the engine suite, with the CUDA tests (about 3 minutes on 16 cores; the Slicer suite needs slicer-core)
set +e
timeout 300 "$PYTHON" -m pytest Testing -q -x -p no:cacheprovider --ignore=Testing/packaging/test_extension_packaging.py \
    >"$RESULTS/tests.log" 2>&1
tests=$?
set -e
say "tests: $(tail -n 1 "$RESULTS/tests.log") (exit $tests)"

# 3. the demo on the GPU
"${MEDLSDM[@]}" demo --device cuda -o "$RESULTS/demo" --progress none >"$RESULTS/demo.log" 2>&1 || true
say "demo: $(grep -E 'total time' "$RESULTS/demo.log" || tail -n 1 "$RESULTS/demo.log")"

# 4. the benchmark: the default and DDIM-50 against the published reference (1,000 steps x 2 passes)
for size in "48 56 48" "256 256 32"; do  # the demo's grid, and the published method's volume size
    name=bench_${size// /x}
    timeout 200 "${MEDLSDM[@]}" benchmark --device cuda --size $size --config dpm:20 --config ddim:50 \
        --config reference --repeats 3 --warmup 1 -o "$RESULTS/$name" --progress none \
        >"$RESULTS/$name.log" 2>&1 || true
    say "benchmark ${size// /x} voxels at the model's 2 mm:"
    grep -E '^\|' "$RESULTS/$name.log" | tee -a "$SUMMARY" >/dev/null || tail -n 3 "$RESULTS/$name.log" | tee -a "$SUMMARY"
    say "$(grep -E '^speed-up' "$RESULTS/$name.log" || true)"
done
say "gpu check took $(( $(date +%s) - started )) s"
exit $tests
