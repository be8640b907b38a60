"""Load checkpoints without running code from them, and rebuild the network they hold.

``torch.load(weights_only=True)`` unpickles tensors and plain data only, so a file carrying a
pickled object that would run code is refused. Lightning checkpoints written by train.py keep
the network's options (class names, input mean and std included) as plain data under
``"catdog"``; older ones kept the class names and the mean and std beside them, and a bare
``state_dict`` saved by the original script (``torch.save(model.state_dict(), ...)``) has
none of them: both load too.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from catdog.errors import UserError
from catdog.model.resume import ANY_JOB, find_last
from catdog.model.simple_cnn import SimpleCNN

_NET_OPTIONS = {"image_size", "classes", "batch_norm", "head", "dropout", "hidden", "channels", "pool", "mean", "std"}
DEFAULT_CLASSES = ("cat", "dog")  # Kaggle's, in label order: what a file that names none was trained on


def resolve_ckpt_path(ckpt_path: str | None, output_root: str | Path = "outputs", current: str | Path | None = None,
                      job: str | None = ANY_JOB) -> str | None:
    """A file path as given, checked; ``last``: the newest run's ``last.ckpt`` (``resume.find_last``:
    for a training run in ``current``, the newest other run, or the same ``job`` of the newest
    earlier sweep; by default the newest training run of any kind)."""
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        return str(find_last(output_root, current, job))
    if Path(ckpt_path).is_dir():
        raise UserError(f"ckpt_path={ckpt_path} is a folder: give the path of a .ckpt file in it (or ckpt_path=last)")
    if not Path(ckpt_path).is_file():
        raise UserError(f"ckpt_path={ckpt_path} does not exist: give the path of a .ckpt file (or ckpt_path=last)")
    return str(ckpt_path)


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The checkpoint's contents, unpickling nothing but tensors and plain data (``mmap``: the
    tensors stay on disk, memory-mapped, until read)."""
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not (mmap and "mmap can only be used" in str(err)):
                raise
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the pre-1.6 format cannot be mapped
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError as err:
        blocked = [line for line in str(err).splitlines() if "GLOBAL" in line]  # a callable the file names: code
        if not blocked:  # not a pickle at all (a photo, a text file)
            raise _not_a_checkpoint(path) from None
        raise UserError(
            f"refusing to load {path}: it holds pickled Python objects, not only weights and plain data, "
            f"and loading them could run code ({blocked[0].strip()[:160]})"
        ) from None
    except KeyError:  # the legacy (pre-zip) reader, on a short file that is no pickle
        raise _not_a_checkpoint(path) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        why = "damaged or cut short" if "corrupted" in str(err) else (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({why}): copy it again or give another .ckpt") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint or a state_dict")
    return ckpt


def _not_a_checkpoint(path: str | Path) -> UserError:
    return UserError(f"{path} is not a PyTorch checkpoint: give a .ckpt file that train.py saved")


def _options_from_state_dict(state: dict) -> dict:
    """A bare state_dict: read the options off the weights' shapes."""
    try:
        hidden, fc1_in = state["fc1.weight"].shape
        num_classes = state["fc2.weight"].shape[0]
        channels = [state[f"conv{i}.weight"].shape[0] for i in (1, 2, 3)]
    except (KeyError, AttributeError, ValueError):
        raise UserError("the file holds neither a catdog checkpoint nor a SimpleCNN state_dict (no conv1-3, fc1 or fc2 weights)") from None
    c3 = channels[2]
    side = round((fc1_in / c3) ** 0.5)
    head = "gap" if fc1_in == c3 and "bn1.weight" in state else ("fc" if side * side * c3 == fc1_in else None)
    if head is None:
        raise UserError(f"fc1 takes {fc1_in} inputs, which is not {c3} x side x side: not a SimpleCNN state_dict")
    return dict(image_size=side * 8 if head == "fc" else 224, classes=_default_classes(num_classes), hidden=hidden,
                batch_norm="bn1.weight" in state, head=head, channels=channels)


def _default_classes(n: int) -> list[str]:
    return list(DEFAULT_CLASSES) if n == len(DEFAULT_CLASSES) else [f"class_{i}" for i in range(n)]


def _stored_options(ckpt: dict) -> dict:
    """The network options of a train.py checkpoint, today's or an older one's: those kept the
    class names beside the options and the mean and std in the DataModule's state."""
    meta = ckpt["catdog"]
    options = dict(meta.get("net") or {})
    if "classes" not in options:
        options["classes"] = list(meta.get("classes") or _default_classes(int(options.pop("num_classes", 2))))
    options.pop("num_classes", None)
    stats = ckpt.get("CatDogDataModule") if isinstance(ckpt.get("CatDogDataModule"), dict) else {}
    for key in ("mean", "std"):
        if key not in options and stats.get(key):
            options[key] = [float(v) for v in stats[key]]
    return {k: v for k, v in options.items() if k in _NET_OPTIONS}


def stored_temperature(ckpt: dict) -> float:
    """The temperature fitted on validation (model.calibrate) kept beside the weights; 1 where none
    was fitted, or the file predates calibration."""
    return float((ckpt.get("catdog") or {}).get("temperature", 1.0))


def net_from_checkpoint(ckpt: dict, expect_image_size: int | None = None) -> SimpleCNN:
    """The network with its weights, in eval mode; its ``classes`` name its outputs."""
    meta = ckpt.get("catdog")
    if meta is not None:
        net_class = meta.get("net_class", "catdog.model.simple_cnn.SimpleCNN")
        if net_class != "catdog.model.simple_cnn.SimpleCNN":
            raise UserError(f"the checkpoint holds a {net_class} network: eval, predict and cam rebuild SimpleCNN "
                            "only (a class named in a file is never imported: that could run code)")
        options = _stored_options(ckpt)
        state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    else:
        state = ckpt.get("state_dict", ckpt)
        options = _options_from_state_dict(state)
    if expect_image_size is not None and options.get("image_size", expect_image_size) != expect_image_size and options.get("head") != "gap":
        raise UserError(
            f"the checkpoint was trained at data.image_size={options['image_size']}, not {expect_image_size}: "
            f"add data.image_size={options['image_size']} (its fc1 layer only fits that size)"
        )
    net = SimpleCNN(**options)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes that disagree with the options stored beside them
        raise UserError(f"the checkpoint's weights do not fit its own network options: {str(err).splitlines()[-1].strip()}") from None
    if missing or unexpected:
        shown = ", ".join(f"{k}={v}" for k, v in options.items() if k not in ("mean", "std"))
        raise UserError(f"the checkpoint's weights do not fit SimpleCNN({shown}): "
                        f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net.eval()
