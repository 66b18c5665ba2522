"""Amaranth RTL of the device controller (imported as `smartquant.hw`).

Never imports `smartquant.sw`: the golden model must stay independent of the
design it checks. Shared constants come from `smartquant.spec`.
"""
