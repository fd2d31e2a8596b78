"""tlcore's benchmark suite: tlcore side by side with the Keras and PyTorch code users write.

Run it with ``python -m benchmarks.run [--quick]``; see ``benchmarks/README.md``.
"""
