"""TensorBoard's event files checksummed in C.

Without TensorFlow installed, TensorBoard's writer (which torch and Lightning use) computes each
record's CRC-32C in pure Python (``tensorboard.compat.tensorflow_stub``), about 115 ns a byte, on its
own thread beside training: 26 ms for one 230 KB Grad-CAM grid at 64 px, 240 ms for a 2 MB one at
224 px, holding the GIL meanwhile. At 64 px on 2 CPU cores the callback's records took 2.1% of an
epoch that way (bench/RESULTS.md, session 47). ``google-crc32c`` (a dependency) computes the same
checksum in C, with the CPU's CRC32C instructions where it has them: 0.1 ms for 2 MB.
"""

from __future__ import annotations

try:
    import google_crc32c
except ImportError:  # a Python its wheel does not fit (the lent GPU machines): TensorBoard's own checksums
    google_crc32c = None


def use_fast_checksums() -> bool:
    """Make TensorBoard's record writer checksum with ``google-crc32c``; False where that package is
    missing or has no C implementation here (or TensorBoard writes records another way), leaving
    TensorBoard's own."""
    from tensorboard.summary.writer import record_writer

    if google_crc32c is None or google_crc32c.implementation != "c" or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = masked_crc32c  # looked up at each write, so later writers use it too
    return True


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``, as TensorBoard's ``masked_crc32c`` computes it."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
