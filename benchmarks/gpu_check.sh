#!/usr/bin/env bash
# The GPU checks in one command, from the repository root of a GPU machine:
#
#   bash benchmarks/gpu_check.sh [OUT]
#
# 1. installs the wheels in .whl/ (jax-triton 0.3.1 where the machine has none; this checkout's
#    own, built with `pip wheel --no-deps -w .whl .`, where its setuptools is too old to build it)
#    and else this checkout into a scratch folder, with no network and no dependencies pulled in;
# 2. runs tests/test_kernels_gpu.py on the GPU: every triton_call against its pure-JAX twin,
#    inside jit, shard_map (with its varying-ness check on) and pmap;
# 3. runs `benchmarks.kernels` from 1M to 256M coordinates, both implementations, and writes its
#    kernels-<device>-<date>.{json,md} into OUT (default benchmarks/results).
#
# It needs python3 with a CUDA jax, triton, optax, numpy and pytest (no ml_collections, tfds or
# grain: only the library and the kernel benchmark are imported). Each step's log goes to OUT too.
set -euo pipefail
out=$(realpath -m "${1:-benchmarks/results}")
mkdir -p "$out"
repo=$PWD
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" .whl/*.whl
fi
if [ ! -d "$site/signvote_jax/ops" ]; then  # No wheel of this checkout was brought along: build it here.
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" .
fi
# The installed library (with its kernels at signvote_jax.ops) must win over the checkout's
# signvote_jax/ folder, and the checkout still provides tests/ and benchmarks/.
export PYTHONPATH="$site:$repo" JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1
cd "$site"
python3 -c "import jax, jax_triton, triton; print('jax', jax.__version__, jax.devices(), 'jax_triton', jax_triton.__version__, 'triton', triton.__version__)"

status=0
python3 -m pytest -q -p no:cacheprovider --noconftest --import-mode=append "$repo/tests/test_kernels_gpu.py" \
  2>&1 | tee "$out/gpu_tests.log" || status=1
python3 -c "import sys; from benchmarks import kernels; kernels.main(sys.argv[1:])" --out "$out" \
  2>&1 | tee "$out/gpu_kernels.log" || status=1
exit $status
