"""`make bench`: training throughput, side by side, on this machine.

(a) the original pipeline: ImageFolder + PIL transforms, DataLoader(num_workers=0), fp32, the
    original network;
(b) ours, end to end: `src/train.py` itself in a subprocess (decoded cache, augmentation on
    the device, the trainer preset this machine gets), its steady-state epoch throughput read
    from the run's TensorBoard log (`perf/train_images_per_s`, median of epochs after the first);
(c) the bare compute ceiling: the same network and optimizer as (b) (as conf/ composes them), at
    the same precision and memory format, training on a few batches that already sit on the
    device, with ours' heap setting (`keep_freed_memory`, catdog/allocator.py); the better of eager and
    compiled, each timed in rounds of repeats after a warm-up: one round before (b) and one after
    each of its epochs, while (b) waits (bench/epoch_gate.py). A small VM's speed drifts by 10-15%
    over minutes (bench/RESULTS.md, sessions 17 and 31), so a ceiling timed before and after (b)
    moved by that much from run to run; taking turns every few seconds puts the drift on both
    alike. ours / ceiling is the median, over (b)'s steady epochs, of each epoch's rate against
    the mean of the rounds on either side of it; its noise, that median's standard error.

(b) and (c) run twice: with the original network (`experiment=seed`'s model and precision on
this machine), the like-with-like comparison with (a), and with the default recipe's network,
whose cost per image is shown beside. Where (b) beats its ceiling by more than the share's
noise, the run is flagged instead of printed as a share: that ceiling bounds nothing.

It also times the cache build, reads (b)'s peak resident memory and accounts for it
(bench/memory_account.py). Prints a table and writes JSON (bench/out/throughput.json).

    python bench/throughput.py                        # 2 CPU cores: about 15 minutes
    python bench/throughput.py --networks default --images 25000 --epochs 40 --original-steps 40   # a GPU
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from catdog.allocator import apply_keep_freed_memory  # noqa: E402
from catdog.resolvers import CONF_DIR, register_resolvers  # noqa: E402
from catdog.model.image_input import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from catdog.data.cache import decode_all  # noqa: E402
from catdog.data.files import find_labelled  # noqa: E402
from catdog.model.simple_cnn import SimpleCNN  # noqa: E402
from kaggle_like import generate  # noqa: E402


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_steps(model, optimizer, batches, device, autocast_dtype, steps: int, warmup: int) -> float:
    """Images per second over ``steps`` training steps, after ``warmup`` untimed ones."""
    loss_fn = torch.nn.CrossEntropyLoss()
    it = iter(batches)
    start = None
    images = 0
    for i in range(warmup + steps):
        if i == warmup:
            sync_device(device)
            start, images = time.perf_counter(), 0
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        images += len(y)
    sync_device(device)
    return images / (time.perf_counter() - start)


def original_pipeline(root: Path, size: int, batch: int, steps: int, device, workers: int = 0) -> float:
    """The student's script: ImageFolder over class folders, PIL transforms per image, fp32."""
    from torchvision import datasets, transforms

    view = root.parent / (root.name + "-classfolders")  # ImageFolder needs cat/ and dog/: links, not copies
    if not view.exists():
        for f in sorted(root.glob("*.jpg")):
            (view / f.name.split(".")[0]).mkdir(parents=True, exist_ok=True)
            (view / f.name.split(".")[0] / f.name).symlink_to(f.resolve())
    transform = transforms.Compose([
        transforms.Resize((size, size)),
        transforms.RandomHorizontalFlip(),
        transforms.RandomRotation(10),
        transforms.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),  # the original did this here (SimpleCNN now also does it inside)
    ])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(view, transform), batch_size=batch, shuffle=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    model = SimpleCNN(size).to(device)
    return train_steps(model, torch.optim.Adam(model.parameters(), 1e-3), _forever(loader), device, None, steps, warmup=2)


def _forever(loader):
    while True:
        yield from loader


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/train.yaml as src/train.py composes it, with ``overrides``."""
    register_resolvers()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["data.root=unused", *overrides])


def build_net(cfg: DictConfig, size: int, compile_model: bool, device: torch.device) -> torch.nn.Module:
    """The network ``cfg`` names, channels-last on ``device``, compiled as the model would be."""
    net = instantiate(cfg.model.net, image_size=size).to(device).to(memory_format=torch.channels_last)
    if compile_model:
        net.compile()
    return net


def resident_batch(size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 2, (batch,), device=device)


def resident_batches(size: int, batch: int, device: torch.device, n: int = 4):
    """Endless batches cycling over ``n`` resident images, with labels drawn afresh each step.
    Not one fixed batch: the network memorises it within a few steps (its loss fell to 1e-3 in
    24 steps here), and a run whose gradients shrink towards zero is not the arithmetic of a
    real run (on x86, values near the bottom of the float range take a slow path). With fresh
    labels nothing can be memorised: the loss stays near log 2, as early in real training."""
    images = itertools.cycle([resident_batch(size, batch, device)[0] for _ in range(n)])
    while True:
        yield next(images), torch.randint(0, 2, (batch,), device=device)


def autocast_dtype(precision: str) -> torch.dtype | None:
    return torch.bfloat16 if precision.startswith("bf16") else (torch.float16 if precision.startswith("16") else None)


def half_spread(values: list[float], centre: float) -> float:
    """The noise every figure here reports: half the spread of ``values``, relative to ``centre``."""
    return (max(values) - min(values)) / 2 / centre


class Ceiling:
    """(c) for one network: the network and optimizer ``cfg`` names, at the same precision and memory
    format as ours, training on a few batches already on the device, eager and compiled. Each variant
    is built and warmed up once, then timed in rounds, so that the rounds can take turns with ours'
    epochs: the host's speed changes over minutes (bench/RESULTS.md, sessions 7, 17 and 31)."""

    def __init__(self, cfg: DictConfig, size: int, batch: int, device, precision: str,
                 variants: tuple[bool, ...] = (False, True), warmup: int | None = None) -> None:
        self.device, self.dtype = device, autocast_dtype(precision)
        self.batches = resident_batches(size, batch, device)
        self.runs, self.rounds = {}, {}
        for compiled in variants:
            net = build_net(cfg, size, compiled, device)
            optimizer = instantiate(cfg.optimizer)(params=net.parameters())
            untimed = warmup if warmup is not None else 3 if compiled else 2
            train_steps(net, optimizer, self.batches, device, self.dtype, 1, warmup=untimed)
            name = "compiled" if compiled else "eager"
            self.runs[name], self.rounds[name] = (net, optimizer), []

    def time(self, steps: int, seconds: float, min_repeats: int = 2) -> None:
        """One round per variant: timings of ``steps`` steps each, repeated for ``seconds`` (and at
        least ``min_repeats`` times), after one untimed step (the caches are cold again after ours)."""
        for name, (net, optimizer) in self.runs.items():
            train_steps(net, optimizer, self.batches, self.device, self.dtype, 1, warmup=0)
            rates, start = [], time.perf_counter()
            while len(rates) < min_repeats or time.perf_counter() - start < seconds:
                rates.append(train_steps(net, optimizer, self.batches, self.device, self.dtype, steps, warmup=0))
            self.rounds[name].append(rates)

    def result(self) -> dict:
        """images/s of the better variant (the median of all its repeats, every round together) and
        its noise: half the spread of its rounds' medians, relative to the median. The spread of
        single repeats is kept too (``repeat_noise``): it measures the host's wander over seconds,
        not how far the estimate would move in another run."""
        timings = {}
        for name, rounds in self.rounds.items():
            rates = [r for round_ in rounds for r in round_]
            medians = [statistics.median(r) for r in rounds]
            median = statistics.median(rates)
            timings[name] = {"median": median, "rates": rates, "round_medians": medians,
                             "noise": half_spread(medians, median), "repeat_noise": half_spread(rates, median)}
        best = max(timings, key=lambda k: timings[k]["median"])
        return {"images_per_s": timings[best]["median"], "best": best, "variants": timings,
                "noise": timings[best]["noise"], "repeat_noise": timings[best]["repeat_noise"]}


def verdict(ours_rates: list[float], round_medians: list[float]) -> dict:
    """ours / ceiling, epoch by epoch: each of ours' steady epochs against the mean of the ceiling's
    rounds just before and just after it (bench/epoch_gate.py), so that the host's drift over
    minutes falls on both alike. The share is the median of those; its noise, the median's
    standard error (1.25 sigma / sqrt(n)) relative to it: what is left is the host's wander within
    seconds, which no turn-taking cancels. Where ours exceeds the ceiling by more than that noise,
    a flag instead of a share."""
    shares = [ours_rates[e] / ((round_medians[e] + round_medians[e + 1]) / 2)
              for e in range(1, len(ours_rates)) if e + 1 < len(round_medians)]
    if not shares:
        return {}
    share = statistics.median(shares)
    noise = 1.2533 * statistics.stdev(shares) / math.sqrt(len(shares)) / share if len(shares) > 1 else 0.0
    return {"share": share, "noise": noise, "per_epoch": shares, "flag": share - 1 > noise}


def cache_build_rate(root: Path, size: int, cache_dir: Path) -> float:
    files = find_labelled(root)
    start = time.perf_counter()
    decode_all(files, size, cache_dir)
    return len(files.paths) / (time.perf_counter() - start)


def read_scalars(run_dir: Path, tags: tuple[str, ...]) -> dict[str, list[float]]:
    """Every value of each tag in a run's TensorBoard log, in order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[float]] = {}
    for events in sorted(run_dir.glob("tensorboard/events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags()["scalars"]:
                scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return scalars


def steady_rate(rates: list[float]) -> float:
    """The median epoch after the first (which pays for warm-up and compilation). Of an even
    count, the mean of the middle two: `make bench`'s two steady epochs would otherwise report
    the faster one, against the ceiling's median (session 21)."""
    return statistics.median(rates[1:] or rates)


def ours_end_to_end(root: Path, size: int, batch: int, epochs: int, out: Path, cache_dir: Path, extra: list[str],
                    limit_s: float | None = None, name: str = "ours", between_epochs=None) -> dict:
    """`src/train.py` in a subprocess: wall time, steady-state images/s, peak memory. A run still
    going after ``limit_s`` is stopped (SIGTERM: it saves and exits) and its finished epochs are
    reported, so a lease that is too short for every epoch still gets the steady rate.
    ``between_epochs(epoch)``, if given, runs after each training epoch while the run waits
    (bench/epoch_gate.py); that time counts in neither the wall time nor the limit."""
    run_dir = out / f"{name}-run"
    shutil.rmtree(run_dir, ignore_errors=True)  # an earlier run's TensorBoard log there would be read as this run's first epochs
    args = [sys.executable, str(ROOT / "src" / "train.py"), f"data.root={root}", f"data.image_size={size}",
            f"data.batch_size={batch}", f"trainer.max_epochs={epochs}", f"data.cache_dir={cache_dir}",
            f"hydra.run.dir={run_dir}", f"paths.output_root={out}", "test=false", "trainer.enable_progress_bar=false", *extra]
    env, gate = None, out / f"{name}-gate"
    if between_epochs:
        shutil.rmtree(gate, ignore_errors=True)
        gate.mkdir(parents=True)
        args += ["+callbacks.epoch_gate._target_=epoch_gate.EpochGate", f"+callbacks.epoch_gate.folder={gate}"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")]))}
    log = out / f"{name}-run.log"
    start, paused, epoch, stopped = time.perf_counter(), 0.0, 0, False
    with log.open("w") as log_file:  # a file, not a pipe: a full pipe would block the run while this loop polls
        proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        while proc.poll() is None:
            if not stopped and limit_s is not None and time.perf_counter() - start - paused > limit_s:
                proc.send_signal(signal.SIGTERM)
                stopped = True
            if between_epochs and (gate / f"done_{epoch}").exists():
                if not stopped:
                    pause = time.perf_counter()
                    between_epochs(epoch)
                    paused += time.perf_counter() - pause
                (gate / f"go_{epoch}").touch()
                epoch += 1
            time.sleep(0.01)
    wall = time.perf_counter() - start - paused
    if proc.returncode != 0 and not stopped:
        raise RuntimeError(f"train.py failed:\n{log.read_text()[-4000:]}")
    scalars = read_scalars(run_dir, ("perf/train_images_per_s", "perf/peak_rss_gib", "val/acc"))
    rates = scalars.get("perf/train_images_per_s", [])
    return {"wall_s": wall, "epochs": epochs, "epochs_done": len(rates), "stopped_at_limit": stopped,
            "images_per_s": steady_rate(rates) if rates else None, "per_epoch": rates,
            "peak_rss_gib": max(scalars.get("perf/peak_rss_gib", [float("nan")])),
            "final_val_acc": scalars.get("val/acc", [None])[-1]}


# The two networks (b) and (c) run: the original's, as experiment=seed composes it on this machine
# (its precision included), and the default recipe's.
NETWORKS = {"seed": ["experiment=seed"], "default": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="size of the Kaggle-shaped JPEG set")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=9, help="epochs of (b); the first is not counted")
    parser.add_argument("--original-steps", type=int, default=8)
    parser.add_argument("--original-workers", type=int, default=0)
    parser.add_argument("--ceiling-steps", type=int, default=3, help="timed steps per repeat of (c)")
    parser.add_argument("--ceiling-rounds", type=int, default=4, help="rounds of (c) without (b) (--skip ours); at least 2. With (b): one before it and one after each of its epochs")
    parser.add_argument("--ceiling-round-s", type=float, default=10.0, help="seconds of repeats per round and variant, about one epoch of (b)")
    parser.add_argument("--ceiling-variants", nargs="*", default=["eager", "compiled"], choices=["eager", "compiled"])
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS), choices=list(NETWORKS))
    parser.add_argument("--ours-limit", type=float, default=None, help="stop (b) after this many seconds, reporting its finished epochs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--skip", nargs="*", default=[], choices=["original", "ours", "ceiling", "cache", "memory"])
    parser.add_argument("overrides", nargs="*", help="extra overrides for (b) and (c), e.g. trainer.precision=32-true")
    args = parser.parse_args()
    if args.ceiling_rounds < 2:
        parser.error("--ceiling-rounds must be at least 2: the ceiling's noise is the spread of its rounds")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    root = generate(args.out / f"kaggle-like-{args.images}", args.images)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result = {"machine": {"device": torch.cuda.get_device_name() if device.type == "cuda" else cpu_model(),
                          "cpus": os.cpu_count(), "torch": torch.__version__},
              "images": args.images, "size": args.size, "batch": args.batch, "original_workers": args.original_workers}

    if "cache" not in args.skip:
        result["cache_build_images_per_s"] = cache_build_rate(root, args.size, args.out / f"cache-{stamp}-build")
        print(f"cache build: {result['cache_build_images_per_s']:.0f} images/s", flush=True)
    if "original" not in args.skip:
        result["original_images_per_s"] = original_pipeline(root, args.size, args.batch, args.original_steps, device, args.original_workers)
        print(f"(a) original: {result['original_images_per_s']:.1f} images/s", flush=True)
    for name in args.networks:
        overrides = [*NETWORKS[name], *args.overrides]
        cfg = compose_config(overrides)  # precision and compile as train.py would resolve them, presets included
        apply_keep_freed_memory(cfg.get("keep_freed_memory"))  # after (a), the original's heap: (c)'s is ours'
        net = result[name] = {"precision": str(cfg.trainer.precision), "compile": bool(cfg.model.compile),
                              "batch_norm": bool(cfg.model.net.batch_norm)}
        ceiling = None
        if "ceiling" not in args.skip:
            ceiling = Ceiling(cfg, args.size, args.batch, device, net["precision"],
                              tuple(v == "compiled" for v in args.ceiling_variants))
            # With ours: one round before it, then one after each of its epochs (see verdict).
            for _ in range(args.ceiling_rounds if "ours" in args.skip else 1):
                ceiling.time(args.ceiling_steps, args.ceiling_round_s)
        if "ours" not in args.skip:
            # A cache of its own: the run's wall time includes building it, as a first run's does.
            between = (lambda epoch: ceiling.time(args.ceiling_steps, args.ceiling_round_s)) if ceiling else None
            net["ours"] = ours_end_to_end(root, args.size, args.batch, args.epochs, args.out,
                                          args.out / f"cache-{stamp}-{name}", overrides, args.ours_limit, name, between)
            rate = net["ours"]["images_per_s"]
            print(f"(b) {name} ours: {rate:.1f} images/s" if rate else f"(b) {name}: no epoch finished within --ours-limit", flush=True)
        if ceiling:
            net["ceiling"] = ceiling.result()
            del ceiling  # its networks and optimizer states, before the next network's
            print(f"(c) {name} ceiling: {net['ceiling']['images_per_s']:.1f} images/s ({net['ceiling']['best']}, "
                  f"rounds apart by +-{100 * net['ceiling']['noise']:.1f}%, single repeats +-{100 * net['ceiling']['repeat_noise']:.1f}%; round medians "
                  f"{[round(m, 1) for m in net['ceiling']['variants'][net['ceiling']['best']]['round_medians']]})", flush=True)
        if net.get("ours", {}).get("images_per_s") and "ceiling" in net:
            best = net["ceiling"]["variants"][net["ceiling"]["best"]]
            net["verdict"] = verdict(net["ours"]["per_epoch"], best["round_medians"])
        if "memory" not in args.skip and device.type == "cpu":
            net["memory"] = memory_account(overrides, args.size, args.batch, args.out / f"memory-{name}.json")
    (args.out / "throughput.json").write_text(json.dumps(result, indent=2))
    print_table(result)


def cpu_model() -> str:
    """The CPU's name and whether it has native bf16 (which decides the CPU preset's precision)."""
    from catdog.resolvers import cpu_has_bf16

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.processor() or platform.machine())
    return f"{name}, {'native bf16' if cpu_has_bf16() else 'no native bf16'}"


def memory_account(overrides: list[str], size: int, batch: int, out: Path) -> dict:
    """bench/memory_account.py in a fresh process: where the peak resident memory goes."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "memory_account.py"), "--size", str(size), "--batch",
                    str(batch), "--json", str(out), *overrides], check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def print_table(r: dict) -> None:
    orig = r.get("original_images_per_s")
    print(f"\n{r['machine']['device']} ({r['machine']['cpus']} CPUs), {r['size']} px, batch {r['batch']}, "
          f"{r['images']} Kaggle-shaped JPEGs")
    print("| pipeline | network | precision | images/s | ms per image |\n|---|---|---|---|---|")
    if orig:
        print(f"| (a) original: ImageFolder + PIL, {r['original_workers']} workers | original | fp32 | {orig:.1f} "
              f"| {1000 / orig:.0f} |")
    for name in NETWORKS:
        net = r.get(name)
        if not net:
            continue
        label = "original (experiment=seed)" if name == "seed" else "default recipe (BatchNorm)"
        for row, key in (("(b) ours, end to end (src/train.py)", "ours"), ("(c) bare compute ceiling", "ceiling")):
            rate = net.get(key, {}).get("images_per_s")
            if rate:
                extra = f", {net['ceiling']['best']}" if key == "ceiling" else ""
                print(f"| {row} | {label} | {net['precision']}{extra} | {rate:.1f} | {1000 / rate:.0f} |")
    seed, default = r.get("seed", {}), r.get("default", {})
    if orig and seed.get("ours", {}).get("images_per_s"):
        print(f"ours / original, the same network: {seed['ours']['images_per_s'] / orig:.2f}x")
    if seed.get("ours", {}).get("images_per_s") and default.get("ours", {}).get("images_per_s"):
        print(f"the default recipe's network costs {seed['ours']['images_per_s'] / default['ours']['images_per_s']:.2f}x "
              "the original's per image")
    for name in NETWORKS:
        v = r.get(name, {}).get("verdict")
        if v and v["flag"]:
            print(f"FLAG ({name}): ours runs {100 * (v['share'] - 1):.0f}% above its ceiling, more than the noise "
                  f"(+-{100 * v['noise']:.1f}%): this ceiling does not bound ours, so no share is reported")
        elif v:
            print(f"ours / ceiling ({name}): {100 * v['share']:.0f}% (noise +-{100 * v['noise']:.1f}%; epoch by epoch, "
                  f"against the ceiling's rounds on either side: {[round(100 * x) for x in v['per_epoch']]}%)")
    if "cache_build_images_per_s" in r:
        print(f"cache build: {r['cache_build_images_per_s']:.0f} images/s")
    for name in NETWORKS:
        o = r.get(name, {}).get("ours")
        if o:
            run = f"stopped at the limit after {o['epochs_done']} of {o['epochs']} epochs" if o["stopped_at_limit"] else f"all {o['epochs']} epochs"
            print(f"ours ({name}): {o['wall_s']:.1f} s wall ({run}), peak RSS {o['peak_rss_gib']:.2f} GiB")
        m = r.get(name, {}).get("memory")
        if m:
            from memory_account import print_account  # bench/ is on sys.path (above)

            print(f"where it goes ({name}, a bare training step in its own process):")
            print_account(m)


if __name__ == "__main__":
    main()
