"""What the Grad-CAM callback costs per epoch, as a share of the epoch (training and validation).

Runs src/train.py's training in-process for a few epochs and times the callback's per-epoch
work (``on_validation_epoch_end``, the maps and the hand-off to the writer thread) against
the wall time of each epoch, both averaged over the epochs after the first, so work done every
few epochs counts as spread over them, with and without the deletion/insertion curves (the maps
issue's cost target is for "probe scoring plus today's maps"); and the CPU time the writer thread
spends encoding and logging the pictures beside training, which the epoch's clock only partly sees.
Overrides pass through to the config:

    python bench/gradcam_cost.py data.root=outputs/data/synthetic-96px data.image_size=64 trainer.max_epochs=4
    python bench/gradcam_cost.py data.root=/data/train trainer.max_epochs=3   # real photos: no boxes, no scoring
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from catdog.callbacks.gradcam_logger import GradCamLogger  # noqa: E402
from helpers import compose_train  # noqa: E402
from train import train  # noqa: E402


class EpochClock(L.Callback):
    def __init__(self) -> None:
        self.epochs: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(time.perf_counter() - self._start)


def main() -> None:
    spent: list[float] = []
    curves: list[float] = []  # of each epoch's ``spent``, the deletion/insertion curves' (new with the maps issue)
    real, real_curves = GradCamLogger.on_validation_epoch_end, GradCamLogger._faithfulness
    in_curves = [0.0]

    def timed(self, trainer, pl_module):
        in_curves[0] = 0.0
        start = time.perf_counter()
        real(self, trainer, pl_module)
        if not trainer.sanity_checking:
            spent.append(time.perf_counter() - start)
            curves.append(in_curves[0])

    def timed_curves(self, *args):
        start = time.perf_counter()
        real_curves(self, *args)
        in_curves[0] += time.perf_counter() - start

    GradCamLogger.on_validation_epoch_end = timed
    GradCamLogger._faithfulness = timed_curves
    writer_cpu: list[float] = []  # CPU seconds of each job on the writer thread (PNG encoding, logging)
    real_submit = GradCamLogger._submit

    def counted(self, trainer, fn, *args):
        def run(*job_args):
            start = time.thread_time()
            try:
                return fn(*job_args)
            finally:
                writer_cpu.append(time.thread_time() - start)

        real_submit(self, trainer, run, *args)

    GradCamLogger._submit = counted
    event_cpu = _count_event_writing()
    clock = EpochClock()
    import catdog.resolvers  # noqa: F401  (resolvers)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_train(Path(tmp), ["trainer.enable_progress_bar=false", "test=false", *sys.argv[1:]])
        import train as train_module

        build = train_module.build_callbacks
        train_module.build_callbacks = lambda c: [*build(c), clock]
        train(cfg)
    # Means, not medians: work done every few epochs (the deletion/insertion curves) counts, spread over them.
    epoch = statistics.mean(clock.epochs[1:] or clock.epochs)
    cost = statistics.mean(spent[1:] or spent)
    print(f"epoch (training + validation, mean after the first): {epoch:.3f} s")
    print(f"Grad-CAM callback per epoch (mean after the first): {1000 * cost:.1f} ms = {100 * cost / epoch:.2f}% of an epoch"
          f" (the costliest epoch: {1000 * max(spent[1:] or spent):.0f} ms)")
    without = statistics.mean([s - c for s, c in zip(spent, curves)][1:] or spent)
    print(f"of which the deletion/insertion curves {1000 * (cost - without):.1f} ms; the rest (the maps issue's"
          f" \"probe scoring plus today's maps\") {1000 * without:.1f} ms = {100 * without / epoch:.2f}%")
    # The writer thread runs beside training, so its CPU time is an upper bound on what it takes
    # from the epoch (on 2 cores with both busy, about all of it).
    writer = sum(writer_cpu) / len(clock.epochs)
    print(f"writer thread CPU per epoch (mean over all epochs): {1000 * writer:.1f} ms = {100 * writer / epoch:.2f}%;"
          f" both together at most {100 * (cost + writer) / epoch:.2f}% of an epoch,"
          f" {100 * (without + writer) / epoch:.2f}% without the curves")
    events = event_cpu[0] / len(clock.epochs)
    print(f"TensorBoard's event-file thread CPU per epoch for the callback's records (checksums, writes):"
          f" {1000 * events:.1f} ms = {100 * events / epoch:.2f}%; all three together at most"
          f" {100 * (cost + writer + events) / epoch:.2f}% of an epoch, {100 * (without + writer + events) / epoch:.2f}%"
          f" without the curves")


def _count_event_writing() -> list[float]:
    """CPU seconds TensorBoard's own writer thread spends on the callback's records (tags gradcam/...):
    it checksums each record as it writes it, on a thread of its own, beside training."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer import record_writer

    spent = [0.0]
    real_write = record_writer.RecordWriter.write

    def write(self, data):
        start = time.thread_time()
        real_write(self, data)
        took = time.thread_time() - start
        values = Event.FromString(data).summary.value
        if values and values[0].tag.startswith("gradcam/"):
            spent[0] += took

    record_writer.RecordWriter.write = write
    return spent


if __name__ == "__main__":
    main()
