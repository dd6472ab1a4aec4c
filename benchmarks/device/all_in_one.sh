# One call (~9.5 minutes) for a session short of device time: issue 23's Ray render benchmark on all 16 cores first
# (while the CPUs are quiet), then issue 21's training with the GPU tests and issue 22's streaming benchmark beside it.
#   bash benchmarks/device/all_in_one.sh      (carry .gl, .whl and .ray; see render_ray.sh and train_default.sh)
set -o pipefail
bash benchmarks/device/render_ray.sh
STREAM=1 GPU_TESTS=1 END=$((545 - SECONDS)) bash benchmarks/device/train_default.sh  # main runs only
