"""Evaluation of generated orbits and 4D assets against ground truth (paper Sec. 4.2, Tables 1-2).

The image metrics (PSNR, SSIM) are shared with curation and training and live in `diffusion4d.metrics`. Here:
`fvd` (the Fréchet distance of video features), `lpips`, `i3d` and `clip` (the feature networks, ours, and the CLIP
score), `pretrained` (their weights, from local paths only, loaded without running pickle code); `evaluate` pairs
generated and ground-truth folders (`diffusion4d evaluate`); `report` turns per-task rows into the paper's Table 1
layout.
"""
