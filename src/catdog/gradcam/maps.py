"""Class activation maps (Grad-CAM and its relatives) for any conv layer of a model.

A map is built from the layer's output activations A (N, C, h, w) and the gradient G of
the target class's PRE-SOFTMAX score (its logit) with respect to A (Selvaraju et al. 2017):

    cam = ReLU(sum_c W * A)      W = weights(A, G), broadcastable to A

then upsampled bilinearly (align_corners=False) to the input size and min-max normalised
per image. The methods differ only in W, as in pytorch-grad-cam:

* ``gradcam``   W[n, c] = spatial mean of G                        (Selvaraju et al. 2017)
* ``gradcam++`` W[n, c] = sum over space of ReLU(G) * alpha        (Chattopadhay et al. 2018)
* ``layercam``  W[n, c, y, x] = ReLU(G)  (a weight per element)    (Jiang et al. 2021)
* ``hirescam``  W[n, c, y, x] = G        (a weight per element)    (Draelos & Carin 2020)
* ``scorecam``  W[n, c] = softmax over channels of the score of the image masked by each
  channel's upsampled, min-max normalised activation: no gradient (Wang et al. 2020), batched
  over images and channels, with pytorch-grad-cam's choices (raw score, align_corners=True)

A map may also fuse several layers: ``layer="pool1*pool1*pool2"`` is the geometric mean of the
listed layers' maps (each as above; a layer named twice counts twice): (pool1^2 * pool2)^(1/3). A
geometric mean keeps what every layer agrees on (a fine layer's detail where a coarse layer finds
the class, as Guided Grad-CAM gates its fine map by a coarse one) and stays in one map's units,
so its share of mass compares with a single layer's.

The score is the target class's logit, or with ``contrast`` that logit minus the mean of the
other classes' (two classes: logit(dog) - logit(cat) for target dog): evidence for one class
*against* the other, not for "an animal".

The functions are safe to call from anywhere in a Lightning loop: they switch gradients on
locally (also out of ``torch.inference_mode``), use ``torch.autograd.grad`` so no
parameter's ``.grad`` is touched, run the model in eval mode and restore every module's mode,
and always remove their forward hook. All CAM arithmetic is float32, whatever the model's
precision (autocast or half weights).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from catdog.errors import UserError

Targets = Union[int, Sequence[int], Tensor, None]
# (activations, gradients), both float32 (N, C, h, w) -> weights broadcastable to them.
WeightFn = Callable[[Tensor, Tensor], Tensor]


def _gradcam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """Grad-CAM: the gradient averaged over space, one weight per channel."""
    return grads.mean(dim=(2, 3), keepdim=True)


def _gradcam_plus_plus_weights(acts: Tensor, grads: Tensor, eps: float = 1e-6) -> Tensor:
    """Grad-CAM++ (eq. 19 of the paper, with the exp-score trick that makes the
    higher-order derivatives powers of the first one), as pytorch-grad-cam computes it."""
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_acts = acts.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_acts * g3 + eps)
    # The paper's convention: no alpha where the gradient is exactly zero.
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (F.relu(grads) * alpha).sum(dim=(2, 3), keepdim=True)


def _layercam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """LayerCAM: each activation weighted by its own positive gradient (spatial weights)."""
    return F.relu(grads)


def _hirescam_weights(acts: Tensor, grads: Tensor) -> Tensor:
    """HiResCAM: each activation times its own gradient, signed, so the map is exactly the
    part of the score each location contributes (before the final ReLU)."""
    return grads


METHODS: dict[str, WeightFn] = {
    "gradcam": _gradcam_weights,
    "gradcam++": _gradcam_plus_plus_weights,
    "layercam": _layercam_weights,
    "hirescam": _hirescam_weights,
}
GRADIENT_FREE = ("scorecam",)  # weighed by forward passes of masked images (``_scorecam_weights``)
SCORECAM_BATCH = 128  # masked images per forward pass


def method_names() -> list[str]:
    return [*METHODS, *GRADIENT_FREE]


def _map_layer_names(model: nn.Module) -> list[str]:
    """The layers a map is usually taken at: each convolution, the activation after it and the pool after
    that (pool1, the default)."""
    kinds = (nn.modules.conv._ConvNd, nn.ReLU, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)
    return [name for name, m in model.named_modules() if isinstance(m, kinds)]


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    try:
        return model.get_submodule(layer)
    except AttributeError:
        raise UserError(
            f"gradcam layer {layer!r} is not a submodule of {type(model).__name__}; "
            f"its layers with maps: {', '.join(_map_layer_names(model)) or '(none)'}"
        ) from None


def parse_layers(spec: str) -> list[tuple[str, float]]:
    """``"pool1"`` -> [("pool1", 1.0)]; ``"pool1*pool1*pool2"`` -> [("pool1", 2/3), ("pool2", 1/3)]: the
    layers a map fuses and their exponents in the geometric mean (a layer named twice counts twice)."""
    names = [name.strip() for name in str(spec).split("*")]
    if not all(names):
        raise UserError(f"gradcam layer {spec!r} is not a layer or a product of layers (e.g. pool1, or pool1*pool1*pool2)")
    return [(name, names.count(name) / len(names)) for name in dict.fromkeys(names)]


def find_layers(model: nn.Module, spec: str) -> list[tuple[nn.Module, float]]:
    """The modules of a layer spec (``parse_layers``) with their exponents; a wrong name fails here."""
    return [(find_layer(model, name), weight) for name, weight in parse_layers(spec)]


def weight_fn(method: str) -> WeightFn | None:
    """The method's weights from (activations, gradients); None for a gradient-free method."""
    if method not in METHODS and method not in GRADIENT_FREE:
        raise UserError(f"gradcam method {method!r} is not one of {', '.join(method_names())}")
    return METHODS.get(method)


def _target_indices(targets: Targets, logits: Tensor) -> Tensor:
    """Class index per image as a LongTensor (N,) on the logits' device; default: argmax."""
    n, num_classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(targets, dtype=torch.long, device=logits.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.numel() != n:
        raise UserError(f"gradcam got {t.numel()} targets for {n} images")
    if ((t < 0) | (t >= num_classes)).any():
        raise UserError(f"gradcam targets {t.tolist()} must lie in [0, {num_classes})")
    return t


def _score(logits: Tensor, t: Tensor, contrast: bool) -> Tensor:
    """(N,) the score each image's map explains: its target logit, minus the mean of the others'
    with ``contrast``."""
    own = logits.gather(1, t[:, None])[:, 0]
    if not contrast:
        return own
    if logits.shape[1] < 2:
        raise UserError("a contrastive map needs at least two classes")
    return own - (logits.sum(dim=1) - own) / (logits.shape[1] - 1)


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Every module in eval mode (deterministic dropout/BN) for a moment, then each module's own
    mode back: per module, because a model may deliberately keep some parts (frozen BN) in eval."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes.items():
            m.training = training


def _normalize(cam: Tensor) -> Tensor:
    """Per-image min-max to [0, 1]; a constant (e.g. all-zero) map becomes 0, not NaN."""
    flat = cam.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - lo
    return (cam - lo) / torch.where(span > 0, span, torch.ones_like(span))


def _model_input(model: nn.Module, images: Tensor) -> Tensor:
    """A fresh normal (non-inference) tensor to differentiate through: uint8 pixels become floats
    in [0, 1], which the networks here take as well (``catdog.model.image_input``), in the
    model's dtype when its weights are half precision (under autocast they stay float32).
    It requires grad so the layer's output is in the graph even if the model is frozen."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images.clone()
    if param is not None and x.is_floating_point():
        x = x.to(param.dtype)
    return x.requires_grad_(x.is_floating_point())


def _forward_with_activations(model: nn.Module, layers: list[nn.Module], x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Run the model once; return (logits, each layer's output), the latter still in the graph."""
    captured: dict[int, Tensor] = {}
    handles = [layer.register_forward_hook(lambda _m, _inp, out, k=k: captured.__setitem__(k, out))
               for k, layer in enumerate(layers)]
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    acts = []
    for k, layer in enumerate(layers):
        if k not in captured:
            raise UserError(f"gradcam layer {type(layer).__name__} was not used by the model's forward")
        out = captured[k]
        if not isinstance(out, Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise UserError(f"gradcam needs a layer with (N, C, h, w) output, got {shape}")
        acts.append(out)
    return logits, acts


def _scorecam_weights(model: nn.Module, x: Tensor, acts: Tensor, t: Tensor, contrast: bool) -> Tensor:
    """Score-CAM's (N, C, 1, 1) weights: the image masked by each channel, scored, softmaxed
    over channels. As pytorch-grad-cam: upsampled with align_corners=True, 1e-8 in the min-max.
    The masks are made per forward pass: all of them at once would be N * C images."""
    n, c = acts.shape[:2]
    scores = torch.empty(n * c, device=acts.device)
    for chunk in torch.arange(n * c, device=acts.device).split(SCORECAM_BATCH):
        image, channel = chunk // c, chunk % c
        up = F.interpolate(acts[image, channel][:, None], size=x.shape[-2:], mode="bilinear", align_corners=True)
        lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
        masked = (x[image].float() * (up - lo) / (hi - lo + 1e-8)).to(x.dtype)
        scores[chunk] = _score(model(masked).float(), t[image], contrast)
    return scores.view(n, c).softmax(dim=1)[:, :, None, None]


def grad_cam_with_logits(
    model: nn.Module,
    images: Tensor,
    layer: str = "conv3",
    targets: Targets = None,
    method: str = "gradcam",
    contrast: bool = False,
) -> tuple[Tensor, Tensor]:
    """Class activation maps and the logits of the same forward pass.

    Args:
        model: a classifier returning logits (N, num_classes).
        images: (N, C, H, W) batch on the model's device, uint8 pixels or the model's float input;
            may be an inference tensor.
        layer: dotted name of a submodule with (N, C, h, w) output (``model.get_submodule``), or a
            product of them (``"pool1*pool1*pool2"``): their maps' geometric mean.
        targets: class per image (int for all, list or LongTensor of N); default the predicted one.
        method: one of ``method_names()``.
        contrast: explain the target logit minus the other classes' mean (see the module's notes).

    Returns:
        cams: float32 (N, H, W) in [0, 1]; logits: detached float32 (N, num_classes).
    """
    layers = find_layers(model, layer)
    modules = [module for module, _ in layers]
    weigh = weight_fn(method)
    with evaluating(model):
        if weigh is None:  # gradient-free
            with torch.no_grad():
                x = _model_input(model, images).detach()
                logits, acts = _forward_with_activations(model, modules, x)
                acts = [a.float() for a in acts]
                t = _target_indices(targets, logits)
                weights = [_scorecam_weights(model, x, a, t, contrast) for a in acts]
        else:
            # Lightning validates under no_grad or inference_mode; both must be lifted here.
            with torch.inference_mode(False), torch.enable_grad():
                logits, acts = _forward_with_activations(model, modules, _model_input(model, images))
                t = _target_indices(targets, logits)
                # Images are independent in eval mode, so the gradient of the sum of the chosen
                # scores gives each image's own gradient in one backward pass (for every layer).
                grads = torch.autograd.grad(_score(logits, t, contrast).sum(), acts)
            acts = [a.detach().float() for a in acts]
            weights = [weigh(a, g.float()) for a, g in zip(acts, grads)]
        cams = [_normalize(_upsampled(F.relu((w * a).sum(dim=1, keepdim=True)), images))
                for w, a in zip(weights, acts)]
    if len(cams) == 1:
        return cams[0], logits.detach().float()
    fused = torch.stack([cam.pow(power) for cam, (_, power) in zip(cams, layers)]).prod(dim=0)
    return _normalize(fused), logits.detach().float()


def _upsampled(cam: Tensor, images: Tensor) -> Tensor:
    """(N, 1, h, w) -> (N, H, W) at the images' size, bilinear."""
    return F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def grad_cam(
    model: nn.Module,
    images: Tensor,
    layer: str = "conv3",
    targets: Targets = None,
    method: str = "gradcam",
    contrast: bool = False,
) -> Tensor:
    """Class activation maps only: float32 (N, H, W) in [0, 1]. See ``grad_cam_with_logits``."""
    return grad_cam_with_logits(model, images, layer, targets, method, contrast)[0]
