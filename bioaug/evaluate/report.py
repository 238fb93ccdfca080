"""The evaluation report: ``report.md``, ``report.json``, a booktabs LaTeX table and PNG figures.

Input is a results table, one row per run (cell): ``arm``, ``budget``, ``seed``, ``fold`` and the metric values,
as ``classification_metrics`` returns them (so rows may also carry ``confusion_matrix``, ``sensitivity`` and
``specificity``). Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half report beside complete ones.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

from ..provenance import atomic_path, package_versions, write_json_atomic, write_text_atomic
from .metrics import CONFUSION_METRICS, SCALAR_METRICS, metric_label
from .stats import (image_bootstrap, minimum_detectable_difference, paired_test, percentile_interval,
                    summarize)

REPORT_FILES = {"markdown": "report.md", "json": "report.json", "latex": "table.tex",
                "budget_figure": "budget_curves.png", "confusion_figure": "confusion_matrices.png",
                "samples_figure": "samples.png", "external_figure": "internal_vs_external.png"}
#: The metrics of the headroom and draw-spread tables: macro-F1, and weighted F1 as the literature quotes it.
HEADLINE_METRICS = ("macro_f1", "weighted_f1")


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def summarize_results(rows: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] = tuple(SCALAR_METRICS),
                      references: Sequence[str] = ("classic", "real"), confidence: float = 0.95,
                      n_resamples: int = 2000, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Per arm × budget × metric summaries over runs, and paired tests of each arm against each reference.

    Pairs are matched on (seed, fold, draw) within a budget. References absent from ``rows`` are skipped. When rows
    carry per-image confusion matrices (``group_confusion``), confidence intervals of means and of paired
    differences resample both runs and test images (``image_bootstrap``), so they hold the seed-to-seed and the
    image-to-image variation; otherwise, and for ROC AUC, they resample runs.

    Returns
    -------
    dict
        ``summaries``: dicts with arm, budget, metric, the ``Summary`` fields and ``ci`` (what was resampled);
        ``comparisons``: dicts with arm, reference, budget, metric, the ``PairedTest`` fields, the image-level
        CI of the mean difference and the smallest difference detectable at 80% power (``detectable``).
    """
    arms = _ordered([row["arm"] for row in rows])
    budgets = sorted({float(row["budget"]) for row in rows})
    summaries, comparisons = [], []
    for budget in budgets:
        chosen = [row for row in rows if float(row["budget"]) == budget]
        for metric in metrics:
            cells = {arm: {_run(row): float(row[metric]) for row in chosen if row["arm"] == arm} for arm in arms}
            draws = None
            if metric in CONFUSION_METRICS and all("group_confusion" in row for row in chosen):
                draws = image_bootstrap({(row["arm"], *_run(row)): row for row in chosen}, metric,
                                        n_resamples=n_resamples, seed=seed)

            for arm in arms:
                if not cells[arm]:
                    continue
                summary = summarize(list(cells[arm].values()), confidence=confidence, n_resamples=n_resamples,
                                    seed=seed).to_dict()
                summary["ci"] = "runs"
                if draws is not None:
                    summary["ci_low"], summary["ci_high"] = percentile_interval(
                        _mean_draws(draws, arm, list(cells[arm]), seed), confidence)
                    summary["ci"] = "runs and test images"
                summaries.append({"arm": arm, "budget": budget, "metric": metric, **summary})
            compared: set[str] = set()
            for reference in (r for r in references if cells.get(r)):
                compared.add(reference)  # each pair of references is tested once, against the first listed
                for arm in (a for a in arms if a not in compared and cells[a]):
                    test = paired_test(cells[arm], cells[reference]).to_dict()
                    common = [key for key in cells[arm] if key in cells[reference]]
                    differences = [cells[arm][key] - cells[reference][key] for key in common]
                    test["detectable"] = minimum_detectable_difference(differences)
                    test["delta_ci_low"] = test["delta_ci_high"] = float("nan")
                    if draws is not None and common:
                        test["delta_ci_low"], test["delta_ci_high"] = percentile_interval(
                            _mean_draws(draws, arm, common, seed) - _mean_draws(draws, reference, common, seed),
                            confidence)
                    comparisons.append({"arm": arm, "reference": reference, "budget": budget, "metric": metric,
                                        **test})
    return {"summaries": summaries, "comparisons": comparisons, "headroom": headroom(rows, metrics, seed=seed),
            "draws": draw_spread(rows, metrics)}


def _mean_draws(draws: Mapping[Hashable, np.ndarray], arm: str, keys: Sequence[tuple[Any, Any]], seed: int
                ) -> np.ndarray:
    """Bootstrap means over the runs ``keys`` of ``arm``: runs resampled too (the same draw for the same runs, so
    arms stay paired), each run's value from its test-image resample ``draws``; both sources of variation."""
    values = np.stack([draws[(arm, *key)] for key in keys])  # (runs, resamples)
    picks = np.random.default_rng(seed).integers(0, len(keys), size=(values.shape[1], len(keys)))
    return np.nanmean(values[picks, np.arange(values.shape[1])[:, None]], axis=1)


def _run(row: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """What pairs runs across arms within a budget: the classifier seed, the fold and the budget draw."""
    return row["seed"], row["fold"], row.get("draw", 0)


def headroom(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], *, seed: int = 0) -> list[dict[str, Any]]:
    """Per arm, budget below the largest and metric: how far the largest budget is above it, paired by fold and
    seed (every draw of the smaller budget against the same fold and seed at the largest, whose draws coincide
    when it keeps every training group). This is the room synthetic patches could fill."""
    budgets = sorted({float(row["budget"]) for row in rows})
    if len(budgets) < 2:
        return []
    top = budgets[-1]
    found = []
    for arm in _ordered([row["arm"] for row in rows]):
        full = {(row["seed"], row["fold"]): row for row in rows if row["arm"] == arm and float(row["budget"]) == top}
        for budget in budgets[:-1]:
            for metric in metrics:
                gaps = [float(full[(row["seed"], row["fold"])][metric]) - float(row[metric]) for row in rows
                        if row["arm"] == arm and float(row["budget"]) == budget and (row["seed"], row["fold"]) in full]
                if gaps:
                    found.append({"arm": arm, "budget": budget, "versus": top, "metric": metric,
                                  **summarize(gaps, seed=seed).to_dict()})
    return found


def draw_spread(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Per arm, budget and metric with several budget draws: each draw's mean over folds and seeds, and their
    spread (which images get labelled matters most at small budgets)."""
    found = []
    for arm in _ordered([row["arm"] for row in rows]):
        for budget in sorted({float(row["budget"]) for row in rows}):
            chosen = [row for row in rows if row["arm"] == arm and float(row["budget"]) == budget]
            draws = sorted({row.get("draw", 0) for row in chosen})
            if len(draws) < 2:
                continue
            for metric in metrics:
                means = [float(np.nanmean([row[metric] for row in chosen if row.get("draw", 0) == d])) for d in draws]
                found.append({"arm": arm, "budget": budget, "metric": metric, "draws": draws, "means": means,
                              "sd": float(np.std(means, ddof=1)), "range": float(max(means) - min(means))})
    return found


def _number(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if np.isfinite(value) else "–"


def _cell(summary: Mapping[str, Any]) -> str:
    return (f"{_number(summary['mean'])} ± {_number(summary['sd'])} "
            f"[{_number(summary['ci_low'])}, {_number(summary['ci_high'])}]")


def _p_value(value: float) -> str:
    return "–" if not np.isfinite(value) else ("<0.001" if value < 0.001 else f"{value:.3f}")


def _budget(value: float) -> str:
    return f"{100 * value:g}%"


def _signed(value: float) -> str:
    return f"{value:+.3f}" if np.isfinite(value) else "–"


MAIN_ARMS = ("classic+synthetic", "classic+selected", "pseudo_label", "pseudo_label+selected", "real")
"""The arms of the paper's question, each read against ``classic`` (standard practice) in the main comparison."""


def _main_comparison(comparisons: Sequence[Mapping[str, Any]], budgets: Sequence[float],
                     metric: str = "macro_f1", where: str = "") -> list[str]:
    """Plain sentences for the main question: does each arm beat classic augmentation, and by how much?"""
    lines = []
    for budget in budgets:
        for arm in MAIN_ARMS:
            found = [c for c in comparisons if c["arm"] == arm and c["reference"] == "classic"
                     and c["budget"] == budget and c["metric"] == metric]
            if not found:
                continue
            c = found[0]
            low, high = c.get("delta_ci_low", np.nan), c.get("delta_ci_high", np.nan)
            if low > 0 or high < 0:
                verdict = f"{'better' if low > 0 else 'worse'} than classic"
            elif c["wilcoxon_p"] < 0.05:  # the runs agree on a direction the test images cannot confirm
                verdict = (f"consistently {'above' if c['mean_difference'] > 0 else 'below'} classic over the "
                           "paired runs, but not distinguishable over test images (the CI includes 0)")
            else:
                verdict = "not distinguishable from classic"
            lines.append(f"- **{arm}** at {_budget(budget)}: {verdict}, Δ macro-F1 {_signed(c['mean_difference'])} "
                         f"[{_signed(low)}, {_signed(high)}], Wilcoxon p {_p_value(c['wilcoxon_p'])} over {c['n']} "
                         f"paired runs; this run could detect a mean difference of "
                         f"{_number(c.get('detectable', np.nan))} (80% power).")
    return [f"## Main comparison: against classic augmentation (macro-F1){where}", "", *lines, ""] if lines else []


def _markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in body), ""]


def _per_class_lines(rows: Sequence[Mapping[str, Any]], budget: float) -> list[str]:
    """Mean per-class sensitivity and specificity per arm at ``budget``, when rows carry them."""
    chosen = [row for row in rows if float(row["budget"]) == budget and "sensitivity" in row]
    if not chosen:
        return []
    classes = list(chosen[0]["sensitivity"])
    body = []
    for arm in _ordered([row["arm"] for row in chosen]):
        runs = [row for row in chosen if row["arm"] == arm]
        body.append([arm] + [f"{_number(np.nanmean([r[kind][name] for r in runs]))}"
                             for name in classes for kind in ("sensitivity", "specificity")])
    header = ["arm"] + [f"{name} {kind}" for name in classes for kind in ("sens.", "spec.")]
    return [f"## Per-class sensitivity and specificity (budget {_budget(budget)}, mean over runs)", "",
            *_markdown_table(header, body)]


def _keyed_table(first: str, records: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A markdown table with one row per key of ``records`` and one column per field; floats to 3 decimals."""
    names = _ordered([key for values in records.values() for key in values])
    body = [[key] + [_number(values[n]) if isinstance(values.get(n), float) else str(values.get(n, "–"))
                     for n in names] for key, values in records.items()]
    return _markdown_table([first, *names], body)


def _summary_sections(summary: Mapping[str, list[dict[str, Any]]], metrics: Sequence[str], *,
                      where: str = "") -> list[str]:
    """Result tables per budget, the main comparison and the paired tests of one summary (``where``: e.g.
    ", external store hospital-b", appended to every heading)."""
    lines: list[str] = []
    by_key = {(s["arm"], s["budget"], s["metric"]): s for s in summary["summaries"]}
    arms = _ordered([s["arm"] for s in summary["summaries"]])
    budgets = sorted({s["budget"] for s in summary["summaries"]})
    for budget in budgets:
        body = [[arm, str(by_key[(arm, budget, metrics[0])]["n"])]
                + [_cell(by_key[(arm, budget, m)]) for m in metrics]
                for arm in arms if (arm, budget, metrics[0]) in by_key]
        lines += [f"## Results, label budget {_budget(budget)}{where}", "",
                  *_markdown_table(["arm", "runs", *(metric_label(m) for m in metrics)], body)]
    if summary.get("headroom"):
        body = [[h["arm"], _budget(h["budget"]), metric_label(h["metric"]), str(h["n"]),
                 f"{_number(h['mean'])} [{_number(h['ci_low'])}, {_number(h['ci_high'])}]"]
                for h in summary["headroom"] if h["metric"] in HEADLINE_METRICS]
        lines += [f"## Headroom: the largest budget minus each smaller one (paired by fold and seed){where}", "",
                  "Synthetic patches can only matter where this gap is large: where the learning curve still "
                  "climbs.", "", *_markdown_table(["arm", "budget", "metric", "pairs", "gap [95% CI]"], body)]
    if summary.get("draws"):
        body = [[d["arm"], _budget(d["budget"]), metric_label(d["metric"]),
                 ", ".join(_number(m) for m in d["means"]), _number(d["sd"]), _number(d["range"])]
                for d in summary["draws"] if d["metric"] in HEADLINE_METRICS]
        lines += [f"## Spread between budget draws{where}", "",
                  *_markdown_table(["arm", "budget", "metric", "mean per draw", "sd", "range"], body)]
    if summary["comparisons"]:
        lines += _main_comparison(summary["comparisons"], budgets, where=where)
        body = [[c["arm"], c["reference"], _budget(c["budget"]), metric_label(c["metric"]),
                 str(c["n"]), _signed(c["mean_difference"]),
                 f"[{_signed(c.get('delta_ci_low', np.nan))}, {_signed(c.get('delta_ci_high', np.nan))}]",
                 _p_value(c["wilcoxon_p"]), _p_value(c["t_p"]), _number(c.get("detectable", np.nan))]
                for c in summary["comparisons"]]
        lines += [f"## Paired comparisons (arm − reference over matched seed × fold × draw cells){where}", "",
                  "Δ CI: 95% bootstrap interval of the mean difference, resampling matched runs and test images "
                  "(the same draws for both arms). Detectable: the smallest mean difference a paired t-test at α = 0.05 would "
                  "find with 80% power, from the observed spread of the paired differences.", "",
                  *_markdown_table(["arm", "reference", "budget", "metric", "n", "Δ mean", "Δ 95% CI",
                                    "Wilcoxon p", "paired t p", "detectable Δ"], body)]
    return lines


def _per_class_f1_lines(rows: Sequence[Mapping[str, Any]], budgets: Sequence[float]) -> list[str]:
    """Mean per-class F1 per arm and budget, so what an arm does to the rare class is visible."""
    chosen = [row for row in rows if "per_class_f1" in row]
    if not chosen:
        return []
    classes = list(chosen[0]["per_class_f1"])
    body = []
    for budget in budgets:
        for arm in _ordered([row["arm"] for row in chosen]):
            runs = [row for row in chosen if row["arm"] == arm and float(row["budget"]) == budget]
            if runs:
                means = [float(np.nanmean([r["per_class_f1"][name] for r in runs])) for name in classes]
                body.append([arm, _budget(budget), *map(_number, means)])
    return ["## Per-class F1 (mean over runs)", "", *_markdown_table(["arm", "budget", *classes], body)]


def render_markdown(summary: Mapping[str, list[dict[str, Any]]], rows: Sequence[Mapping[str, Any]], *,
                    metrics: Sequence[str], protocol: Mapping[str, Any], provenance: Mapping[str, Any],
                    versions: Mapping[str, str], fidelity: Mapping[str, Mapping[str, Any]] | None,
                    figures: Sequence[str], confidence: float,
                    leakage: Mapping[str, Mapping[str, Any]] | None = None,
                    external: Mapping[str, tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None) -> str:
    """The text of ``report.md``: protocol, results, paired tests, fidelity, leakage check, provenance, figures."""
    lines = ["# bioaug evaluation report", "", "## Protocol", "",
             "Splits are grouped by slide (or image/patient): no group contributes patches to both training and "
             "test. Folds come from the group names and a seed alone, so every store of the same slides gets the "
             "same ones; validation slides come from the training side; a label budget keeps the first fraction "
             "of the training slides in a budget draw's order. Every arm uses the same splits, draws and seeds. "
             "Generators for synthetic arms are trained on their fold's training slides only (checked). Cells "
             f"show mean ± sd over runs (seeds × folds × draws) [{100 * confidence:g}% percentile bootstrap CI of the "
             "mean, resampling runs and the test images within each fold; ROC AUC resamples runs].",
             ""]
    lines += [f"- **{key}**: {value}" for key, value in protocol.items()] + [""]
    lines += _summary_sections(summary, metrics)
    budgets = sorted({s["budget"] for s in summary["summaries"]})
    if budgets:
        lines += _per_class_f1_lines(rows, budgets)
        lines += _per_class_lines(rows, budgets[-1])
    if fidelity:
        lines += ["## Generator quality (features of a classifier trained on real training patches)", "",
                  *_keyed_table("generator", fidelity)]
    if leakage:
        lines += ["## Generator leakage check", "",
                  "Each generator's training slides, recovered from the content hash of the store it was trained "
                  "on, against the fold's test slides (must share none) and the budget's training slides (must "
                  "contain them all); the evaluation refuses to run otherwise. Hashes are SHA-256 prefixes.", "",
                  *_keyed_table("cell", leakage)]
    for name, (record, external_summary) in (external or {}).items():
        absent = ", ".join(record["absent"]) or "none"
        lines += [f"## External validation: {name}", "",
                  f"Every classifier above, tested also on `{record.get('path', name)}` (never used for training, "
                  "selection, pseudo-labels or generators). Confidence intervals resample its images. Training "
                  f"classes it lacks (left out of macro-F1, not counted as zeros): {absent}. Shared slides, by name "
                  "and by file hash:", "", *_keyed_table("external store", {name: record["leakage"]}),
                  *_summary_sections(external_summary, metrics, where=f", external {name}")]
    lines += ["## Provenance", ""]
    lines += [f"- **{key}**: {value}" for key, value in provenance.items()]
    lines += [f"- **versions**: {', '.join(f'{k} {v}' for k, v in versions.items())}", ""]
    if figures:
        lines += ["## Figures", "", *(f"![{Path(f).stem}]({f})" for f in figures), ""]
    return "\n".join(lines)


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def render_latex(summary: Mapping[str, list[dict[str, Any]]], *, metrics: Sequence[str],
                 caption: str = "Classifier performance per arm and label budget (mean $\\pm$ sd over runs).",
                 label: str = "tab:bioaug") -> str:
    """A booktabs table (arm × budget rows, metric columns, mean ± sd), ready for ``\\input`` in a paper."""
    by_key = {(s["arm"], s["budget"], s["metric"]): s for s in summary["summaries"]}
    arms = _ordered([s["arm"] for s in summary["summaries"]])
    budgets = sorted({s["budget"] for s in summary["summaries"]})
    header = " & ".join(["Budget", "Arm", *(metric_label(m) for m in metrics)])
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption}}}", f"\\label{{{label}}}",
             r"\begin{tabular}{ll" + "c" * len(metrics) + "}", r"\toprule", header + r" \\", r"\midrule"]
    for index, budget in enumerate(budgets):
        if index:
            lines.append(r"\midrule")
        for arm in arms:
            if (arm, budget, metrics[0]) not in by_key:
                continue
            values = [by_key[(arm, budget, m)] for m in metrics]
            cells = [f"${_number(v['mean'])} \\pm {_number(v['sd'])}$" for v in values]
            lines.append(" & ".join([_latex_escape(_budget(budget)), _latex_escape(arm), *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _save_figure(figure: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_budget_curves(summary: Mapping[str, list[dict[str, Any]]], path: Path, *, metrics: Sequence[str]) -> None:
    """Each metric against label budget, one line per arm with its bootstrap CI as a band."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4 * len(metrics), 3.4))
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    arms = _ordered([s["arm"] for s in summary["summaries"]])
    for axis, metric in zip(axes, metrics):
        for arm in arms:
            points = sorted((s for s in summary["summaries"] if s["arm"] == arm and s["metric"] == metric),
                            key=lambda s: s["budget"])
            budgets = [100 * s["budget"] for s in points]
            line, = axis.plot(budgets, [s["mean"] for s in points], marker="o", label=arm)
            axis.fill_between(budgets, [s["ci_low"] for s in points], [s["ci_high"] for s in points],
                              color=line.get_color(), alpha=0.2, linewidth=0)
        all_budgets = sorted({100 * s["budget"] for s in summary["summaries"]})
        if len(all_budgets) > 2 and all_budgets[-1] / all_budgets[0] >= 20:  # a learning curve: log scale
            axis.set_xscale("log")
            axis.set_xticks(all_budgets, [f"{b:g}" for b in all_budgets])
        axis.set_xlabel("label budget (% of training slides)")
        axis.set_title(metric_label(metric))
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    _save_figure(figure, path)


def plot_internal_external(summary: Mapping[str, list[dict[str, Any]]],
                           external: Mapping[str, Mapping[str, list[dict[str, Any]]]], path: Path, *,
                           metric: str = "macro_f1") -> None:
    """Per arm, internal and external macro-F1 (mean with its CI) side by side; one panel per label budget."""
    from matplotlib.figure import Figure

    budgets = sorted({s["budget"] for s in summary["summaries"]})
    arms = _ordered([s["arm"] for s in summary["summaries"]])
    figure = Figure(figsize=(max(5.0, 1.1 * len(arms)) * len(budgets), 3.6))
    axes = figure.subplots(1, len(budgets), squeeze=False)[0]
    sets = {"internal": summary, **{f"external {name}": value for name, value in external.items()}}
    width = 0.8 / len(sets)
    for axis, budget in zip(axes, budgets):
        for offset, (label, values) in enumerate(sets.items()):
            found = {s["arm"]: s for s in values["summaries"] if s["budget"] == budget and s["metric"] == metric}
            positions = [k + (offset - (len(sets) - 1) / 2) * width for k, arm in enumerate(arms) if arm in found]
            means = np.array([found[arm]["mean"] for arm in arms if arm in found])
            errors = np.array([[found[a]["mean"] - found[a]["ci_low"], found[a]["ci_high"] - found[a]["mean"]]
                               for a in arms if a in found]).T
            axis.bar(positions, means, width, yerr=np.nan_to_num(errors), capsize=2, label=label)
        axis.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel(metric_label(metric))
        axis.set_title(f"label budget {_budget(budget)}")
        axis.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize="small")
    _save_figure(figure, path)


def plot_confusion_matrices(matrices: Mapping[str, np.ndarray], class_names: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrices (true rows, predicted columns), one panel per arm."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.6 * len(matrices), 3.4))
    axes = figure.subplots(1, len(matrices), squeeze=False)[0]
    for axis, (arm, matrix) in zip(axes, matrices.items()):
        matrix = np.asarray(matrix, dtype=np.float64)
        rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        axis.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        for (row, column), value in np.ndenumerate(rates):
            axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if value > 0.5 else "black")
        ticks = np.arange(len(class_names))
        axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=7)
        axis.set_yticks(ticks, class_names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_title(arm)
    axes[0].set_ylabel("true")
    _save_figure(figure, path)


def _mosaic(images: np.ndarray, columns: int) -> np.ndarray:
    """(N, H, W, 3) patches tiled row by row into one image, padding the last row with white."""
    rows = -(-len(images) // columns)
    padded = np.full((rows * columns, *images.shape[1:]), 255, dtype=np.uint8)
    padded[:len(images)] = images
    height, width = images.shape[1:3]
    return padded.reshape(rows, columns, height, width, 3).swapaxes(1, 2).reshape(rows * height, columns * width, 3)


def plot_sample_grids(real: np.ndarray, synthetic: np.ndarray, path: Path, *, columns: int = 8) -> None:
    """Real and synthetic patches as two grids side by side (the first ``columns²`` of each)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5))
    for axis, (title, images) in zip(figure.subplots(1, 2), (("real", real), ("synthetic", synthetic))):
        axis.imshow(_mosaic(np.asarray(images, dtype=np.uint8)[:columns * columns], columns))
        axis.set_title(title)
        axis.axis("off")
    _save_figure(figure, path)


def write_report(out_dir: str | Path, rows: Sequence[Mapping[str, Any]], *, class_names: Sequence[str],
                 protocol: Mapping[str, Any], provenance: Mapping[str, Any],
                 metrics: Sequence[str] = tuple(SCALAR_METRICS), references: Sequence[str] = ("classic", "real"),
                 fidelity: Mapping[str, Mapping[str, Any]] | None = None,
                 leakage: Mapping[str, Mapping[str, Any]] | None = None,
                 samples: tuple[np.ndarray, np.ndarray] | None = None,
                 external: Mapping[str, Mapping[str, Any]] | None = None, confidence: float = 0.95,
                 n_resamples: int = 2000, seed: int = 0) -> dict[str, Path]:
    """Write the full report into ``out_dir`` and return {kind: path} of the files written.

    Parameters
    ----------
    rows
        One mapping per run with ``arm``, ``budget``, ``seed``, ``fold`` and every name in ``metrics``;
        optional ``confusion_matrix`` (summed per arm at the largest budget for the figure), ``sensitivity``
        and ``specificity`` (per-class tables).
    class_names
        Class names, for confusion-matrix axes.
    protocol
        What was run (folds, budgets, seeds, arms, network, epochs, ...), listed in the report.
    provenance
        Hashes (stores, checkpoints, feature network), seeds and config, listed in the report and JSON.
    fidelity
        Generator name -> ``fidelity_metrics`` result, tabled when given.
    leakage
        Cell name -> the verification of its generator's training data (store hashes, slide counts, slides
        shared with the test set), tabled when given.
    samples
        (real, synthetic) uint8 patches for the side-by-side sample figure.
    external
        External store name -> {"rows": runs tested on it (as ``rows``, with ``test_set`` and ``classes``),
        "leakage": the no-shared-slide proof, "absent": training classes it lacks, "path": its store}: an
        external section each, with the same metrics, CIs and paired tests, and one figure of internal against
        external macro-F1 per arm.
    confidence, n_resamples, seed
        Bootstrap settings for the confidence intervals (seeded, so the report is reproducible).
    """
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError("no results to report")
    summary = summarize_results(rows, metrics=metrics, references=references, confidence=confidence,
                                n_resamples=n_resamples, seed=seed)
    written: dict[str, Path] = {}
    plot_budget_curves(summary, out_dir / REPORT_FILES["budget_figure"], metrics=metrics)
    written["budget_figure"] = out_dir / REPORT_FILES["budget_figure"]
    largest = max(float(row["budget"]) for row in rows)
    matrices: dict[str, np.ndarray] = {}
    for row in rows:
        if "confusion_matrix" in row and float(row["budget"]) == largest:
            matrix = np.asarray(row["confusion_matrix"])
            matrices[row["arm"]] = matrices.get(row["arm"], 0) + matrix
    if matrices:
        plot_confusion_matrices(matrices, class_names, out_dir / REPORT_FILES["confusion_figure"])
        written["confusion_figure"] = out_dir / REPORT_FILES["confusion_figure"]
    if samples is not None:
        plot_sample_grids(*samples, out_dir / REPORT_FILES["samples_figure"])
        written["samples_figure"] = out_dir / REPORT_FILES["samples_figure"]
    external_summaries = {name: summarize_results(record["rows"], metrics=metrics, references=references,
                                                  confidence=confidence, n_resamples=n_resamples, seed=seed)
                          for name, record in (external or {}).items() if record["rows"]}
    if external_summaries:
        plot_internal_external(summary, external_summaries, out_dir / REPORT_FILES["external_figure"])
        written["external_figure"] = out_dir / REPORT_FILES["external_figure"]
    versions = package_versions()
    figures = [path.name for path in written.values()]
    write_text_atomic(out_dir / REPORT_FILES["latex"], render_latex(summary, metrics=metrics))
    written["latex"] = out_dir / REPORT_FILES["latex"]
    write_json_atomic(out_dir / REPORT_FILES["json"], {
        "protocol": dict(protocol), "provenance": dict(provenance), "versions": versions, "confidence": confidence,
        "class_names": list(class_names), "metrics": list(metrics), **summary,
        "fidelity": dict(fidelity or {}), "leakage": dict(leakage or {}), "runs": [dict(row) for row in rows],
        "external": {name: {"path": str(record.get("path", "")), "leakage": dict(record["leakage"]),
                            "absent_classes": list(record["absent"]), **external_summaries.get(name, {}),
                            "runs": [dict(row) for row in record["rows"]]} for name, record in (external or {}).items()}})
    written["json"] = out_dir / REPORT_FILES["json"]
    write_text_atomic(out_dir / REPORT_FILES["markdown"], render_markdown(
        summary, rows, metrics=metrics, protocol=protocol, provenance=provenance, versions=versions,
        fidelity=fidelity, figures=figures, confidence=confidence, leakage=leakage,
        external={name: (external[name], external_summaries[name]) for name in external_summaries}))
    written["markdown"] = out_dir / REPORT_FILES["markdown"]
    return written
