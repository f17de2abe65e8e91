"""edgeseg: train segmentation models, export them to TFLite and Core ML, prove mask parity."""

__version__ = "0.1.0"
