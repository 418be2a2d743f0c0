#!/usr/bin/env python3
"""Rewrites an ONNX model with its weights in a file of their own (OUT.data,
beside OUT), each tensor at an offset aligned for mapping, so ONNX Runtime
maps the weights instead of reading them into the process's memory. The
graph and the numbers are unchanged; the output is the same bytes on every
machine.

usage: onnx_external.py IN.onnx OUT.onnx   (writes OUT.onnx and OUT.onnx.data)
"""
import os
import sys

import onnx


def save_external(model, out):
    """Writes `model` to `out` and its weights to `out`.data (mode 644)."""
    data = os.path.basename(out) + ".data"
    onnx.save_model(model, out, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=data, size_threshold=1024)
    for path in (out, os.path.join(os.path.dirname(out), data)):
        os.chmod(path, 0o644)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    save_external(onnx.load(sys.argv[1]), sys.argv[2])


if __name__ == "__main__":
    main()
