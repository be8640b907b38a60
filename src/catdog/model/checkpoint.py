"""Load checkpoints without running code from them, and rebuild the network they hold.

``torch.load(weights_only=True)`` unpickles tensors and plain data only, so a file carrying a
pickled object that would run code is refused. Lightning checkpoints written by train.py keep
the network's options as plain data under ``"catdog"``; a bare ``state_dict`` saved by the
original script (``torch.save(model.state_dict(), ...)``) loads too.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from catdog.errors import UserError
from catdog.model.resume import ANY_JOB, find_last
from catdog.model.simple_cnn import SimpleCNN

_NET_OPTIONS = {"image_size", "num_classes", "batch_norm", "head", "dropout", "hidden"}


def resolve_ckpt_path(ckpt_path: str | None, output_root: str | Path = "outputs", current: str | Path | None = None,
                      job: str | None = ANY_JOB) -> str | None:
    """A file path as given, checked; ``last``: the newest run's ``last.ckpt`` (``resume.find_last``:
    for a training run in ``current``, the newest other run, or the same ``job`` of the newest
    earlier sweep; by default the newest training run of any kind)."""
    if ckpt_path in (None, ""):
        return None
    if str(ckpt_path) == "last":
        return str(find_last(output_root, current, job))
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
        first = str(err).strip().splitlines()[-1] if str(err).strip() else ""
        raise UserError(
            f"refusing to load {path}: it holds pickled Python objects, not only weights and plain data, "
            f"and loading them could run code ({first[:160]})"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable PyTorch checkpoint ({str(err).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint or a state_dict")
    return ckpt


def _options_from_state_dict(state: dict) -> dict:
    """A bare state_dict: read the options off the weights' shapes."""
    try:
        hidden, fc1_in = state["fc1.weight"].shape
        num_classes = state["fc2.weight"].shape[0]
    except (KeyError, AttributeError, ValueError):
        raise UserError("the file holds neither a catdog checkpoint nor a SimpleCNN state_dict (no fc1/fc2 weights)") from None
    side = round((fc1_in / 128) ** 0.5)
    head = "gap" if fc1_in == 128 and "bn1.weight" in state else ("fc" if side * side * 128 == fc1_in else None)
    if head is None:
        raise UserError(f"fc1 takes {fc1_in} inputs, which is not 128 x side x side: not a SimpleCNN state_dict")
    return dict(image_size=side * 8 if head == "fc" else 224, num_classes=num_classes, hidden=hidden,
                batch_norm="bn1.weight" in state, head=head)


def net_from_checkpoint(ckpt: dict, expect_image_size: int | None = None) -> tuple[SimpleCNN, list[str]]:
    """The network with its weights, and its class names (cat, dog unless the checkpoint says)."""
    meta = ckpt.get("catdog")
    if meta is not None:
        options = {k: v for k, v in meta.get("net", {}).items() if k in _NET_OPTIONS}
        state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
        classes = list(meta.get("classes") or [])
    else:
        state = ckpt.get("state_dict", ckpt)
        options = _options_from_state_dict(state)
        classes = []
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
        raise UserError(
            f"the checkpoint's weights do not fit SimpleCNN({', '.join(f'{k}={v}' for k, v in options.items())}): "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    classes = classes or ["cat", "dog"][: options.get("num_classes", 2)]
    if len(classes) != net.fc2.out_features:
        raise UserError(f"the checkpoint names {len(classes)} classes but its network has {net.fc2.out_features} outputs")
    return net.eval(), classes
