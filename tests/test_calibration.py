"""Temperature scaling (model.calibrate): the fit, and how training, testing and checkpoints use it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from catdog.model.calibration import MAX_TEMPERATURE, MIN_TEMPERATURE, fit_temperature, scaled
from helpers import TINY, compose_train


def test_the_fit_finds_the_temperature_the_labels_were_drawn_with():
    g = torch.Generator().manual_seed(0)
    scores = 3 * torch.randn(20_000, 2, generator=g)
    for true_t in (0.5, 2.0):  # an underconfident network, an overconfident one
        labels = torch.multinomial((scores / true_t).softmax(dim=1), 1, generator=g).squeeze(1)
        log_p = scores.log_softmax(dim=1)
        t = fit_temperature(log_p, labels)
        assert t == pytest.approx(true_t, rel=0.05)
        assert F.nll_loss(scaled(log_p, t), labels) < F.nll_loss(log_p, labels)
        assert torch.equal(scaled(log_p, t).argmax(dim=1), log_p.argmax(dim=1))  # predictions unchanged


def test_a_split_without_mistakes_leaves_the_temperature_at_its_bound():
    """Where the network never errs the log loss falls with T towards 0: kept at the bound, not driven to 0."""
    log_p = torch.tensor([[2.0, -1.0], [-3.0, 1.0], [0.5, 0.0]]).log_softmax(dim=1)
    t = fit_temperature(log_p, torch.tensor([0, 1, 0]))
    assert t == pytest.approx(MIN_TEMPERATURE, rel=1e-6) and math.isfinite(float(F.nll_loss(scaled(log_p, t), torch.tensor([0, 1, 0]))))
    assert fit_temperature(log_p, torch.tensor([1, 0, 1])) == pytest.approx(MAX_TEMPERATURE, rel=1e-6)  # every one wrong


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = compose_train(tmp_path_factory.mktemp("calibration"), [*TINY, "model.calibrate=true"])
    return instantiate(cfg.model).eval()


def test_validation_scores_the_network_as_it_is_and_the_test_with_the_temperature(model):
    x, y = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8), torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        raw = model.log_probs(x, temperature=1.0)
        model.temperature = 2.0
        model.on_validation_epoch_start()
        model.validation_step((x, y), 0)
        model.test_step((x, y), 0)
    assert float(model.val_loss.compute()) == pytest.approx(float(F.nll_loss(raw, y)), abs=1e-5)
    assert float(model.test_loss.compute()) == pytest.approx(float(F.nll_loss((raw / 2).log_softmax(dim=1), y)), abs=1e-5)
    assert len(model._val_outputs) == 1 and torch.equal(model._val_outputs[0][1], y)  # what the fit will see
    model.val_loss.reset()
    model.test_loss.reset()


def test_the_temperature_travels_in_the_checkpoint(model):
    model.temperature = 1.7
    checkpoint = {}
    model.on_save_checkpoint(checkpoint)
    model.temperature = 1.0
    model.on_load_checkpoint(checkpoint)
    assert checkpoint["catdog"]["temperature"] == 1.7 and model.temperature == 1.7
    model.on_load_checkpoint({"catdog": {}})  # a checkpoint from before calibration: none fitted
    assert model.temperature == 1.0


def test_a_calibrated_run_fits_a_temperature_each_epoch_and_saves_it_with_that_epochs_weights(tmp_path, synthetic_root):
    from train import train

    fast = ["~logger", "~callbacks.lr_monitor", "callbacks.gradcam=null", "model.calibrate=true", "trainer.max_epochs=2"]
    result = train(compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY, *fast, "data.test_fraction=0.2"]))
    fitted = result["metrics"]["val/temperature"]  # the last epoch's
    assert MIN_TEMPERATURE <= fitted <= MAX_TEMPERATURE and fitted != 1.0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["catdog"]["temperature"] == pytest.approx(fitted)
    best = torch.load(result["best_checkpoint"], weights_only=True)
    assert best["catdog"]["temperature"] != 1.0 and "test/loss" in result["metrics"]
