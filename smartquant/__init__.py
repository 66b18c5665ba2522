"""smartquant: a CXL model store that serves transformer weights at a runtime-chosen precision.

Sub-packages: `smartquant.sw` (quantization, store image, inference, policy,
golden traces), `smartquant.hw` (Amaranth RTL), `smartquant.sim` (cocotb
co-verification); `smartquant.spec` holds the constants they share.
"""

__version__ = "0.1.0"
