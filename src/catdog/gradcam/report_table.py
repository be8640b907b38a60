"""The map report's table (CSV and Markdown) and its picture: one bar per method x layer for
each score, with the centred and uniform maps' scores drawn across as the bar to clear."""

from __future__ import annotations

import csv
import math
from pathlib import Path

COLUMNS = ("energy_on_animal", "auroc_on_animal", "max_on_animal", "pointing_on_animal", "pointing_on_head",
           "deletion_auc", "insertion_auc")
BETTER = {"deletion_auc": "lower"}  # every other score: higher is better
REFERENCES = ("centre", "uniform")


def _fmt(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "layer", *COLUMNS])
        writer.writerows([r["method"], r["layer"], *(_fmt(r.get(c)) for c in COLUMNS)] for r in rows)


def write_markdown(rows: list[dict], path: Path, header: list[str]) -> None:
    names = [f"{c} ({BETTER.get(c, 'higher')} is better)" for c in COLUMNS]
    lines = [*header, "", "| method | layer | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(COLUMNS)]
    lines += [f"| {r['method']} | {r['layer']} | " + " | ".join(_fmt(r.get(c)) for c in COLUMNS) + " |" for r in rows]
    path.write_text("\n".join(lines) + "\n")


def write_picture(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = [r for r in rows if r["method"] not in REFERENCES]
    refs = {r["method"]: r for r in rows if r["method"] in REFERENCES}
    shown = [c for c in COLUMNS if any(_fmt(r.get(c)) for r in rows)]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(3.2 * max(len(shown), 1), 0.35 * len(maps) + 1.6),
                             sharey=True, squeeze=False)
    labels = [f"{r['method']} {r['layer']}" for r in maps]
    for ax, column in zip(axes[0], shown):
        values = [r.get(column) if _fmt(r.get(column)) else 0.0 for r in maps]
        ax.barh(range(len(maps)), values, color="tab:blue")
        for ref, style in zip(REFERENCES, ("--", ":")):
            value = refs.get(ref, {}).get(column)
            if _fmt(value):
                ax.axvline(value, color="black", linestyle=style, label=f"{ref} {value:.2f}")
        ax.set_title(f"{column}\n({BETTER.get(column, 'higher')} is better)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_yticks(range(len(maps)), labels, fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
