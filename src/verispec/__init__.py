"""verispec: lossless speculative decoding built around certified draft verification rules."""
__version__ = "0.1.0"
