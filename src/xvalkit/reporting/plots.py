"""PNG plots of the report (matplotlib, Agg backend, imported on first use).

- `<prefix>_run<R>.png` per instance: learning curves (loss and accuracy / MAE per epoch, training
  and validation: mean over folds with a ±1 std band, clipped to the metric's range; a fold stopped
  early keeps its last value to the longest fold's end, so every epoch averages all folds, and the
  caption says which folds stopped when) and, for classification, the test confusion matrix summed
  over folds;
- `<prefix>_<main metric>.png`: the main metric per instance, mean with std whiskers (clipped to the
  metric's range), coloured as the workbook colours its cells.

From BEST_PLOTTED instances on, instance plots are drawn for the BEST_PLOTTED best by the selection
metric (the workbook's chooser: a validation metric by default) and for failed or diverged
instances only: nobody reads a thousand learning curves, and drawing them (about 0.1 s of CPU each)
was most of a large sweep's report. `xval report --plots all` draws every one.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import atomic
from ..metrics import HIGHER_IS_BETTER
from . import significance as sig
from .drawer import BEST_PLOTTED
from .tables import InstanceInfo, Pivot, ReportData, metric_text, pivot, test_confusion


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


DPI = 90


SIGNATURE_KEY = "xvalkit-plot"  # the PNG text chunk holding an instance plot's signature
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every complete PNG


def _save(fig, path: Path, tight: bool = True, signature: str | None = None) -> Path:
    buffer = io.BytesIO()
    # zlib level 1 instead of 6: the same pixels, files about 12 % larger, encoded in half the time
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None,
                pil_kwargs={"compress_level": 1}, metadata={SIGNATURE_KEY: signature} if signature else None)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def drawn_signature(path: Path) -> str | None:
    """The signature an instance plot was drawn with (written into the PNG itself, so that whoever
    draws it, the report or the drawer during a run, a plot and its signature never disagree), or
    None for a missing, truncated or unsigned file: it is then drawn again."""
    tag = b"tEXt" + SIGNATURE_KEY.encode() + b"\x00"
    try:
        with open(path, "rb") as handle:
            head = handle.read(512)
            handle.seek(-len(_PNG_END), os.SEEK_END)
            if handle.read() != _PNG_END:
                return None
    except OSError:  # missing, or shorter than its last chunk
        return None
    start = head.find(tag)
    return head[start + len(tag): start + len(tag) + 16].decode("ascii", "replace") if start >= 0 else None


def curve_stats(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(epochs, mean, std) per epoch over per-fold curves of different lengths (early stopping).

    A fold that stopped early keeps its last value up to the longest fold's end: each epoch then
    averages every fold. Averaging only the folds still training made a curve jump where the good
    folds stopped. std is 0 where fewer than two folds have a value; an epoch no fold has a finite
    value for (diverged) is NaN, a gap in the line.
    """
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        if len(c):
            grid[i, : len(c)] = c
            grid[i, len(c):] = c[-1]
    finite = np.isfinite(grid)
    counts = finite.sum(axis=0)
    values = np.where(finite, grid, 0.0)
    mean = np.full(length, np.nan)
    some = counts > 0
    mean[some] = values[:, some].sum(axis=0) / counts[some]
    std = np.zeros(length)
    many = counts > 1
    if many.any():  # numpy's nan functions warn about (and return NaN for) the columns left out here
        deviations = np.where(finite[:, many], grid[:, many] - mean[many], 0.0)
        std[many] = np.sqrt((deviations ** 2).sum(axis=0) / (counts[many] - 1))
    return np.arange(1, length + 1), mean, std


def stopped_early(curves: list[list[float]]) -> list[int]:
    """The last epoch of each fold that stopped before the longest one, in order."""
    longest = max((len(c) for c in curves), default=0)
    return sorted(len(c) for c in curves if 0 < len(c) < longest)


# Where a metric's values can lie: mean ± std bands and whiskers are clipped to it (an accuracy
# band above 1.0 shows values no fold can have). Loss is unbounded: a custom loss may be negative.
METRIC_RANGES = {"accuracy": (0.0, 1.0), "acc": (0.0, 1.0), "ua": (0.0, 1.0), "f1": (0.0, 1.0),
                 "precision": (0.0, 1.0), "recall": (0.0, 1.0), "mae": (0.0, np.inf), "rmse": (0.0, np.inf),
                 "r2": (-np.inf, 1.0)}


def clipped_band(metric: str, mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of mean ± std within `metric`'s range."""
    low, high = METRIC_RANGES.get(metric, (-np.inf, np.inf))
    return np.clip(mean - std, low, high), np.clip(mean + std, low, high)


def early_stopping_caption(curves_of_folds: list[list[float]]) -> str:
    """Says how the curves treat folds that stopped early (empty when none did)."""
    stops = stopped_early(curves_of_folds)
    if not stops:
        return ""
    if len(stops) == 1:
        folds, at = "1 fold", f"epoch {stops[0]}"
    else:
        folds, at = f"{len(stops)} folds", f"epochs {', '.join(str(e) for e in stops[:-1])} and {stops[-1]}"
    return (f"{folds} stopped early (after {at}): each keeps its last value to the end, "
            f"so every epoch averages all {len(curves_of_folds)} folds")


class InstancePlotter:
    """Instance plots drawn into figures built once per layout and updated in place.

    Building axes, ticks, legends and texts was most of an instance plot's time. `ax.clear()` builds
    them all again. Here each layout (panel count, confusion matrix labels) gets its figure once; an
    instance then only sets its curves, bands, matrix and texts (`set_data`, `set_text`). The margins
    are fixed, so no tight layout is fitted per plot.
    """

    def __init__(self, plt, task_type: str):
        self.plt = plt
        self.metric = "accuracy" if task_type == "classification" else "mae"
        self.layouts: dict[tuple, dict[str, Any]] = {}

    def _layout(self, key: tuple) -> dict[str, Any]:
        from matplotlib.ticker import MaxNLocator

        panels, labels = key
        fig, axes = self.plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), dpi=DPI)
        fig.subplots_adjust(left=0.35 / panels, right=0.98, bottom=0.2, top=0.84, wspace=0.32)
        layout: dict[str, Any] = {"fig": fig, "title": fig.text(0.5, 0.95, "", ha="center", va="center", fontsize=10),
                                  "caption": fig.text(0.5, 0.895, "", ha="center", va="center", fontsize=8,
                                                      color="0.3"),
                                  "panels": [], "legends": {}}
        for ax, name in zip(axes, ("loss", self.metric)):
            curves = []  # (history key, line, band): training, then validation
            for key_name, label, colour in ((name, "training", "tab:blue"), (f"val_{name}", "validation", "tab:orange")):
                line, = ax.plot([], [], color=colour, label=label)
                band = ax.fill_between([0.0], [0.0], [0.0], color=colour, alpha=0.2, linewidth=0)
                curves.append((key_name, line, band))
            layout["panels"].append((ax, name, curves))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        if labels is not None:
            ax = axes[2]
            size = len(labels)
            layout["image"] = ax.imshow(np.zeros((size, size)), cmap="Blues")
            cells = [(r, c) for r in range(size) for c in range(size)] if size <= 12 else []  # beyond, numbers
            layout["cells"] = {(r, c): ax.text(c, r, "", ha="center", va="center", fontsize=8)  # would not fit
                               for r, c in cells}
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            long = max(len(label) for label in labels) > 3
            ax.set_xticks(range(size), labels, rotation=45 if long else 0, ha="right" if long else "center", fontsize=8)
            ax.set_yticks(range(size), labels, fontsize=8)
            layout["matrix_axes"] = ax
        self._fix_label_places(fig, axes, labels is not None)
        return layout

    @staticmethod
    def _fix_label_places(fig, axes, matrix: bool) -> None:
        """Place the axis labels once: matplotlib places them after measuring every tick label at
        each draw (a fifth of a plot's time), but tick labels of digits are equally tall whatever
        the numbers, and the matrix's class names do not change. The curves' y labels stay
        placed at each draw: their tick labels' widths vary."""
        fig.canvas.draw()  # places them (in pixels along the axis' normal)
        for axis in [ax.xaxis for ax in axes] + ([axes[2].yaxis] if matrix else []):
            to_axes = axis.axes.transAxes.inverted()
            x, y = axis.label.get_position()  # x: axes fraction and y pixels, or the other way round
            if axis.axis_name == "x":
                axis.set_label_coords(x, to_axes.transform((0.0, y))[1])
            else:
                axis.set_label_coords(to_axes.transform((x, 0.0))[0], y)

    def figure(self, inst: InstanceInfo):
        """The figure of `inst` (owned by this plotter: drawn into again by the next call)."""
        histories = [f.get("history") or {} for f in inst.folds.values()]
        confusion = test_confusion(inst)
        key = (3 if confusion else 2, tuple(confusion[1]) if confusion else None)
        if key not in self.layouts:
            self.layouts[key] = self._layout(key)
        layout = self.layouts[key]
        for ax, name, curves in layout["panels"]:
            ax.ignore_existing_data_limits = True  # forget the last instance's limits
            lines = []
            for key_name, line, band in curves:
                values = [h[key_name] for h in histories if h.get(key_name)]
                line.set_visible(bool(values))
                band.set_visible(bool(values))
                if not values:
                    continue
                epochs, mean, std = curve_stats(values)
                low, high = clipped_band(name, mean, std)
                line.set_data(epochs, mean)
                line.set_marker("o" if len(epochs) == 1 else "None")
                band.set_data(epochs, low, high)
                shown = np.isfinite(low) & np.isfinite(high)  # a diverged epoch adds no limits
                ax.update_datalim(np.column_stack([np.concatenate([epochs[shown], epochs[shown]]),
                                                   np.concatenate([low[shown], high[shown]])]))
                lines.append(line)
            ax.set_xlim(0.5, max([1] + [len(h.get(name) or ()) for h in histories]) + 0.5)
            if lines:
                ax.set_autoscaley_on(True)
                ax.autoscale_view(scalex=False)
            else:  # no curve at all: the empty panel of a new figure
                ax.set_ylim(0.0, 1.0)
            entries = tuple((line.get_label(), line.get_marker()) for line in lines)
            if layout["legends"].get(ax, ()) != entries:  # rebuilt only when its entries change (it copies them)
                if lines:
                    ax.legend(handles=lines, fontsize=8)
                else:
                    ax.get_legend().remove()
                layout["legends"][ax] = entries
        if confusion:
            total, _, folds = confusion
            layout["image"].set_data(total)
            layout["image"].set_clim(total.min(), total.max())
            for (r, c), text in layout["cells"].items():
                text.set_text(str(int(total[r, c])))
                text.set_color("white" if total[r, c] > total.max() / 2 else "black")
            # y given: placed at the top, not searched for room above tick labels there are none of
            layout["matrix_axes"].set_title(f"test, summed over {folds} folds", fontsize=9, y=1.0)
        comments = " / ".join(str(inst.params.get(k, "")) for k in ("comment_1", "comment_2"))
        layout["title"].set_text(f"instance {inst.id}: {comments} ({len(inst.folds)} folds, mean ± std)")
        layout["caption"].set_text(early_stopping_caption([h["loss"] for h in histories if h.get("loss")]))
        return layout["fig"]

    def close(self) -> None:
        for layout in self.layouts.values():
            self.plt.close(layout["fig"])
        self.layouts.clear()


def instance_figure(plt, inst: InstanceInfo, task_type: str):
    """Learning curves and the summed test confusion matrix of one instance, in a new figure (the
    caller closes it)."""
    plotter = InstancePlotter(plt, task_type)
    fig = plotter.figure(inst)
    plotter.layouts.clear()  # the figure is the caller's now
    return fig


# The bars' colours, named as the workbook names its fills (spreadsheet.BEST_FILL, SAME_FILL).
BEST_COLOUR, SAME_COLOUR, OTHER_COLOUR = "tab:green", "gold", "tab:gray"
SAME_COLOUR_NAME = "yellow"


def metric_bar_figure(plt, data: ReportData, summary: list[dict[str, Any]]):
    set_name, _, metric = data.main_metric.partition("_")
    rows = [r for r in summary if r.get(f"{set_name}_mean_{metric}") is not None]
    # Up to 60 labelled bars grow the figure; beyond, it stays 32 inches wide and labels every n-th bar.
    fig, ax = plt.subplots(figsize=(min(max(5.0, 0.5 * len(rows) + 2), 32.0), 3.2))  # 5: room for the title
    means = np.array([r[f"{set_name}_mean_{metric}"] for r in rows], dtype=float)
    stds = np.array([r[f"{set_name}_std_{metric}"] or 0.0 for r in rows], dtype=float)
    low, high = clipped_band(metric, means, stds)
    colours = [BEST_COLOUR if r["ID"] == data.best else SAME_COLOUR if r["significance"] == sig.SAME
               else OTHER_COLOUR for r in rows]
    labels = [str(r["ID"]) if r["status"] == "done" else f"{r['ID']} ({r['folds_done']}/{r['num_folds']} folds)"
              for r in rows]
    positions = np.arange(len(rows))
    ax.bar(positions, means, yerr=np.vstack([means - low, high - means]), capsize=3 if len(rows) <= 60 else 0,
           color=colours)
    step = max(1, int(np.ceil(len(rows) / 60)))
    ax.set_xticks(positions[::step], labels[::step], rotation=0 if step == 1 and len(rows) <= 30 else 90,
                  fontsize=8 if len(rows) <= 30 else 6)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("instance ID")  # an unfinished one's tick says how many folds it has, e.g. "4 (2/3 folds)"
    ax.set_ylabel(metric_text(data.main_metric))
    ax.set_title(f"{metric_text(data.main_metric)} per instance (mean ± std over folds)\ngreen: the best, chosen on "
                 f"{metric_text(data.chooser)}; {SAME_COLOUR_NAME}: not distinguishable from it", fontsize=8)
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
    best = grid.best  # chosen on the selection metric, not on the values shown
    for (r, c), info in grid.cells.items():
        std = "" if info["std"] is None else f"\n± {info['std']:.3f}"
        ax.text(c, r, f"{info['mean']:.3f}{std}", ha="center", va="center", fontsize=8,
                fontweight="bold" if (r, c) == best else "normal",
                color="white" if sign * info["mean"] < sign * np.nanmean(means) else "black")  # dark: worse
    ax.set_xticks(range(len(grid.columns)), [repr(v) for v in grid.columns])
    ax.set_yticks(range(len(grid.rows)), [repr(v) for v in grid.rows])
    ax.set_xlabel(grid.column_parameter)
    ax.set_ylabel(grid.row_parameter)
    ax.set_title(f"{data.main_metric.replace('_', ' ')}: mean ± std over folds (bold: best "
                 f"{grid.chooser.replace('_', ' ')})", fontsize=9)
    fig.tight_layout()
    return fig


PLOT_VERSION = 3  # part of every instance plot's signature: a change of style redraws them all
PARALLEL_FROM = 24  # stale instance plots from which worker processes draw them


def shown_instances(data: ReportData, every: bool = False) -> tuple[list[InstanceInfo], list[InstanceInfo]]:
    """The instances whose plots the report shows, as (best, flagged): all with folds below
    BEST_PLOTTED of them (or with `every`), flagged empty; else the BEST_PLOTTED best on the chooser,
    best first, and the failed and diverged ones among the rest."""
    with_folds = [inst for inst in data.instances if inst.folds]
    if every or len(with_folds) < BEST_PLOTTED:
        return with_folds, []
    higher = HIGHER_IS_BETTER[data.chooser.split("_", 1)[1]]
    order = sig.ranked({i.id: i.folds for i in with_folds}, data.chooser, higher, data.best_candidates)
    by_id = {inst.id: inst for inst in with_folds}
    best = [by_id[run] for run in order[:BEST_PLOTTED]]
    chosen = {inst.id for inst in best}
    return best, [inst for inst in with_folds if inst.id not in chosen and (inst.diverged or inst.error_line is not None)]


def plots_note(data: ReportData, best: list[InstanceInfo], flagged: list[InstanceInfo]) -> str | None:
    """What the plots sheet shows of the instance plots (shown_instances), when not all of them
    (else None); one line per sheet row."""
    total = sum(1 for inst in data.instances if inst.folds)
    if not best or len(best) + len(flagged) == total:
        return None
    return (f"Instance plots: the {len(best)} best of {total} instances by {metric_text(data.chooser)}, best first"
            + (f", then {len(flagged)} failed or diverged" if flagged else "") + ".\n"
            "Ranked as the workbook chooses the best; `xval report EXP --plots all` draws every instance's plot into plots/.")


def signature(inst: InstanceInfo) -> str:
    """What an instance plot shows, in short: it is redrawn only when this changes."""
    folds = [(f, r.get("epochs"), r.get("best_epoch"), r.get("duration_s"), r.get("seed"))
             for f, r in inst.folds.items()]
    comments = [inst.params.get("comment_1"), inst.params.get("comment_2")]
    classes = [r.get("classes") for r in inst.folds.values()]
    return hashlib.sha1(repr((PLOT_VERSION, folds, comments, classes)).encode()).hexdigest()[:16]


def _plot_inputs(inst: InstanceInfo) -> InstanceInfo:
    """The instance with only what its plot reads (cheap to send to a worker process)."""
    keep = ("history", "test_confusion_matrix", "classes", "epochs", "best_epoch", "duration_s", "seed")
    folds = {f: {k: r[k] for k in keep if k in r} for f, r in inst.folds.items()}
    params = {k: inst.params.get(k) for k in ("comment_1", "comment_2")}
    return InstanceInfo(inst.id, {"folds": folds, "parameters": params, "num_folds": inst.num_folds}, None)


def instance_plot_path(folder: Path, prefix: str, run: int) -> Path:
    return folder / f"{prefix}_run{run}.png"


def _draw_instances(instances: list[InstanceInfo], task_type: str, folder: Path, prefix: str,
                    plotter: InstancePlotter | None = None) -> None:
    """Draw the instances' plots, each signed with what it shows; skip those already drawn so."""
    own = plotter is None
    plotter = plotter or InstancePlotter(_pyplot(), task_type)
    try:
        for inst in instances:
            path, current = instance_plot_path(folder, prefix, inst.id), signature(inst)
            if drawn_signature(path) != current:  # a refresh or the drawer may have drawn it meanwhile
                _save(plotter.figure(inst), path, tight=False, signature=current)
    finally:
        if own:
            plotter.close()


def _start_children(chunks: list[list[InstanceInfo]], task_type: str, folder: Path, prefix: str) -> list:
    """Start drawing each chunk in a child `python -m xvalkit.reporting.plots` (plain processes, not
    multiprocessing: they work from any script); the chunk goes over its stdin as a pickle."""
    import pickle
    import subprocess
    import sys

    from ..threads import single_threaded_environment

    children = [subprocess.Popen([sys.executable, "-m", "xvalkit.reporting.plots"], stdin=subprocess.PIPE,
                                 stderr=subprocess.PIPE, env=single_threaded_environment()) for _ in chunks]
    for child, chunk in zip(children, chunks):
        child.stdin.write(pickle.dumps((chunk, task_type, folder, prefix)))
        child.stdin.close()
    return children


def _wait_children(children: list) -> None:
    for child in children:
        errors = child.stderr.read().decode(errors="replace").strip()
        if child.wait() != 0:
            raise RuntimeError(f"drawing the instance plots failed: {errors.splitlines()[-1] if errors else child.returncode}")


def draw(data: ReportData, summary: list[dict[str, Any]], folder: Path, prefix: str,
         meanwhile: Callable[[], None] | None = None, instance_plots: bool = True,
         shown: list[InstanceInfo] | None = None) -> list[Path]:
    """Write every plot into `folder` (`summary`: the rows of tables.summary_rows); returns their paths.

    An instance plot whose instance has not changed since it was drawn (same folds: the signature
    written into its PNG) is kept, so refreshes during a run and `xval report` redraw only what
    changed; many stale plots are drawn by one worker process per core, while this process draws
    the summary plots and calls `meanwhile` (the report's other work). Without `instance_plots`
    (refreshes during a run whose drawer draws them), only the summary plots are drawn, and the
    instance plots already there are listed. Instance plots: those of `shown` (shown_instances),
    by default every instance with folds.
    """
    shown = [inst for inst in data.instances if inst.folds] if shown is None else shown
    stale = [_plot_inputs(inst) for inst in shown if instance_plots and
             drawn_signature(instance_plot_path(folder, prefix, inst.id)) != signature(inst)]
    workers = min(os.cpu_count() or 1, len(stale) // (PARALLEL_FROM // 2))
    children = []
    if len(stale) >= PARALLEL_FROM and workers > 1:  # they start (imports) while the summary plots are drawn here
        children = _start_children([stale[i::workers] for i in range(workers)], data.task_type, folder, prefix)
    try:
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
        if meanwhile is not None:
            meanwhile()
        if stale and not children:
            _draw_instances(stale, data.task_type, folder, prefix)
    finally:
        _wait_children(children)
    instances = [instance_plot_path(folder, prefix, inst.id) for inst in shown]
    return paths + [path for path in instances if instance_plots or path.is_file()]


if __name__ == "__main__":  # a child of _start_children: its input is this process's parent's data
    import pickle
    import sys

    _draw_instances(*pickle.load(sys.stdin.buffer))
