"""Inference runtimes behind one protocol: PyTorch (CPU/CUDA), ONNX Runtime and OpenVINO (CPU)."""
