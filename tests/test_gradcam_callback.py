"""The Grad-CAM callback in a real training run, and the attention scores it logs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from catdog.gradcam.scoring import energy_in_box, pointing_game
from helpers import TINY, compose_train, write_oxford_pets
from train import train


def events(run: Path) -> tuple[dict, dict]:
    """{image tag: [steps]}, {scalar tag: [values]} from a run's TensorBoard files."""
    images, scalars = {}, {}
    for path in run.glob("tensorboard/events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return images, scalars


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_root) -> Path:
    tmp = tmp_path_factory.mktemp("gradcam-run")
    probe = write_oxford_pets(tmp / "pets")
    cfg = compose_train(tmp, [f"data.root={synthetic_root}", *TINY, "trainer.max_epochs=3",
                              "callbacks.gradcam.every_n_epochs=2", "callbacks.gradcam.score_images=16",
                              f"callbacks.gradcam.probe={probe}", "callbacks.gradcam.faithfulness_images=4",
                              "callbacks.gradcam.faithfulness_every_n_epochs=3"])
    with pytest.MonkeyPatch.context() as patch:  # the order of the callback's logging and hand-offs, per epoch
        _record_order(patch)
        train(cfg)
    return tmp / "run"


ORDER: list[tuple[str, str]] = []


def _record_order(patch: pytest.MonkeyPatch) -> None:
    import lightning as L

    from catdog.callbacks.gradcam_logger import GradCamLogger

    log, submit = L.LightningModule.log, GradCamLogger._submit

    def logged(self, name, *args, **kwargs):
        if name.startswith("gradcam/"):
            ORDER.append(("log", name))
        return log(self, name, *args, **kwargs)

    def submitted(self, trainer, fn, *args):
        ORDER.append(("submit", fn.__name__))
        return submit(self, trainer, fn, *args)

    patch.setattr(L.LightningModule, "log", logged)
    patch.setattr(GradCamLogger, "_submit", submitted)


def test_maps_logged_at_step_epoch_for_due_epochs_only(run):
    images, _ = events(run)
    # every_n_epochs=2 over 3 epochs: epoch 1, and the last epoch (2); never the sanity check.
    assert sorted(images["gradcam/grid"]) == [1, 2]
    for i in range(8):
        assert sorted(images[f"gradcam/sample_{i:02d}"]) == [1, 2]
    assert sorted(images["val/confusion_matrix"]) == [0, 1, 2]  # its own callback: every epoch
    # The run folder's copy is the last epoch's picture, the very JPEG TensorBoard got (encoded once).
    for tag, name in (("gradcam/grid", "gradcam_grid.jpg"), ("gradcam/probe_grid", "gradcam_probe_grid.jpg")):
        assert _last_picture(run, tag) == (run / name).read_bytes()


def test_pictures_go_to_the_writer_after_the_epochs_scores_are_logged(run):
    # Encoded beside the scoring, the pictures took the GIL from it (bench/RESULTS.md, session 41).
    letter = {"_write_epoch": "e", "_write_probe": "p", "_write_gallery": "g"}
    sequence = "".join("l" if kind == "log" else letter[name] for kind, name in ORDER)
    assert re.fullmatch(r"(l+ep){2}g?", sequence), sequence  # two due epochs: all the logs, then both pictures
    assert ("log", "gradcam/probe/max_on_animal") in ORDER and ("log", "gradcam/deletion_auc") in ORDER


def _last_picture(run: Path, tag: str) -> bytes:
    (path,) = run.glob("tensorboard/events.out.tfevents.*")
    acc = EventAccumulator(str(path), size_guidance={"images": 0})
    acc.Reload()
    return max(acc.Images(tag), key=lambda e: e.step).encoded_image_string


def test_pr_curve_every_epoch_and_the_projector_of_the_validation_images(run):
    """TensorBoard beyond images and scalars (callbacks/tensorboard_extras.py)."""
    (events_file,) = run.glob("tensorboard/events.out.tfevents.*")
    acc = EventAccumulator(str(events_file), size_guidance={"tensors": 0})
    acc.Reload()
    assert [e.step for e in acc.Tensors("val/pr_curve")] == [0, 1, 2]
    assert "embeddings" in (run / "tensorboard" / "projector_config.pbtxt").read_text()
    (folder,) = run.glob("tensorboard/*/val_penultimate_features")
    rows = (folder / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "true\tpredicted\tresult" and len(rows) == 1 + 20  # the validation images: 10 of 48 per class
    assert all(r.split("\t")[2] == ("right" if r.split("\t")[0] == r.split("\t")[1] else "wrong") for r in rows[1:])
    vectors = (folder / "tensors.tsv").read_text().splitlines()
    assert len(vectors) == 20 and len(vectors[0].split("\t")) == 512  # SimpleCNN's fc1 outputs, fc2's input
    assert (folder / "sprite.png").is_file()


def test_scores_logged_where_the_data_has_boxes(run):
    _, scalars = events(run)
    assert len(scalars["gradcam/pointing_game"]) == 2 and len(scalars["gradcam/energy_in_box"]) == 2
    assert all(0.0 <= v <= 1.0 for v in scalars["gradcam/pointing_game"] + scalars["gradcam/energy_in_box"])


def test_probe_scores_and_references_and_faithfulness_logged(run):
    images, scalars = events(run)
    for group in ("probe", "probe_centre", "probe_uniform"):
        for score in ("energy_on_animal", "auroc_on_animal", "max_on_animal", "pointing_on_animal", "pointing_on_head"):
            values = scalars[f"gradcam/{group}/{score}"]
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), (group, score)
    assert scalars["gradcam/probe_uniform/energy_on_animal"][0] == pytest.approx(0.25, abs=0.05)  # the squares' share
    for name in ("gradcam", "gradcam/random"):
        for curve in ("deletion_auc", "insertion_auc"):  # every third epoch and the last: epoch 2 only
            assert len(scalars[f"{name}/{curve}"]) == 1 and all(0.0 <= v <= 1.0 for v in scalars[f"{name}/{curve}"])
    assert sorted(images["gradcam/probe_grid"]) == [1, 2] and (run / "gradcam_probe_grid.jpg").is_file()


def test_mask_outline_is_drawn_on_the_overlay_only():
    import numpy as np

    from catdog.gradcam.render import CELL, TITLE_HEIGHT, Row, cam_grid

    image, cam = torch.zeros(3, 16, 16, dtype=torch.uint8), torch.zeros(16, 16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, 4:12] = True
    plain, outlined = cam_grid([Row(image, cam, "x")]), cam_grid([Row(image, cam, "x", outline=mask)])
    changed = np.argwhere((plain != outlined).any(axis=2))
    assert len(changed) and changed[:, 1].min() >= 2 * CELL and changed[:, 0].min() >= TITLE_HEIGHT
    assert (outlined[changed[:, 0], changed[:, 1]] == 255).all()  # white
    assert changed[:, 0].min() == TITLE_HEIGHT + 32 and changed[:, 1].min() == 2 * CELL + 32  # 4 px at 8 x


@pytest.mark.parametrize("size, cell", [(64, 128), (96, 96), (80, 160), (224, 224)])
def test_grid_shows_each_pixel_as_a_whole_square(size, cell):
    """Small images are enlarged by a whole factor, each pixel repeated: what the network saw."""
    from catdog.gradcam.render import TITLE_HEIGHT, Row, cam_grid

    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    grid = cam_grid([Row(image, torch.rand(size, size), "dog -> cat  P(dog)=0.19")])  # no glyph reaches the picture
    assert grid.shape == (TITLE_HEIGHT + cell, 3 * cell, 3)
    shown = torch.from_numpy(grid[TITLE_HEIGHT:, :cell].copy()).permute(2, 0, 1)
    k = cell // size
    assert torch.equal(shown, image.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2))


def test_the_callbacks_jpeg_pictures_look_as_drawn():
    """The callback's pictures go out as JPEG (5x faster to encode than PNG, every epoch): a photo-like
    grid with its heatmap, outline and title comes back within 40 dB, the white outline still white."""
    import io

    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from catdog.gradcam.render import CELL, TITLE_HEIGHT, Row, cam_grid, jpeg_bytes

    gen = torch.Generator().manual_seed(0)
    photo = F.interpolate(torch.rand(1, 3, 8, 8, generator=gen), size=64, mode="bilinear")[0]  # smooth, as photos are
    cam = F.interpolate(torch.rand(1, 1, 4, 4, generator=gen), size=64, mode="bilinear")[0, 0]
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[16:48, 16:48] = True
    grid = cam_grid([Row((photo * 255).to(torch.uint8), cam, "cat -> dog  P(dog)=0.62", outline=mask)])
    decoded = np.asarray(Image.open(io.BytesIO(jpeg_bytes(grid)))).astype(float)
    assert decoded.shape == grid.shape
    assert 10 * np.log10(255**2 / ((decoded - grid) ** 2).mean()) > 40
    k = CELL // 64
    assert (decoded[TITLE_HEIGHT + 16 * k, 2 * CELL + 16 * k: 2 * CELL + 48 * k] > 200).all()  # the outline's top edge


def test_fixed_images_are_class_balanced_and_the_same_each_time(synthetic_root, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_train(tmp_path, [f"data.root={synthetic_root}", *TINY])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    first, again = dm.sample_images(8), dm.sample_images(8)
    assert first["paths"] == again["paths"] and torch.equal(first["images"], again["images"])
    assert int(first["labels"].sum()) == 4  # 4 cats, 4 dogs
    assert set(first["paths"]) <= {dm.decoded.paths[i] for i in dm.splits["val"]}
    assert first["boxes"] is not None and first["boxes"].shape == (8, 4)


# -- the scores themselves ------------------------------------------------------------------

BOX = torch.tensor([[0.25, 0.25, 0.5, 0.5]])


def peak_at(x: int, y: int, size: int = 64) -> torch.Tensor:
    cam = torch.zeros(1, size, size)
    cam[0, y, x] = 1.0
    return cam


def test_pointing_game_hits_inside_misses_outside():
    assert pointing_game(peak_at(20, 20), BOX).item()
    assert not pointing_game(peak_at(60, 60), BOX).item()
    # Just outside the box: a hit within Zhang et al.'s tolerance, a miss without it.
    assert pointing_game(peak_at(34, 20), BOX).item()
    assert not pointing_game(peak_at(34, 20), BOX, tolerance=0.0).item()
    assert not pointing_game(torch.zeros(1, 64, 64), BOX).item()  # an empty map points nowhere


def test_energy_in_box_is_the_share_of_mass_inside():
    assert energy_in_box(torch.ones(1, 64, 64), BOX).item() == pytest.approx(0.0625, abs=0.01)  # area of the box
    inside = torch.zeros(1, 64, 64)
    inside[0, 20:30, 20:30] = 1.0
    assert energy_in_box(inside, BOX).item() == pytest.approx(1.0)
    assert energy_in_box(torch.zeros(1, 64, 64), BOX).item() == 0.0


# -- the scores mean something -------------------------------------------------------------


@pytest.fixture(scope="module")
def taught(tmp_path_factory) -> dict:
    """A model trained long enough on the built-in data to look at the heads, and held-out images."""
    from hydra.utils import instantiate

    from catdog.data.synthetic import generate

    tmp = tmp_path_factory.mktemp("taught")
    root = generate(tmp / "data", n_per_class=500, size=64, seed=1)
    cfg = compose_train(tmp, [f"data.root={root}", "data.image_size=64", "data.batch_size=32", "data.num_workers=0",
                              "trainer.max_epochs=15", "optimizer.lr=0.002", "trainer.precision=32-true", "model.compile=false",
                              "trainer.enable_progress_bar=false", "callbacks.gradcam=null", "~logger", "~callbacks.lr_monitor",
                              "test=false"])
    result = train(cfg)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    from catdog.model.checkpoint_load import load_checkpoint, net_from_checkpoint

    net = net_from_checkpoint(load_checkpoint(tmp / "run" / "checkpoints" / "last.ckpt"))
    sample = dm.sample_images(120)
    return {"net": net, "x": sample["images"], "labels": sample["labels"],
            "boxes": sample["boxes"], "val_acc": result["metrics"]["val/acc"]}


@pytest.mark.slow
def test_a_trained_model_points_at_the_head_better_than_chance_or_the_wrong_class(taught):
    from catdog.gradcam import grad_cam

    assert taught["val_acc"] > 0.8, "the model did not learn: the comparison below would mean nothing"
    right = grad_cam(taught["net"], taught["x"], "relu3", taught["labels"])
    wrong = grad_cam(taught["net"], taught["x"], "relu3", 1 - taught["labels"])
    noise = torch.rand(right.shape, generator=torch.Generator().manual_seed(0))
    score = {name: pointing_game(maps, taught["boxes"]).float().mean().item()
             for name, maps in (("right", right), ("wrong", wrong), ("random", noise))}
    energy = {name: energy_in_box(maps, taught["boxes"]).mean().item()
              for name, maps in (("right", right), ("wrong", wrong), ("random", noise))}
    assert score["right"] > score["random"] + 0.2 and score["right"] > score["wrong"] + 0.1, score
    assert energy["right"] > energy["random"] and energy["right"] > energy["wrong"], energy


def test_probe_grid_alternates_classes_and_spreads_over_each(tmp_path):
    from catdog.gradcam.probe import grid_picks, load_probe

    probe = load_probe(write_oxford_pets(tmp_path / "pets"), 32)  # 4 cats, then 4 dogs
    shown = grid_picks(probe.labels, 4)
    assert probe.labels[shown].tolist() == [0, 1, 0, 1] and shown.tolist() == [0, 4, 3, 7]


def test_a_wrong_method_colormap_or_layer_names_its_setting_before_training():
    from types import SimpleNamespace

    from catdog.callbacks.gradcam_logger import GradCamLogger
    from catdog.errors import UserError
    from catdog.model.simple_cnn import SimpleCNN

    with pytest.raises(UserError, match="^callbacks.gradcam.method: gradcam method 'gradcamm' is not one of"):
        GradCamLogger(method="gradcamm")
    with pytest.raises(UserError, match="^callbacks.gradcam.colormap: colormap=nosuch"):
        GradCamLogger(colormap="nosuch")
    callback = GradCamLogger(layer="relu9")
    with pytest.raises(UserError, match="^callbacks.gradcam.layer: gradcam layer 'relu9' is not a submodule"):
        callback.setup(None, SimpleNamespace(net=SimpleCNN(image_size=64)), "fit")
    fused = GradCamLogger(layer="pool1*relu9")  # each layer of a product is checked
    with pytest.raises(UserError, match="^callbacks.gradcam.layer: gradcam layer 'relu9' is not a submodule"):
        fused.setup(None, SimpleNamespace(net=SimpleCNN(image_size=64)), "fit")
    for layer in ("relu3", "pool1*pool1*pool2"):  # real layers pass
        GradCamLogger(layer=layer).setup(None, SimpleNamespace(net=SimpleCNN(image_size=64)), "fit")


@pytest.mark.parametrize("precision, network_dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_maps_and_curves_run_the_network_as_validation_does(precision, network_dtype):
    """Under bf16-mixed the maps and the curves run the network in bf16, as validation does: the maps
    explain validation's predictions, in about half the time on a CPU with native bf16 (bench/RESULTS.md,
    session 42); the maps' own arithmetic stays fp32. Under 32-true, fp32 throughout."""
    from types import SimpleNamespace

    import lightning as L

    from catdog.callbacks.gradcam_logger import GradCamLogger
    from catdog.model.simple_cnn import SimpleCNN

    trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    net = SimpleCNN(image_size=32)
    seen: list[torch.dtype] = []
    net.conv2.register_forward_hook(lambda _m, _inp, out: seen.append(out.dtype))
    logged: dict[str, float] = {}
    module = SimpleNamespace(net=net, device=torch.device("cpu"), log=logged.__setitem__)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    callback = GradCamLogger(faithfulness_steps=4)
    callback.faithful = {"images": images}
    cams, probs = callback._cams(trainer, module, {"fixed": images})["fixed"]
    callback._faithfulness(trainer, module, cams)
    assert cams.dtype == probs.dtype == torch.float32 and cams.shape == (4, 32, 32)
    assert len(seen) > 2 and set(seen) == {network_dtype}  # the maps' pass and every curve's
    assert {"gradcam/deletion_auc", "gradcam/random/insertion_auc"} <= set(logged)
    assert not torch.is_autocast_enabled("cpu")  # and nothing of it stays on after
