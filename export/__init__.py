"""Export a training checkpoint to ONNX / TensorRT / ``torch.export``, behind a parity gate.

``python -m export --checkpoint CKPT --out DIR`` writes the model files and
``DIR/manifest.json``; ``python -m export verify DIR`` re-runs the parity gate.
See docs/EXPORT.md. The API behind the CLI: :func:`export.pipeline.export_checkpoint`
and :func:`export.pipeline.verify_export`.
"""
