"""Co-verification (imported as `smartquant.sim`): builds the RTL from `smartquant.hw`,
replays golden traces from `smartquant.sw` under cocotb, and compares bit for bit."""
