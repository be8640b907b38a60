"""Grad-CAM core: agreement with captum, hygiene (hooks, grads, modes), precision, Lightning loops."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from catdog.errors import UserError
from catdog.gradcam import METHODS, grad_cam, grad_cam_with_logits
from catdog.gradcam.render import palette
from catdog.model.simple_cnn import SimpleCNN

SIZE = 32


def make_model(seed: int = 0, **kwargs) -> SimpleCNN:
    torch.manual_seed(seed)
    return SimpleCNN(image_size=SIZE, **kwargs)


def make_images(n: int = 6, seed: int = 1) -> torch.Tensor:
    """Images as the training augmentation hands them to the network: floats in [0, 1]."""
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def captum_reference(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """Independent Grad-CAM: captum's LayerGradCam, upsampled and min-max normalised per image."""
    captum_attr = pytest.importorskip("captum.attr")
    model.eval()  # captum does not switch dropout off
    raw = captum_attr.LayerGradCam(model, model.conv3).attribute(x, target=target, relu_attributions=True)
    assert raw.flatten(1).amax(dim=1).gt(0).all(), "reference map is all zero: the comparison would be vacuous"
    # captum's interpolate calls F.interpolate(mode="bilinear") without align_corners, i.e. False;
    # upsample the raw map ourselves so the test does not depend on that default.
    up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    assert torch.equal(up, captum_attr.LayerAttribution.interpolate(raw, x.shape[-2:], "bilinear")[:, 0])
    flat = up.flatten(1)
    lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    return (up - lo[:, None, None]) / (hi - lo)[:, None, None]


def assert_valid_maps(cams: torch.Tensor, n: int) -> None:
    assert cams.shape == (n, SIZE, SIZE)
    assert cams.dtype == torch.float32
    assert not cams.isnan().any()
    assert cams.min() >= 0 and cams.max() <= 1


@pytest.mark.parametrize("seed", [1, 2])  # networks whose reference maps are not all zero on these images
@pytest.mark.parametrize("target", [0, 1])
def test_agrees_with_captum(seed: int, target: int) -> None:
    model, x = make_model(seed), make_images(seed=seed + 10)
    ours = grad_cam(model, x, targets=target)
    ref = captum_reference(model, x, target)
    # Non-trivial maps: each spans the full [0, 1] range.
    assert torch.all(ours.flatten(1).amax(dim=1) == 1) and torch.all(ours.flatten(1).amin(dim=1) == 0)
    assert (ours - ref).abs().max().item() < 1e-5


def test_uint8_pixels_give_the_maps_of_their_unit_float_images() -> None:
    """eval, cam and the callbacks hand the network raw pixels: the maps are those of x / 255."""
    model = make_model()
    pixels = torch.randint(0, 256, (4, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    cams, logits = grad_cam_with_logits(model, pixels, "relu3")
    ref_cams, ref_logits = grad_cam_with_logits(model, pixels / 255.0, "relu3")
    assert torch.allclose(cams, ref_cams, atol=1e-6) and torch.allclose(logits, ref_logits, atol=1e-6)


def test_batched_equals_one_by_one() -> None:
    model, x = make_model(), make_images(4)
    batched = grad_cam(model, x, targets=[0, 1, 1, 0])
    single = torch.cat([grad_cam(model, x[i : i + 1], targets=t) for i, t in enumerate([0, 1, 1, 0])])
    assert (batched - single).abs().max() < 1e-5


def test_wrong_class_map_differs() -> None:
    model, x = make_model(), make_images()
    logits = model.eval()(x)
    predicted, other = logits.argmax(1), 1 - logits.argmax(1)
    diff = (grad_cam(model, x, targets=predicted) - grad_cam(model, x, targets=other)).flatten(1).abs().amax(1)
    assert torch.all(diff > 0.1)


def test_default_target_is_predicted_class_and_logits_are_returned() -> None:
    model, x = make_model(), make_images()
    cams, logits = grad_cam_with_logits(model, x)
    expected_logits = model.eval()(x)
    assert logits.dtype == torch.float32 and not logits.requires_grad
    assert torch.allclose(logits, expected_logits)
    assert torch.equal(cams, grad_cam(model, x, targets=expected_logits.argmax(1)))
    # int, list and LongTensor targets mean the same thing.
    assert torch.equal(grad_cam(model, x, targets=1), grad_cam(model, x, targets=[1] * len(x)))
    assert torch.equal(grad_cam(model, x, targets=1), grad_cam(model, x, targets=torch.ones(len(x), dtype=torch.long)))


@pytest.mark.parametrize("targets", [[0, 1], 2, -1])
def test_bad_targets_raise_user_error(targets) -> None:
    with pytest.raises(UserError):
        grad_cam(make_model(), make_images(3), targets=targets)


def test_no_hooks_no_param_grads_and_mode_restored() -> None:
    model, x = make_model(), make_images()
    model.train()
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    first = grad_cam(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.all(model.conv1.weight.grad == 7.0)
    assert all(p.grad is None for name, p in model.named_parameters() if name != "conv1.weight")
    # Eval mode inside: dropout off, so repeated calls from train mode agree with an eval-mode call.
    assert torch.equal(first, grad_cam(model, x))
    assert torch.equal(first, grad_cam(model.eval(), x))


def test_submodule_modes_restored_individually() -> None:
    model = make_model(batch_norm=True).train()
    model.bn2.eval()  # e.g. a frozen BatchNorm inside a training model
    grad_cam(model, make_images())
    assert model.training and model.bn1.training and not model.bn2.training


def test_hook_removed_and_mode_restored_after_forward_error() -> None:
    model = make_model().train()
    wrong_size = torch.randn(2, 3, SIZE // 2, SIZE // 2)  # conv3 runs (hook fires), then fc1 fails
    with pytest.raises(RuntimeError):
        grad_cam(model, wrong_size)
    assert all(not m._forward_hooks for m in model.modules())
    assert model.training and all(m.training for m in model.modules())


def test_all_zero_map_stays_zero_without_nan() -> None:
    model = make_model()
    with torch.no_grad():
        model.fc2.weight.zero_()  # logits no longer depend on conv3: every gradient is 0
    for method in METHODS:
        cams = grad_cam(model, make_images(), method=method)
        assert_valid_maps(cams, 6)
        assert torch.all(cams == 0), method


def test_flat_map_normalizes_to_zero_not_nan() -> None:
    # Unit-level: a map that is constant after the ReLU (0/0 in min-max) must give 0, not NaN.
    from catdog.gradcam.maps import _normalize

    flat = torch.full((2, 4, 4), 0.3)
    assert torch.equal(_normalize(flat), torch.zeros_like(flat))
    ramp = torch.arange(16.0).reshape(1, 4, 4)
    assert torch.equal(_normalize(ramp), ramp / 15)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_methods_valid_and_distinct(method: str) -> None:
    model, x = make_model(), make_images()
    cams = grad_cam(model, x, method=method)
    assert_valid_maps(cams, len(x))
    assert torch.all(cams.flatten(1).amax(1) == 1), "map is trivially flat"
    if method != "gradcam":
        assert (cams - grad_cam(model, x)).abs().max() > 0.05


def test_gradcam_plus_plus_matches_reference_formula() -> None:
    """Check the weights against pytorch-grad-cam's formula written out in plain numpy."""
    np = pytest.importorskip("numpy")
    acts = torch.randn(2, 4, 5, 5)
    grads = torch.randn(2, 4, 5, 5)
    grads[0, 0, 0, 0] = 0
    a, g = acts.double().numpy(), grads.double().numpy()
    g2, g3 = g**2, g**3
    aij = g2 / (2 * g2 + a.sum(axis=(2, 3))[:, :, None, None] * g3 + 1e-6)
    aij = np.where(g != 0, aij, 0)
    expected = (np.maximum(g, 0) * aij).sum(axis=(2, 3))
    got = METHODS["gradcam++"](acts, grads)[:, :, 0, 0].double().numpy()
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_layercam_weights_are_per_element() -> None:
    acts, grads = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    assert torch.equal(METHODS["layercam"](acts, grads), grads.clamp(min=0))


def test_unknown_method_and_layer_raise_user_error() -> None:
    model, x = make_model(), make_images(2)
    with pytest.raises(UserError, match="gradcam\\+\\+"):
        grad_cam(model, x, method="nosuchcam")
    with pytest.raises(UserError, match="its layers with maps: conv1, conv2, conv3, pool1, pool2, pool3, relu1, relu2, relu3"):
        grad_cam(model, x, layer="conv4")
    with pytest.raises(UserError, match="N, C, h, w"):
        grad_cam(model, x, layer="fc1")
    with pytest.raises(UserError, match="colormap=nosuch is not one of matplotlib's colormaps"):
        palette("nosuch")
    assert palette("viridis").shape == (256, 3)


def test_dotted_layer_path() -> None:
    model, x = make_model(), make_images(2)
    wrapped = nn.Sequential(model)
    assert torch.equal(grad_cam(wrapped, x, layer="0.conv2"), grad_cam(model, x, layer="conv2"))
    assert not torch.equal(grad_cam(model, x, layer="conv2"), grad_cam(model, x, layer="conv3"))


@pytest.mark.parametrize("method", ["layercam", "hirescam", "scorecam"])
def test_fused_layers_are_the_geometric_mean_of_their_maps(method: str) -> None:
    model, x = make_model(seed=1), make_images(4)
    fine, coarse = (grad_cam(model, x, layer=name, method=method) for name in ("pool1", "pool2"))
    fused, logits = grad_cam_with_logits(model, x, layer="pool1*pool1*pool2", method=method)
    expected = (fine ** (2 / 3)) * (coarse ** (1 / 3))
    lo, hi = expected.flatten(1).amin(1)[:, None, None], expected.flatten(1).amax(1)[:, None, None]
    assert hi.gt(lo).all(), "degenerate maps would make the comparison vacuous"
    assert torch.allclose(fused, (expected - lo) / (hi - lo), atol=1e-5)
    assert torch.equal(logits, grad_cam_with_logits(model, x, layer="pool1", method=method)[1])
    # Each layer its own map: the fused one is neither of them; a layer named twice counts twice.
    assert not torch.allclose(fused, fine, atol=1e-3) and not torch.allclose(fused, coarse, atol=1e-3)
    assert not torch.allclose(fused, grad_cam(model, x, layer="pool1*pool2", method=method), atol=1e-3)
    assert torch.allclose(grad_cam(model, x, layer=" pool2 * pool2 ", method=method), coarse, atol=1e-6)


def test_bad_fused_layers_raise_user_error() -> None:
    model, x = make_model(), make_images(2)
    for spec, message in [("pool1**pool2", "not a layer or a product of layers"), ("pool1*", "product of layers"),
                          ("pool1*conv9", "'conv9' is not a submodule"), ("pool1*fc1", "N, C, h, w")]:
        with pytest.raises(UserError, match=message):
            grad_cam(model, x, layer=spec)


def assert_close_to_fp32(cams: torch.Tensor, fp32: torch.Tensor, max_diff: float = 0.25) -> None:
    """bf16 (and TF32) round the model's own forward and backward; on a random-weight net, whose
    Grad-CAM is a sum of 128 channels that largely cancel, that moves a few pixels a lot (0.15 seen
    on CPU, 0.44 with CUDA bf16 autocast) while the mean pixel moves ~0.01-0.02. The map for the
    other class is ~0.25 away on average, so the mean is the discriminating check."""
    assert cams.dtype == torch.float32 and not cams.isnan().any()
    assert (cams - fp32).abs().mean() < 0.03
    assert (cams - fp32).abs().max() < max_diff


def test_bf16_autocast_close_to_fp32() -> None:
    model, x = make_model(), make_images()
    fp32 = grad_cam(model, x, targets=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cams, logits = grad_cam_with_logits(model, x, targets=0)
        assert model(x).dtype == torch.bfloat16  # autocast really is active
    assert logits.dtype == torch.float32
    assert_close_to_fp32(cams, fp32)


def test_bf16_weights_close_to_fp32() -> None:
    model, x = make_model(), make_images()
    fp32 = grad_cam(model, x, targets=0)
    cams = grad_cam(model.to(torch.bfloat16), x, targets=0)  # float32 input is cast to the weights' dtype
    assert_valid_maps(cams, len(x))
    assert_close_to_fp32(cams, fp32)


def test_cam_arithmetic_is_float32_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def spy(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        seen.append((acts.dtype, grads.dtype))
        return METHODS["gradcam"](acts, grads)

    monkeypatch.setitem(METHODS, "spy", spy)
    model, x = make_model(), make_images(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grad_cam(model, x, method="spy")
    grad_cam(model.to(torch.bfloat16), x, method="spy")
    assert seen == [(torch.float32, torch.float32)] * 2


def test_works_under_no_grad() -> None:
    model, x = make_model(), make_images()
    expected = grad_cam(model, x)
    with torch.no_grad():
        assert torch.equal(grad_cam(model, x), expected)
        assert not torch.is_grad_enabled()  # the caller's mode, back after the maps' pass
    assert all(p.grad is None for p in model.parameters())


def test_works_under_inference_mode_with_inference_tensor() -> None:
    model, x = make_model(), make_images()
    expected = grad_cam(model, x)
    with torch.inference_mode():
        x_inf = x.clone()
        assert x_inf.is_inference()
        cams = grad_cam(model, x_inf)
    assert torch.equal(cams, expected)
    assert all(p.grad is None for p in model.parameters())


class _CamModule(L.LightningModule):
    """Tiny LightningModule that computes Grad-CAM inside its validation step."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.cams: list[torch.Tensor] = []
        self.grad_state: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def validation_step(self, batch, batch_idx):
        (x,) = batch
        self.grad_state.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        cams, logits = grad_cam_with_logits(self.net, x)
        self.cams.append(cams.clone())
        self.log("p_dog", logits.softmax(1)[:, 1].mean())


@pytest.mark.parametrize("inference_mode", [True, False])
def test_inside_trainer_validate(inference_mode: bool) -> None:
    net, x = make_model(), make_images(8)
    expected = grad_cam(net, x)
    module = _CamModule(net)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=inference_mode,
    )
    trainer.validate(module, DataLoader(TensorDataset(x), batch_size=4))
    # Lightning really ran the step with gradients off (inference_mode, or no_grad when False).
    assert module.grad_state == [(inference_mode, False)] * 2
    assert (torch.cat(module.cams) - expected).abs().max() < 1e-6
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks for m in net.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = make_model(), make_images()
    cpu = grad_cam(model, x, targets=0)
    model_gpu, x_gpu = model.cuda(), x.cuda()
    # cuDNN convolutions default to TF32, which rounds like bf16; compare exact float32 first.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    cams, logits = grad_cam_with_logits(model_gpu, x_gpu, targets=0)
    assert cams.device == x_gpu.device and logits.device == x_gpu.device
    assert (cams.cpu() - cpu).abs().max() < 1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert_close_to_fp32(grad_cam(model_gpu, x_gpu, targets=0).cpu(), cpu)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype), torch.inference_mode():
            mixed = grad_cam(model_gpu, x_gpu.clone(), targets=0)
        assert_close_to_fp32(mixed.cpu(), cpu, max_diff=0.6)
