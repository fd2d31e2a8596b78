"""PyTorch backend for tlcore."""
