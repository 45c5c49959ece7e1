"""ONNX export, parity and INT8, their measured cost on this host, and the MCU artifact (C,
Cortex-M builds, QEMU)."""
