"""4D-aware video UNets (diffusers-based), their embeddings, condition encoders and size presets."""
