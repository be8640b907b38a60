"""The network owns its input (uint8 in, normalised inside), checkpoints of every age load, and
the LightningModule trains any network, for any number of classes the config names."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path

import pytest
import torch

from catdog.errors import UserError
from catdog.model.checkpoint_load import load_checkpoint, net_from_checkpoint, resolve_ckpt_path
from catdog.model.classifier import Classifier
from catdog.model.image_input import IMAGENET_MEAN, IMAGENET_STD, ImageInput
from catdog.model.simple_cnn import SimpleCNN
from helpers import TINY, TinyNet, compose_train, write_image
from train import train

DATA = Path(__file__).parent / "data"
# The original script's layer names: its state_dict must load into SimpleCNN, and SimpleCNN's into it.
ORIGINAL_KEYS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight", "conv3.bias",
                 "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]


def test_image_input_takes_uint8_or_unit_floats_and_normalises_with_imagenet_statistics():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    expected = (images / 255.0 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    layer = ImageInput()
    assert torch.allclose(layer(images), expected, atol=1e-6)
    assert torch.allclose(layer(images / 255.0), expected, atol=1e-6)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    assert layer(channels_last).is_contiguous(memory_format=torch.channels_last)
    for memory_format in (torch.preserve_format, torch.channels_last):  # the latter as Classifier sets it
        layer.memory_format = memory_format
        floats = (images / 255.0).requires_grad_()  # Grad-CAM's input: the normalisation differentiates
        normalised = layer(floats)
        assert torch.allclose(normalised, expected, atol=1e-6)
        normalised.sum().backward()
        assert torch.allclose(floats.grad, (1 / torch.tensor(IMAGENET_STD)).view(1, 3, 1, 1).expand_as(floats))
    assert layer(images).is_contiguous(memory_format=torch.channels_last)  # written so from any input
    assert torch.allclose(layer(images), expected, atol=1e-6)
    with pytest.raises(TypeError, match="uint8 or float"):
        layer(images.long())


def test_simple_cnn_keeps_the_original_state_dict_and_carries_its_classes():
    net = SimpleCNN(image_size=16, classes=["cat", "dog"]).eval()
    assert list(net.state_dict()) == ORIGINAL_KEYS  # mean and std are config, not weights
    assert net.config["classes"] == ["cat", "dog"] and net.config["mean"] == list(IMAGENET_MEAN)
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(net(images), net(images / 255.0), atol=1e-6)
        rebuilt = SimpleCNN(**net.config).eval()
        rebuilt.load_state_dict(net.state_dict())
        assert torch.equal(rebuilt(images), net(images))
    assert SimpleCNN(image_size=16, classes=["a", "b", "c"]).fc2.out_features == 3
    with pytest.raises(UserError, match="two classes"):
        SimpleCNN(image_size=16, classes=["cat"])


def test_a_checkpoint_written_by_the_previous_main_loads_and_scores_the_same():
    """tests/data/checkpoint_main_70c732b.ckpt was saved by train.py at commit 70c732b (16 px,
    BatchNorm), when the class names sat beside the network options and the mean and std in the
    DataModule's state; the .json holds what that commit's eval path computed on fixed pixels."""
    reference = json.loads((DATA / "checkpoint_main_70c732b.json").read_text())
    net = net_from_checkpoint(load_checkpoint(DATA / "checkpoint_main_70c732b.ckpt"))
    assert net.classes == reference["classes"] == ["cat", "dog"] and net.image_size == 16
    images = torch.randint(0, 256, reference["shape"], generator=torch.Generator().manual_seed(reference["seed"]),
                           dtype=torch.uint8).permute(0, 3, 1, 2)
    with torch.no_grad():
        log_probs = net(images).log_softmax(dim=1)
    assert torch.allclose(log_probs, torch.tensor(reference["log_probs"]), atol=1e-6)


def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path):
    """A photo, a text file or a copy cut short: one line saying so, not a traceback and not a
    false alarm about code in the file (which is kept for files that name a callable)."""
    write_image(tmp_path / "cat.jpg")
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n" * 50)
    (tmp_path / "junk.ckpt").write_text("junk\n")
    torch.save({"state_dict": {"w": torch.ones(1000)}}, tmp_path / "whole.ckpt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "whole.ckpt").read_bytes()[:2000])
    for name, expected in [("cat.jpg", "is not a PyTorch checkpoint"), ("notes.ckpt", "is not a PyTorch checkpoint"),
                           ("junk.ckpt", "is not a PyTorch checkpoint"),
                           ("cut.ckpt", "(damaged or cut short)")]:
        with pytest.raises(UserError, match=re.escape(expected)) as err:
            load_checkpoint(tmp_path / name)
        assert "could run code" not in str(err.value)
    with pytest.raises(UserError, match="is a folder: give the path of a .ckpt file in it"):
        resolve_ckpt_path(str(tmp_path))


@pytest.mark.parametrize("options", [
    {},  # no BatchNorm, flatten -> fc1: the student's network
    {"channels": (8, 16, 24), "batch_norm": True},  # widths and the head read off the weights' shapes
    {"channels": (64, 128, 256), "batch_norm": True, "head": "gap"},
])
def test_a_bare_state_dict_of_the_original_script_loads(tmp_path, options):
    torch.manual_seed(0)
    original = SimpleCNN(image_size=32, **options)
    torch.save(original.state_dict(), tmp_path / "student.pth")
    net = net_from_checkpoint(load_checkpoint(tmp_path / "student.pth"))
    assert net.classes == ["cat", "dog"] and net.config["batch_norm"] is options.get("batch_norm", False)
    assert net.config["channels"] == list(options.get("channels", (32, 64, 128)))
    assert net.image_size == (224 if options.get("head") == "gap" else 32)  # a GAP head does not fix the size
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(net.eval()(images), original.eval()(images))


def test_conv_widths_are_three_positive_numbers():
    with pytest.raises(UserError, match="three positive widths"):
        SimpleCNN(image_size=16, channels=(32, 64))


def _receptive_field(net: SimpleCNN, size: int) -> int:
    """The side of the input window that reaches the middle feature of conv3's pooled output."""
    image = torch.rand(1, 3, size, size, requires_grad=True)
    features = net.eval().features(image)
    features[0, :, features.shape[2] // 2, features.shape[3] // 2].sum().backward()
    rows = image.grad.abs().sum(dim=(0, 1, 3)).nonzero()
    return int(rows.max() - rows.min() + 1)


def test_larger_pools_let_the_blocks_see_more_and_travel_in_the_checkpoint():
    torch.manual_seed(0)
    original, pooled = SimpleCNN(image_size=64), SimpleCNN(image_size=64, pool=(4, 4, 2), batch_norm=True)
    assert original.features(torch.rand(1, 3, 64, 64)).shape[-1] == 8
    assert pooled.features(torch.rand(1, 3, 64, 64)).shape[-1] == 2 and pooled.fc1.in_features == 128 * 2 * 2
    sees = lambda **options: _receptive_field(SimpleCNN(image_size=128, **options), 128)  # noqa: E731
    assert (sees(), sees(pool=(2, 4, 4)), sees(pool=(4, 4, 2))) == (22, 54, 74)  # conv3's window, in pixels
    # The pools hold no weights: the layer names stay the original's.
    assert set(pooled.state_dict()) == set(SimpleCNN(image_size=64, batch_norm=True).state_dict())
    ckpt = {"catdog": {"net": pooled.config}, "state_dict": {f"net.{k}": v for k, v in pooled.state_dict().items()}}
    loaded = net_from_checkpoint(ckpt)
    assert loaded.config["pool"] == [4, 4, 2]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(loaded(images), pooled.eval()(images))


def test_the_image_size_must_fit_the_pools():
    with pytest.raises(UserError, match=r"multiple of 32 .*: use 64 or 96, or model.net.pool=\[2,2,2\]"):
        SimpleCNN(image_size=80, pool=(4, 4, 2))
    with pytest.raises(UserError, match="multiple of 32 .*: use 32$"):
        SimpleCNN(image_size=20, pool=(2, 4, 4))  # not a multiple of 8 either: the original pools would not fit
    for size in (0, -5):  # never a negative size to use
        with pytest.raises(UserError, match=f"data.image_size={size} must be a positive multiple of 32 .*: use 32"):
            SimpleCNN(image_size=size, pool=(2, 4, 4))
    with pytest.raises(UserError, match="three positive max-pool sizes"):
        SimpleCNN(image_size=64, pool=(2, 2))


@pytest.mark.parametrize("schedule, expected", [
    (partial(torch.optim.lr_scheduler.OneCycleLR, pct_start=0.25), "step"),
    (partial(torch.optim.lr_scheduler.CosineAnnealingLR), "step"),  # T_max filled in from the run, in steps
    (partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=30), "epoch"),  # a period the config sets
    (partial(torch.optim.lr_scheduler.StepLR, step_size=3), "epoch"),
    (None, "epoch"),
])
def test_the_schedule_says_how_often_it_steps(schedule, expected):
    module = Classifier(TinyNet(["cat", "dog"]), ["cat", "dog"], partial(torch.optim.SGD, lr=0.1), schedule)
    assert module.scheduler_interval == expected


def test_another_network_trains_through_train_py_on_three_classes(tmp_path):
    """Any nn.Module with the input contract plugs in (model.net), and the number of outputs comes
    from data.classes: here a one-layer net on a folder of three classes, with its maps."""
    for cls, colour in (("cat", (200, 30, 30)), ("dog", (30, 200, 30)), ("fox", (30, 30, 200))):
        for i in range(12):
            write_image(tmp_path / "data" / cls / f"{i}.png", size=(20, 20), color=tuple(c + 3 * i for c in colour))
    overrides = [f"data.root={tmp_path / 'data'}", *TINY, "data.image_size=16", "data.classes=[cat,dog,fox]",
                 "~model.net", "+model.net._target_=helpers.TinyNet", "+model.net.classes=${data.classes}",
                 "callbacks.gradcam.layer=act", "test=false", "~logger", "~callbacks.lr_monitor"]
    result = train(compose_train(tmp_path, overrides))
    assert 0.0 <= result["metrics"]["val/acc"] <= 1.0
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert ckpt["catdog"]["classes"] == ["cat", "dog", "fox"] and ckpt["catdog"]["net_class"] == "helpers.TinyNet"
    assert ckpt["state_dict"]["net.head.weight"].shape[0] == 3
    assert (tmp_path / "run" / "gradcam_grid.jpg").is_file()
    with pytest.raises(UserError, match="TinyNet network"):  # never imported by name from a file
        net_from_checkpoint(ckpt)


def test_a_folder_with_other_classes_than_the_config_says_is_one_clear_error(tmp_path):
    for cls in ("cat", "fox"):
        write_image(tmp_path / "data" / cls / "0.png")
    with pytest.raises(UserError, match=r"add data.classes=\[cat,fox\]"):
        train(compose_train(tmp_path, [f"data.root={tmp_path / 'data'}", *TINY, "~logger", "~callbacks.lr_monitor"]))


@pytest.mark.parametrize("zoom", [0, -0.5, "abc", 1.5])
def test_eval_zoom_must_be_a_share_of_the_side(zoom):
    with pytest.raises(UserError, match=f"model.eval_zoom={zoom} must be above 0"):
        Classifier(TinyNet(["cat", "dog"]), ["cat", "dog"], partial(torch.optim.SGD, lr=0.1), eval_zoom=zoom)


def test_an_optimizer_setting_torch_refuses_is_one_line():
    model = Classifier(TinyNet(["cat", "dog"]), ["cat", "dog"], partial(torch.optim.SGD, lr=-1.0))
    with pytest.raises(UserError, match="optimizer: Invalid learning rate: -1.0: fix it in optimizer"):
        model.configure_optimizers()


def test_warmed_up_ema_follows_a_short_run_and_settles_to_the_decay():
    """experiment=cpu's average: after a few updates it is near the weights, not the start (a fixed
    decay keeps 0.998^n of it); after many it moves by (1 - decay) of the gap per update."""
    from torch.optim.swa_utils import get_ema_avg_fn

    from catdog.model.ema import warmed_up_ema

    warm, fixed = warmed_up_ema(0.998), get_ema_avg_fn(0.998)
    start, weights = torch.zeros(3), torch.ones(3)
    a = b = start
    for n in range(1, 91):  # the first update copies (AveragedModel); these are the next 90
        a, b = warm(a, weights, torch.tensor(n)), fixed(b, weights, torch.tensor(n))
    assert float(a[0]) > 0.9 and float(b[0]) < 0.2
    late = warm(torch.zeros(1), torch.ones(1), torch.tensor(10_000))
    assert torch.allclose(late, torch.tensor([0.002]))
    with pytest.raises(UserError, match="decay"):
        warmed_up_ema(1.0)
