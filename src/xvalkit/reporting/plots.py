"""PNG plots of the report (matplotlib, Agg backend, imported on first use).

- `<prefix>_run<R>.png` per instance: learning curves (loss and accuracy / MAE per epoch, training
  and validation: mean over folds with a ±1 std band; with early stopping, epoch e averages the folds
  that reached it) and, for classification, the test confusion matrix summed over folds;
- `<prefix>_<main metric>.png`: the main metric per instance, mean with std whiskers.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from . import significance as sig
from .tables import InstanceInfo, Pivot, ReportData, pivot, test_confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    atomic.write_bytes(path, buffer.getvalue())
    return path


def curve_stats(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) per epoch over ragged per-fold curves; std is 0 where one fold remains."""
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        grid[i, : len(c)] = c
    counts = np.sum(~np.isnan(grid), axis=0)
    mean = np.nanmean(grid, axis=0) if length else np.zeros(0)
    std = np.zeros(length)
    many = counts > 1
    if many.any():
        std[many] = np.nanstd(grid[:, many], axis=0, ddof=1)
    return np.arange(1, length + 1), mean, std


def instance_figure(plt, inst: InstanceInfo, task_type: str):
    from matplotlib.ticker import MaxNLocator

    histories = [f.get("history") or {} for f in inst.folds.values()]
    metric = "accuracy" if task_type == "classification" else "mae"
    confusion = test_confusion(inst)
    panels = 3 if confusion else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    for ax, name in zip(axes, ("loss", metric)):
        for key, label, colour in ((name, "training", "tab:blue"), (f"val_{name}", "validation", "tab:orange")):
            curves = [h[key] for h in histories if h.get(key)]
            if not curves:
                continue
            epochs, mean, std = curve_stats(curves)
            ax.plot(epochs, mean, color=colour, label=label)
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if confusion:
        total, labels, folds = confusion
        ax = axes[2]
        ax.imshow(total, cmap="Blues")
        for (r, c), v in np.ndenumerate(total):
            ax.text(c, r, str(int(v)), ha="center", va="center", fontsize=8,
                    color="white" if v > total.max() / 2 else "black")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        long = max(len(label) for label in labels) > 3
        ax.set_xticks(range(total.shape[1]), labels, rotation=45 if long else 0, ha="right" if long else "center",
                      fontsize=8)
        ax.set_yticks(range(total.shape[0]), labels, fontsize=8)
        ax.set_title(f"test, summed over {folds} folds", fontsize=9)
    comments = " / ".join(str(inst.params.get(k, "")) for k in ("comment_1", "comment_2"))
    fig.suptitle(f"instance {inst.id}: {comments} ({len(inst.folds)} folds, mean ± std)", fontsize=10)
    fig.tight_layout()
    return fig


def metric_bar_figure(plt, data: ReportData, summary: list[dict[str, Any]]):
    set_name, _, metric = data.main_metric.partition("_")
    rows = [r for r in summary if r.get(f"{set_name}_mean_{metric}") is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(rows) + 2), 3.2))
    means = [r[f"{set_name}_mean_{metric}"] for r in rows]
    stds = [r[f"{set_name}_std_{metric}"] or 0.0 for r in rows]
    colours = ["tab:green" if r["ID"] == data.best else "tab:olive" if r["significance"] == sig.SAME
               else "tab:gray" for r in rows]
    labels = [str(r["ID"]) if r["status"] == "done" else f"{r['ID']} ({r['folds_done']}/{r['num_folds']})" for r in rows]
    ax.bar(labels, means, yerr=stds, capsize=3, color=colours)
    ax.set_xlabel("instance (folds done where not all)")
    ax.set_ylabel(f"{set_name} {metric}")
    ax.set_title(f"{set_name} {metric} per instance (mean ± std over folds; green best, olive not "
                 "distinguishable from it)", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def pivot_figure(plt, data: ReportData, grid: Pivot):
    """Heatmap of the main metric over two swept parameters, each cell annotated mean ± std."""
    means = np.full((len(grid.rows), len(grid.columns)), np.nan)
    for (r, c), info in grid.cells.items():
        means[r, c] = info["mean"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(grid.columns) + 2), max(3.0, 0.7 * len(grid.rows) + 1.5)))
    # Better is always darker: reverse the colour map for lower-is-better metrics.
    image = ax.imshow(means, cmap="viridis" if data.main_higher_is_better else "viridis_r", aspect="auto")
    fig.colorbar(image, ax=ax, label=data.main_metric.replace("_", " "))
    sign = 1.0 if data.main_higher_is_better else -1.0
    best = max(grid.cells, key=lambda k: (sign * grid.cells[k]["mean"], -grid.cells[k]["ID"]))
    for (r, c), info in grid.cells.items():
        std = "" if info["std"] is None else f"\n± {info['std']:.3f}"
        ax.text(c, r, f"{info['mean']:.3f}{std}", ha="center", va="center", fontsize=8,
                fontweight="bold" if (r, c) == best else "normal",
                color="white" if sign * info["mean"] < sign * np.nanmean(means) else "black")  # dark: worse
    ax.set_xticks(range(len(grid.columns)), [repr(v) for v in grid.columns])
    ax.set_yticks(range(len(grid.rows)), [repr(v) for v in grid.rows])
    ax.set_xlabel(grid.column_parameter)
    ax.set_ylabel(grid.row_parameter)
    ax.set_title(f"{data.main_metric.replace('_', ' ')}: mean ± std over folds (bold: best)", fontsize=9)
    fig.tight_layout()
    return fig


def draw(data: ReportData, summary: list[dict[str, Any]], folder: Path, prefix: str) -> list[Path]:
    """Write every plot into `folder` (`summary`: the rows of tables.summary_rows); returns their paths."""
    plt = _pyplot()
    paths = []
    fig = metric_bar_figure(plt, data, summary)
    paths.append(_save(fig, folder / f"{prefix}_{data.main_metric}.png"))
    plt.close(fig)
    grid = pivot(data, summary)
    if grid is not None:
        fig = pivot_figure(plt, data, grid)
        paths.append(_save(fig, folder / f"{prefix}_pivot.png"))
        plt.close(fig)
    for inst in data.instances:
        if not inst.folds:
            continue
        fig = instance_figure(plt, inst, data.task_type)
        paths.append(_save(fig, folder / f"{prefix}_run{inst.id}.png"))
        plt.close(fig)
    return paths
