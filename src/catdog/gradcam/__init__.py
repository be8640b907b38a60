"""Grad-CAM heatmaps: which pixels made the model say cat or dog."""

from catdog.gradcam.maps import METHODS, grad_cam, grad_cam_with_logits, method_names

__all__ = ["METHODS", "grad_cam", "grad_cam_with_logits", "method_names"]
