"""simple-clr: how much do SimCLR representations give over supervised ones, measured honestly."""
__version__ = "0.1.0"
