"""Losses (L_ldm, L_mr), 3D-aware classifier-free guidance, the sampling loop and the training loop."""
