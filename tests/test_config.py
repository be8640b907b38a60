"""The Hydra configs compose, build what they name, and keep the original recipe exact."""

from __future__ import annotations

import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException, OverrideParseException
from hydra.utils import instantiate

from catdog.command_line import _kind_wanted, describe
from catdog.data.augment import centre_zoom

from helpers import ROOT, compose_train, run_cli


def test_default_config_builds_every_object(tmp_path):
    cfg = compose_train(tmp_path, ["data.root=/nowhere"])
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    assert datamodule.image_size == 224 and datamodule.batch_size == 64
    # The default pools are 2, 4, 4 (conv3 sees 54 px of a 224 px photo): fc1 on 7 x 7 features, not the original's 28 x 28.
    assert list(cfg.model.net.pool) == [2, 4, 4] and model.net.fc1.in_features == 128 * 7 * 7
    assert isinstance(model.optimizer_factory(params=model.parameters()), torch.optim.Optimizer)
    assert instantiate(cfg.trainer, logger=False).max_epochs == cfg.trainer.max_epochs


def test_user_facing_override_names(tmp_path):
    cfg = compose_train(tmp_path, ["data.root=/x", "data.image_size=64", "data.batch_size=8",
                                   "optimizer.lr=0.0003", "trainer.max_epochs=40"])
    model = instantiate(cfg.model)
    assert model.net.fc1.in_features == 128 * 2 * 2  # fc1 follows data.image_size (64 / 32, the pools' product)
    assert model.optimizer_factory.keywords["lr"] == 0.0003
    assert cfg.trainer.max_epochs == 40 and cfg.data.batch_size == 8


def test_cpu_experiment_is_a_whole_recipe(tmp_path):
    """experiment=cpu: the CPU preset, 96 px with the default's pools, no MixUp, the mild surroundings swap in the model's
    augmentation, flip TTA on the centre at the training zoom's mean, and an EMA of the weights that
    train.py builds."""
    from lightning.pytorch.callbacks import WeightAveraging

    from train import build_callbacks

    cfg = compose_train(tmp_path, ["experiment=cpu", "data.root=/x"])
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.max_epochs == 50
    assert cfg.trainer.max_epochs % cfg.trainer.check_val_every_n_epoch == 0  # the last epoch is validated
    model = instantiate(cfg.model)
    assert model.net.image_size == 96 and model.net.fc1.in_features == 128 * 3 * 3  # pools 2, 4, 4: 96 / 32
    assert cfg.model.mixup == 0 and cfg.model.tta_flip is True
    assert model.augment.frame_swap == 0.25 and model.augment.frame_keep == (0.6, 0.9)
    assert cfg.model.eval_zoom == sum(cfg.model.augment.scale) / 2 == 0.875
    x = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8)
    with torch.no_grad():
        model.eval()
        view = centre_zoom(x, 0.875)
        expected = ((model.net(view).softmax(1) + model.net(view.flip(-1)).softmax(1)) / 2).log()
        assert torch.allclose(model.log_probs(x), expected, atol=1e-5)  # what validation and test score
    (ema,) = [c for c in build_callbacks(cfg) if isinstance(c, WeightAveraging)]
    assert ema._kwargs["avg_fn"].__qualname__.startswith("warmed_up_ema")


def test_cpu_small_experiment_is_the_measured_small_data_recipe(tmp_path):
    """experiment=cpu_small composes to exactly what RESULTS.md measured for a few thousand photos
    (bench/recipes.py's cpu_small_96px): experiment=cpu for 150 epochs, MixUp, no surroundings swap, at
    experiment=cpu's 96 px and pools 2, 4, 4."""
    sys.path.insert(0, str(ROOT / "bench"))
    from recipes import RECIPES

    cfg = compose_train(tmp_path, ["experiment=cpu_small", "data.root=/x"])
    assert cfg == compose_train(tmp_path, ["data.root=/x", *RECIPES["cpu_small_96px"]])
    assert (cfg.trainer.max_epochs, cfg.model.mixup, cfg.model.augment.frame_swap) == (150, 0.2, 0)
    assert cfg.data.image_size == 96 and list(cfg.model.net.pool) == [2, 4, 4] and "ema" in cfg.callbacks


def test_maps_experiment_is_the_measured_penalty_over_small_batches(tmp_path):
    """experiment=maps composes to exactly what RESULTS.md measured (sessions 45, 48, 49 and 51): the default
    recipe at the maps issue's 64 px and 40 epochs with the surroundings penalty at 1.0 over batches of 16, on
    the default's surroundings swap, which the penalty needs, without the zoom-ins and the rotations, calibrated,
    LayerCAM of pool1 and pool2 in TensorBoard; bench/recipes.py's maps_rot10 and maps_zoom are the preset as sessions 48-50 and
    45-47 measured it."""
    sys.path.insert(0, str(ROOT / "bench"))
    from recipes import RECIPES

    cfg = compose_train(tmp_path, ["experiment=maps", "data.root=/x"])
    measured = [*RECIPES["surroundings_penalty"], "data.image_size=64", "trainer.max_epochs=40", "data.batch_size=16"]
    now = ["model.augment.scale=[1.0,1.0]", "model.augment.degrees=0", "model.calibrate=true", "callbacks.gradcam.method=layercam",
           "callbacks.gradcam.layer=pool1*pool1*pool2"]
    assert cfg == compose_train(tmp_path, ["data.root=/x", *measured, *now])
    assert (cfg.model.surroundings_penalty, cfg.data.batch_size, cfg.model.augment.frame_swap) == (1.0, 16, 0.25)
    rot10 = compose_train(tmp_path, ["data.root=/x", *measured, *now[:1]])
    assert compose_train(tmp_path, ["data.root=/x", *RECIPES["maps_rot10"]]) == rot10
    assert compose_train(tmp_path, ["data.root=/x", *RECIPES["maps_zoom"]]) == compose_train(tmp_path, ["data.root=/x", *measured])


def test_seed_experiment_is_the_original_recipe(tmp_path):
    cfg = compose_train(tmp_path, ["experiment=seed", "data.root=/x"])
    assert cfg.seed == 42 and cfg.trainer.max_epochs == 20
    assert cfg.data.batch_size == 64 and cfg.data.image_size == 224
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3 and cfg.optimizer.weight_decay == 0
    assert cfg.scheduler._target_ == "torch.optim.lr_scheduler.StepLR"
    assert cfg.scheduler.step_size == 3 and cfg.scheduler.gamma == 0.1
    assert instantiate(cfg.model).scheduler_interval == "epoch"  # StepLR's period is in epochs
    net = cfg.model.net
    assert (net.batch_norm, net.head, net.dropout, net.hidden, list(net.pool)) == (False, "fc", 0.5, 512, [2, 2, 2])
    assert instantiate(cfg.model).net.fc1.in_features == 128 * 28 * 28  # the original's fc1 at 224 px
    aug = cfg.model.augment
    assert (aug.hflip, aug.degrees, list(aug.scale), aug.brightness, aug.contrast, aug.saturation) == (0.5, 10, [1.0, 1.0], 0.2, 0.2, 0.2)
    assert aug.frame_swap == 0 and aug.erase == 0  # the default's surroundings swap is not the original's
    assert cfg.model.label_smoothing == 0


@pytest.mark.parametrize("max_epochs", [5, 40, 100])
def test_default_schedule_keeps_learning_to_the_last_epoch(tmp_path, max_epochs):
    cfg = compose_train(tmp_path, ["data.root=/x", f"trainer.max_epochs={max_epochs}"])
    model = instantiate(cfg.model)
    steps_per_epoch = 10

    class FakeData:
        def train_dataloader(self):
            return [None] * steps_per_epoch

    class FakeTrainer:
        max_steps, limit_train_batches, accumulate_grad_batches, datamodule = -1, 1.0, 1, FakeData()

    FakeTrainer.max_epochs = max_epochs
    model.trainer = None
    model._trainer = FakeTrainer()
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    per_step = conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(max_epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if per_step:
            sched.step()
    if not per_step:
        lrs = lrs[::steps_per_epoch]
    peak = max(lrs)
    last_epoch = lrs[-(steps_per_epoch if per_step else 1):]
    # Still a useful rate in the final tenth of the run, and never frozen for a long stretch.
    tenth = lrs[int(len(lrs) * 0.9) - 1]
    assert tenth > 1e-3 * peak, (max_epochs, tenth, peak)
    assert max(last_epoch) < peak  # it does decay


def test_gpu_and_cpu_presets(tmp_path):
    gpu = compose_train(tmp_path, ["trainer=gpu", "data.root=/x"])
    assert gpu.trainer.precision == "bf16-mixed" and gpu.trainer.benchmark and gpu.model.compile
    assert gpu.model.compile_augment and gpu.optimizer.fused  # the host work per step, cut (issue 4)
    assert gpu.trainer.max_epochs == compose_train(tmp_path, ["data.root=/x"]).trainer.max_epochs
    cpu = compose_train(tmp_path, ["trainer=cpu", "data.root=/x"])
    assert cpu.trainer.accelerator == "cpu" and cpu.trainer.precision in ("bf16-mixed", "32-true")
    assert not cpu.model.compile and not cpu.model.compile_augment  # compiling loses on this CPU (RESULTS.md)
    fp32 = compose_train(tmp_path, ["trainer=cpu", "trainer.precision=32-true", "data.root=/x"])
    assert fp32.trainer.precision == "32-true"


def test_named_recipes_keep_the_pools_they_were_measured_with(tmp_path):
    """bench/recipes.py's figures in RESULTS.md were measured with the original pools, the default
    until session 26, and experiment=cpu's at 80 px until session 27: a recipe that names neither
    must still get them, and `defaults` follows conf/."""
    sys.path.insert(0, str(ROOT / "bench"))
    from recipes import RECIPES

    def pools(recipe: str) -> list[int]:
        return list(compose_train(tmp_path, ["data.root=/x", *RECIPES[recipe]]).model.net.pool)

    def size(recipe: str) -> int:
        return compose_train(tmp_path, ["data.root=/x", *RECIPES[recipe]]).data.image_size

    assert pools("defaults") == list(compose_train(tmp_path, ["data.root=/x"]).model.net.pool) == [2, 4, 4]
    assert pools("pool222") == pools("zoomout") == pools("cpu_40") == pools("original_seed") == [2, 2, 2]
    assert pools("pool244") == [2, 4, 4] and pools("cpu_40_pool442") == [4, 4, 2]  # a recipe's own pools win
    assert size("cpu_50_swap_mild") == size("cpu_40_pool442") == 80 and size("zoomout") == 224
    assert size("cpu_pool244_96px") == 96 and pools("cpu_pool244_96px") == [2, 4, 4]  # and its own size
    assert compose_train(tmp_path, ["data.root=/x", *RECIPES["cpu_pool244_96px"]]) == compose_train(
        tmp_path, ["data.root=/x", "experiment=cpu"])  # what experiment=cpu became in session 27

    def swap(recipe: str) -> tuple[float, list[float]]:
        augment = compose_train(tmp_path, ["data.root=/x", *RECIPES[recipe]]).model.augment
        return augment.frame_swap, list(augment.frame_keep)

    # Measured without the surroundings swap, the default since session 30, unless a recipe names its own.
    assert swap("pool244") == swap("zoomout") == (0, [0.5, 0.8]) and swap("frame_swap") == (0.5, [0.5, 0.8])
    assert swap("pool244_swap_mild") == swap("cpu_50_swap_mild") == swap("defaults") == (0.25, [0.6, 0.9])
    assert compose_train(tmp_path, ["data.root=/x", *RECIPES["pool244_swap_mild"]]) == compose_train(
        tmp_path, ["data.root=/x"])  # what the default recipe became in session 30


@pytest.mark.parametrize("override, expected", [
    ("trainer.max_epoch=40", "trainer.max_epoch is not a setting; did you mean trainer.max_epochs?"),
    ("callbacks.early_stopping.patience=5", "add callbacks/early_stopping=val_loss (options: val_loss) before its settings"),
    ("logger=[tensorboard,cvs]", "there is no logger named 'cvs': did you mean logger=csv?"),
    ("data.root=~/photos", "(a ~ inside a value must be quoted, as in 'data.root=\"~/photos\"', or use $HOME)"),
    ("model.net.chanels=[8,8,8]", "did you mean model.net.channels?"),
    ("zzz=3", "zzz is not a setting; `--cfg job` lists the settings (+zzz=3"),
    ("experiment=cpuu", "there is no experiment named 'cpuu': did you mean experiment=cpu? (choices: cpu, cpu_small,"),
    ("optimizer=adamm", "did you mean optimizer=adam? (choices: adam, adamw, sgd)"),
    ("+experiment=cpu", "experiment is already in the config: drop the +, as in experiment=cpu"),
    ("trainer.max_epochs=[1", "cannot read an override: no viable alternative at input '[1'"),
])
def test_command_line_mistakes_are_described_in_one_line(tmp_path, override, expected):
    with pytest.raises((ConfigCompositionException, OverrideParseException)) as caught:
        compose_train(tmp_path, [override])
    message = describe(caught.value)
    assert expected in message and "\n" not in message


def test_help_says_what_each_command_does_and_lists_groups_only_where_it_uses_them():
    train, evaluate = run_cli("train", "--help"), run_cli("eval", "--help")
    assert train.returncode == 0 and evaluate.returncode == 0
    assert train.stdout.startswith("`python src/train.py`: train SimpleCNN") and "experiment: cpu, cpu_small" in train.stdout
    assert evaluate.stdout.startswith("`python src/eval.py ckpt_path=... data.root=...`: test a checkpoint")
    assert "experiment:" not in evaluate.stdout and "optimizer:" not in evaluate.stdout  # groups eval.py never reads
    assert "eval_zoom: null" in evaluate.stdout  # its own settings


@pytest.mark.parametrize("default, value, wanted", [
    (False, "no", "true or false"), (True, 1, "true or false"), (False, True, None),
    (64, "abc", "a number"), (64, True, "a number"), (64, 0.5, None), (0.001, 1, None),
    ([2, 4, 4], 4, "a list"), ([2, 4, 4], [2, 2, 2], None),
    (None, "anything", None), ("auto", 3, None), ("${paths.output_root}/cache", 5, None), (64, None, None),
])
def test_a_value_of_another_kind_than_its_setting_is_named(default, value, wanted):
    assert _kind_wanted("data.x", default, value) == wanted


def test_lightnings_own_switches_may_take_words():
    assert _kind_wanted("trainer.deterministic", False, "warn") is None
