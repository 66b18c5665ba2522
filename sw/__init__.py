"""Software stack (imported as `smartquant.sw`): quantization, the model-store
image and its golden decoder, transformer inference, the precision policy and
golden traces. Runs without any RTL or simulator: imports neither `hw` nor `sim`."""
