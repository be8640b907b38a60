"""Test-only callbacks: faults a training process brings on itself at a chosen moment (a signal,
a SIGKILL, a full disk, a slow cache build)."""

import errno
import io
import os
import signal
import sys
import threading
import time

import lightning as L


class SignalSelf(L.Callback):
    def __init__(self, epoch: int, batch: int, name: str = "SIGTERM") -> None:
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)


class PoisonWeights(L.Callback):
    """Fill conv1 with NaN before a chosen batch: the loss turns non-finite there."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            pl_module.net.conv1.weight.data.fill_(float("nan"))


def _die() -> None:
    """SIGKILL the run and any worker it started (the test starts each run in its own session)."""
    os.killpg(os.getpgid(0), signal.SIGKILL)


class KillAt(L.Callback):
    """SIGKILL this run at the k-th event of one phase, counted in this process:

    - ``cache``: k=1 before decoding the images into the cache, k=2 after (not yet committed);
    - ``train``, ``val``: after a training or validation batch (the sanity check's included);
    - ``save``: partway through writing a checkpoint file;
    - ``gradcam``: partway through writing a Grad-CAM picture (on the writer thread);
    - ``timer``: ``seconds`` after the callback is made, wherever the run then is.
    """

    def __init__(self, phase: str, k: int = 1, seconds: float = 0.0) -> None:
        self.phase, self.k, self.count = phase, k, 0
        if phase == "cache":
            self._patch_cache()
        elif phase == "save":
            self._patch_torch_save()
        elif phase == "gradcam":
            self._patch_save_picture()
        elif phase == "timer":
            threading.Thread(target=lambda: (time.sleep(seconds), _die()), daemon=True).start()

    def _tick(self) -> bool:
        self.count += 1
        return self.count == self.k

    def _patch_cache(self) -> None:
        import catdog.data.cache as cache

        real = cache._decode_all

        def decode_all(*args, **kwargs):
            if self.k == 1:
                _die()
            result = real(*args, **kwargs)
            _die()
            return result

        cache._decode_all = decode_all

    def _patch_torch_save(self) -> None:
        import torch

        real = torch.save

        def save(obj, f, *args, **kwargs):
            if not self._tick():
                return real(obj, f, *args, **kwargs)
            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            _die()

        torch.save = save

    def _patch_save_picture(self) -> None:
        import catdog.callbacks.gradcam_logger as gradcam

        real = gradcam.save_picture

        def save_picture(image, path):
            if not self._tick():
                return real(image, path)
            with open(path, "wb") as f:
                f.write(b"\xff\xd8\xff")  # a picture cut short
                f.flush()
            _die()

        gradcam.save_picture = save_picture

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.phase == "train" and self._tick():
            _die()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.phase == "val" and self._tick():
            _die()


class FullDisk(L.Callback):
    """The disk fills up while a checkpoint is written: the write of ``last.ckpt`` after
    ``after`` good ones fails with ENOSPC partway, as a full disk does."""

    def __init__(self, after: int = 1, room: int = 4096) -> None:
        import catdog.atomic_write as atomic_write

        self.left = after

        def limited_open(path, mode="r", *args, **kwargs):
            f = open(path, mode, *args, **kwargs)
            if "w" not in mode or ".last.ckpt.tmp" not in str(path):
                return f
            self.left -= 1
            return f if self.left >= 0 else _FullFile(f, room)

        atomic_write.open = limited_open  # the module's name `open`, ahead of the builtin


class _FullFile:
    def __init__(self, f, room: int) -> None:
        self.f, self.room = f, room

    def write(self, data) -> int:
        if len(data) > self.room:
            self.f.write(bytes(data[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


class SlowCacheBuild(L.Callback):
    """Building the decoded cache takes ``seconds`` longer, and says that it builds: so a second
    run started at the same moment finds the lock taken."""

    def __init__(self, seconds: float = 4.0) -> None:
        import catdog.data.cache as cache

        real = cache._decode_all

        def decode_all(*args, **kwargs):
            print("TEST: building the cache", file=sys.stderr, flush=True)
            time.sleep(seconds)
            return real(*args, **kwargs)

        cache._decode_all = decode_all
