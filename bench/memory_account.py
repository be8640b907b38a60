"""Where a training process's resident memory goes: one network, one image size and batch, the
precision and memory format ours uses, in a fresh process (peak RSS only ever grows, so each
account needs its own). `make bench` runs it beside ours' measured peak; alone:

    python bench/memory_account.py --size 224 --batch 64                 # the default network
    python bench/memory_account.py --size 224 --batch 64 experiment=seed  # the original one

Measured, not estimated: the resident set after importing the libraries; the bytes of the
parameters, their gradients and the optimizer's state (summed over the tensors after one step);
the activations autograd saves for the backward pass (a saved-tensors hook sums each stored
tensor once); and the peak after a few steps. What is left over is the allocator's and the
convolution library's working memory. It also measures what two cuts would save: bf16
activations (what autocast does where the CPU has native bf16) and the GAP head (no fc1).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import lightning  # noqa: F401  (imported before the first reading: ours pays for it too)
import torch
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from throughput import autocast_dtype, build_net, compose_config, resident_batch  # noqa: E402
from catdog.allocator import apply_keep_freed_memory  # noqa: E402  (src/ is on the path: throughput put it there)

GIB = 2**30


def rss_now() -> float:
    """Resident bytes now (/proc/self/statm counts pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def saved_activation_bytes(net: torch.nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> int:
    """Bytes autograd keeps for the backward pass of one forward pass; each storage counted once,
    and the parameters (also saved, by reference) left out."""
    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        net(x).sum()
    return sum(seen.values())


def account(overrides: list[str], size: int, batch: int, steps: int) -> dict:
    base = rss_now()
    cfg = compose_config(overrides)
    apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # as train.py: the heap keeps what a step frees (catdog/allocator.py)
    dtype = autocast_dtype(str(cfg.trainer.precision))
    device = torch.device("cpu")
    net = build_net(cfg, size, False, device)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    x, y = resident_batch(size, batch, device)
    activations = saved_activation_bytes(net, x, dtype)
    for _ in range(steps):
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated, as at the peak of a step
    params = tensor_bytes(net.parameters())
    grads = tensor_bytes(p.grad for p in net.parameters() if p.grad is not None)
    state = tensor_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    peak = peak_rss()
    parts = {"libraries (RSS after import)": base, "input batch": tensor_bytes([x]), "parameters": params,
             "gradients": grads, "optimizer state": state, "activations saved for backward": activations}
    parts["allocator and convolution workspace (the rest)"] = peak - sum(parts.values())
    fc1 = getattr(net, "fc1", None)
    fc1_params = tensor_bytes(fc1.parameters()) if fc1 is not None else 0
    gap = build_net(compose_config([*overrides, "model.net.head=gap"]), size, False, device)
    cuts = {
        "bf16 activations (autocast where bf16 is native)":
            activations - saved_activation_bytes(net, x, torch.bfloat16) if dtype is None else 0,
        "GAP head instead of flatten -> fc1 (parameters, gradients, Adam's two states)":
            (params - tensor_bytes(gap.parameters())) * (2 + (state / params if params else 0)),
    }
    return {"overrides": overrides, "size": size, "batch": batch, "precision": str(cfg.trainer.precision),
            "peak_rss_gib": peak / GIB, "parts_gib": {k: v / GIB for k, v in parts.items()},
            "fc1_parameters_gib": fc1_params / GIB, "cuts_gib": {k: v / GIB for k, v in cuts.items()}}


def print_account(a: dict) -> None:
    print(f"peak resident memory {a['peak_rss_gib']:.2f} GiB ({a['size']} px, batch {a['batch']}, {a['precision']}):")
    for name, gib in a["parts_gib"].items():
        print(f"  {name}: {gib:.2f} GiB")
    for name, gib in a["cuts_gib"].items():
        print(f"  would save: {name}: {gib:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the account here")
    parser.add_argument("overrides", nargs="*", help="as for src/train.py, e.g. experiment=seed")
    args = parser.parse_args()
    result = account(args.overrides, args.size, args.batch, args.steps)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print_account(result)


if __name__ == "__main__":
    main()
