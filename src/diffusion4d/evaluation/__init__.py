"""Evaluation of generated orbits and 4D assets against ground truth (paper Sec. 4.2, Tables 1-2).

`metrics` holds the numbers (PSNR, Fréchet distance for FVD, CLIP score, a weights loader that runs no pickle
code); `lpips`, `i3d` and `clip` the feature networks (ours, loading released weights from local paths);
`evaluate` pairs generated and ground-truth folders (`diffusion4d evaluate`); `report` turns per-task rows into
the paper's Table 1 layout. SSIM is shared with curation and training and lives in `diffusion4d.metrics`.
"""
