"""catdog: train a CNN to tell cats from dogs, and watch what it looks at with Grad-CAM."""

__version__ = "0.1.0"
