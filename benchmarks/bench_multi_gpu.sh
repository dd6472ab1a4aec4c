#!/usr/bin/env bash
# Data-parallel training on all GPUs of one host vs one GPU (issue 8), `small` preset, bf16.
#   bash benchmarks/bench_multi_gpu.sh DATA_DIR TEXT_ENCODER_DIR [STEPS] [OUT]
# Runs: 1 GPU at the global batch (the loss reference), N GPUs at the same global batch, 1 GPU at the per-GPU batch
# (the throughput reference), then resumes the N-GPU run's rank-0 checkpoint on one GPU. Prints a summary table.
set -euo pipefail
data=$1; text=$2; steps=${3:-120}; out=${4:-/tmp/multi_gpu}
n=$(python3 -c "import torch; print(torch.cuda.device_count())")
per_gpu=4; global=$((per_gpu * n))
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
common=(-m diffusion4d -q train --data "$data" --condition text --preset small --text-encoder "$text"
        --mixed-precision bf16 --lr 1e-4 --max-steps "$steps" --checkpoint-every $((steps / 2)) --log-every $((steps / 12 > 0 ? steps / 12 : 1)) --data-workers 4)
launch() { python3 -m accelerate.commands.launch --num_machines 1 --mixed_precision bf16 --dynamo_backend no "$@"; }
launch --num_processes 1 "${common[@]}" --batch-size "$global" --out "$out/one_gpu_global"
launch --multi_gpu --num_processes "$n" "${common[@]}" --batch-size "$per_gpu" --out "$out/n_gpu"
launch --num_processes 1 "${common[@]}" --batch-size "$per_gpu" --out "$out/one_gpu_per_gpu"
# rank 0's mid-run checkpoint continues on one GPU (same global batch on one process)
mkdir -p "$out/resumed" && cp -r "$out/n_gpu/checkpoints" "$out/n_gpu/train_config.json" "$out/n_gpu/run.json" \
  "$out/n_gpu/vae" "$out/n_gpu/scheduler" "$out/resumed/"
first=$(ls "$out/resumed/checkpoints" | grep '^step_' | sort | head -n 1)  # the mid-run checkpoint
echo "{\"step\": $((10#${first#step_})), \"folder\": \"$first\"}" > "$out/resumed/checkpoints/latest.json"
launch --num_processes 1 "${common[@]}" --batch-size "$global" --out "$out/resumed" --resume
python3 - "$out" "$n" "$per_gpu" <<'PY'
import json, statistics, sys
from pathlib import Path
out, n, per_gpu = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def rows(name):
    return [json.loads(l) for l in (out / name / "loss.jsonl").read_text().splitlines()]
def summary(name, batch):
    r = rows(name)
    tail = [x["loss"] for x in r[-5:]]
    sps = statistics.median(x["seconds_per_step"] for x in (r[1:] or r))  # the first interval holds the warm-up
    return {"run": name, "global_batch": batch, "final_loss_mean": statistics.mean(tail),
            "final_loss_sd": statistics.pstdev(tail), "s_per_step": sps, "samples_per_s": batch / sps}
res = [summary("one_gpu_global", per_gpu * n), summary("n_gpu", per_gpu * n), summary("one_gpu_per_gpu", per_gpu),
       summary("resumed", per_gpu * n)]
eff = res[1]["samples_per_s"] / (n * res[2]["samples_per_s"])
print(f"\n{n} GPUs, small preset, bf16, per-GPU batch {per_gpu}")
for r in res:
    print(f"{r['run']:<18} batch {r['global_batch']:>3}  loss(last 5 logs) {r['final_loss_mean']:.4f} ± "
          f"{r['final_loss_sd']:.4f}  {r['s_per_step']*1000:7.1f} ms/step  {r['samples_per_s']:7.1f} samples/s")
print(f"scaling efficiency ({n}-GPU throughput / ({n} × 1-GPU throughput at the same per-GPU batch)): {eff:.2f}")
resumed = rows("resumed")
print(f"resumed on 1 GPU from the {n}-GPU run's rank-0 mid-run checkpoint: logged steps "
      f"{resumed[0]['step']}…{resumed[-1]['step']}")
json.dump({"results": res, "efficiency": eff}, open(out / "summary.json", "w"), indent=2)
PY
