# One call (~3.5 minutes): issue 23's render job on Ray against the process pool, on all 16 cores of the device.
#   bash benchmarks/device/render_ray.sh      (carry .gl, .whl and .ray; results and log in $OUT)
# .ray/ray312.tar.xz is Ray 2.60.0 cut down to fit a call (pack_ray.sh); the device cannot download it. The tree, .whl
# and .ray together only just fit the 64 MiB a call carries: leave gsplat's wheel out of .whl for this call.
set -o pipefail
source benchmarks/device/setup.sh || exit 1
python3 -m tarfile --filter data -e .ray/ray312.tar.xz /tmp/raysite || exit 1
# Compiled once here, else each of Ray's processes compiles what it imports: ray.init took 8 s instead of 4 (dev VM)
python3 -m compileall -q -j 0 /tmp/raysite > /dev/null
export PYTHONPATH=/tmp/raysite:$PYTHONPATH  # Ray and jsonschema, which the image lacks
python3 -c "import ray; print('ray', ray.__version__, ray.__file__)"
# The same 64 assets and settings as BENCHMARKS.md's 2-core run, 3 rounds (each run order once); cut off at 220 s.
timeout -k 5 $((220 - SECONDS)) python3 benchmarks/bench_render_ray.py --assets 64 --cores 16 --repeat 3 \
    --out /tmp/bench_render_ray 2>&1 | tee $OUT/render_ray.log
cp /tmp/bench_render_ray/results.json $OUT/ 2>/dev/null || echo "no results.json: cut off by the timeout?"
python3 -m ray.scripts.scripts stop --force > /dev/null 2>&1  # a run cut off leaves its cluster behind
echo "call done at $SECONDS s"
