"""HiResCAM, Score-CAM and the contrastive target agree with pytorch-grad-cam (PyPI grad-cam),
as Grad-CAM agrees with captum (test_gradcam_core.py)."""

from __future__ import annotations

import pytest
import torch

from catdog.errors import UserError
from catdog.gradcam import grad_cam, method_names
from catdog.model.simple_cnn import SimpleCNN

SIZE = 32


def make_model(seed: int) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(image_size=SIZE).eval()


def make_images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def contrast_target(target: int):
    """pytorch-grad-cam takes any callable of one image's output as the target."""
    return lambda output: output[target] - output[1 - target]


def reference(method: str, model, x: torch.Tensor, target: int, contrast: bool) -> torch.Tensor:
    """pytorch-grad-cam's map, min-max normalised again: it normalises before resizing (we resize,
    then normalise), and resizing is linear, so the two agree after one more normalisation."""
    library = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"gradcam": library.GradCAM, "hirescam": library.HiResCAM, "scorecam": library.ScoreCAM}[method]
    targets = [contrast_target(target) if contrast else ClassifierOutputTarget(target)] * len(x)
    with cls(model=model, target_layers=[model.relu3]) as cam:
        raw = torch.from_numpy(cam(input_tensor=x, targets=targets))
    assert raw.flatten(1).amax(dim=1).gt(0).all(), "reference map is all zero: the comparison would be vacuous"
    flat = raw.flatten(1)
    lo, hi = flat.amin(dim=1)[:, None, None], flat.amax(dim=1)[:, None, None]
    return (raw - lo) / (hi - lo)


@pytest.mark.parametrize("method,contrast,target", [
    ("gradcam", True, 1), ("hirescam", False, 0), ("hirescam", False, 1), ("hirescam", True, 1),
    ("scorecam", False, 1), ("scorecam", True, 0),
])
def test_agrees_with_pytorch_grad_cam(method: str, contrast: bool, target: int) -> None:
    model, x = make_model(2), make_images(2, seed=12)
    ours = grad_cam(model, x, layer="relu3", targets=target, method=method, contrast=contrast)
    ref = reference(method, model, x, target, contrast)
    assert (ours - ref).abs().max().item() < 1e-4


def test_contrast_with_two_classes_is_the_map_of_the_logit_difference() -> None:
    """For target dog, contrast explains logit(dog) - logit(cat): the gradients of the two logits
    subtract, so for Grad-CAM the map of dog-vs-cat is not the map of dog alone."""
    model, x = make_model(1), make_images(4, seed=3)
    plain, contrast = grad_cam(model, x, "relu3", targets=1), grad_cam(model, x, "relu3", targets=1, contrast=True)
    assert (plain - contrast).abs().amax() > 0.05


def test_gradient_free_method_leaves_no_grads_and_works_under_inference_mode() -> None:
    model, x = make_model(1), make_images(2, seed=3)
    expected = grad_cam(model, x, "relu3", method="scorecam")
    with torch.inference_mode():
        assert torch.equal(grad_cam(model, x.clone(), "relu3", method="scorecam"), expected)
    assert all(p.grad is None for p in model.parameters())


def test_method_names_and_a_one_class_contrast() -> None:
    assert method_names() == ["gradcam", "gradcam++", "layercam", "hirescam", "scorecam"]

    class OneClass(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))[:, :1]

    with pytest.raises(UserError, match="two classes"):
        grad_cam(OneClass(), make_images(1, 0), "conv", contrast=True)


def test_score_cam_chunks_that_straddle_images_give_the_same_maps(monkeypatch) -> None:
    import catdog.gradcam.maps as maps

    model, x = make_model(1), make_images(3, seed=5)
    whole = grad_cam(model, x, "relu3", method="scorecam")
    monkeypatch.setattr(maps, "SCORECAM_BATCH", 100)  # 3 x 128 masked images in passes of 100
    assert (grad_cam(model, x, "relu3", method="scorecam") - whole).abs().max() < 1e-5
