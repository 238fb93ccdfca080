"""score.md and score.png of a reader study, from the dict that ``score`` returns."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..provenance import atomic_path

POOLED = "all readers"


def _share(value: dict[str, Any]) -> str:
    """``0.62 [0.52, 0.71] (62/100)``, or ``–`` when there is nothing to share."""
    if value["value"] is None:
        return "–"
    low, high = value["ci95"]
    return f"{value['value']:.2f} [{low:.2f}, {high:.2f}] ({value['k']}/{value['n']})"


def _p(value: float | None) -> str:
    return "–" if value is None else (f"{value:.2g}" if value >= 1e-4 else f"{value:.1e}")


def _rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, scores) of each reader, then of all readers pooled when there are several."""
    rows = list(result["readers"].items())
    return rows + [(POOLED, result["pooled"])] if len(rows) > 1 else rows


def _names_note(result: dict[str, Any]) -> str:
    """How reader names were matched, and which readers wrote their name in more than one way."""
    merged = [f'{name} also as {", ".join(repr(spelled) for spelled in scores["spellings"] if spelled != name)}'
              for name, scores in result["readers"].items() if len(scores["spellings"]) > 1]
    return ("Reader names are compared ignoring case and spacing (\"dr a \" and \"Dr A\" are one reader)"
            + ("; written in more than one way: " + "; ".join(merged) if merged else "") + ".")


def scores_markdown(result: dict[str, Any]) -> str:
    """The human-readable report of a scored study."""
    inputs = result["provenance"]["study"]
    counts = result.get("item_counts", {})
    lines = [f"# Reader study {result['study_id']}: which patches are real?", "",
             f"{result['items']} items ({counts.get('real', '?')} real, {counts.get('synthetic', '?')} synthetic), "
             f"seed {result['provenance']['seed']}; real store `{str(inputs.get('real_store_sha256'))[:12]}`, "
             f"synthetic store `{str(inputs.get('synthetic_store_sha256'))[:12]}`, generator checkpoint "
             f"`{str(inputs.get('checkpoint_sha256'))[:12]}`.", "",
             "Positive = synthetic: sensitivity is the share of synthetic patches called synthetic, specificity "
             "the share of real patches called real. Accuracy 0.5 is chance: readers could not tell real from "
             "synthetic. Shares with Wilson 95% intervals; p: two-sided exact binomial test of accuracy against "
             "0.5.", "",
             _names_note(result), "",
             "| reader | answered | accuracy [95% CI] | p | sensitivity | specificity | median s/item |",
             "|---|---|---|---|---|---|---|"]
    for name, scores in _rows(result):
        median = f"{scores['median_seconds']:.1f}" if "median_seconds" in scores else "–"
        lines.append(f"| {name} | {scores['answered']} | {_share(scores['accuracy'])} | "
                     f"{_p(scores['accuracy']['p_value'])} | {_share(scores['sensitivity'])} | "
                     f"{_share(scores['specificity'])} | {median} |")
    if len(result["readers"]) > 1:
        lines += ["", "The pooled test counts every answer as independent; answers of one reader, and to one item "
                      "across readers, are correlated, so its p value is optimistic. Per-reader tests are exact."]
    pooled = result["pooled"]
    if pooled["per_class"]:
        lines += ["", f"## Per class ({POOLED if len(result['readers']) > 1 else 'the reader'})", "",
                  "| class | accuracy [95% CI] | p | sensitivity | specificity |", "|---|---|---|---|---|"]
        for name, scores in pooled["per_class"].items():
            lines.append(f"| {name} | {_share(scores['accuracy'])} | {_p(scores['accuracy']['p_value'])} | "
                         f"{_share(scores['sensitivity'])} | {_share(scores['specificity'])} |")
    if pooled["by_confidence"]:
        lines += ["", "## By confidence", "", "1 guessing, 2 fairly sure, 3 certain.", "",
                  "| confidence | accuracy [95% CI] |", "|---|---|"]
        lines += [f"| {level} | {_share(share)} |" for level, share in pooled["by_confidence"].items()]
    agreement = result["agreement"]
    if agreement is not None:
        kappa = "undefined (every answer the same)" if agreement["fleiss_kappa"] is None else \
            f"{agreement['fleiss_kappa']:.3f}"
        lines += ["", "## Agreement", "",
                  f"Fleiss' kappa {kappa} over the {agreement['items']} items all {agreement['readers']} readers "
                  f"answered (1: full agreement, 0: as expected by chance)."]
    lines += ["", "Answer files: " + ", ".join(f"`{path}` (sha256 `{digest[:12]}`)" for path, digest in
                                               result["provenance"]["scoring"]["inputs"].items()), ""]
    return "\n".join(lines)


def _bar_with_interval(axes: Any, position: float, share: dict[str, Any], **style: Any) -> None:
    if share["value"] is None:
        return
    low, high = share["ci95"]
    axes.bar(position, share["value"], yerr=[[share["value"] - low], [high - share["value"]]], capsize=3,
             **style)


def plot_scores(result: dict[str, Any], path: Path) -> None:
    """Four panels: accuracy per reader, sensitivity and specificity per reader, accuracy per class and by
    confidence (pooled), each with Wilson 95% intervals against the 0.5 chance line."""
    from matplotlib.figure import Figure

    rows = _rows(result)
    pooled = result["pooled"]
    figure = Figure(figsize=(15, 3.8))
    panels = figure.subplots(1, 4)
    for index, (name, scores) in enumerate(rows):
        _bar_with_interval(panels[0], index, scores["accuracy"], color="#4c72b0" if name != POOLED else "#555")
        _bar_with_interval(panels[1], index - 0.2, scores["sensitivity"], width=0.4, color="#c44e52",
                           label="sensitivity" if index == 0 else None)
        _bar_with_interval(panels[1], index + 0.2, scores["specificity"], width=0.4, color="#55a868",
                           label="specificity" if index == 0 else None)
    for axes in panels[:2]:
        axes.set_xticks(range(len(rows)), [name for name, _ in rows], rotation=30, ha="right")
    panels[1].legend(loc="lower right", fontsize=8)
    for index, scores in enumerate(pooled["per_class"].values()):
        _bar_with_interval(panels[2], index, scores["accuracy"], color="#8172b2")
    panels[2].set_xticks(range(len(pooled["per_class"])), list(pooled["per_class"]), rotation=30, ha="right")
    for index, share in enumerate(pooled["by_confidence"].values()):
        _bar_with_interval(panels[3], index, share, color="#937860")
    panels[3].set_xticks(range(len(pooled["by_confidence"])), list(pooled["by_confidence"]))
    titles = ("accuracy per reader", "sensitivity / specificity", "accuracy per class (pooled)",
              "accuracy by confidence (pooled)")
    for axes, title in zip(panels, titles):
        axes.axhline(0.5, color="k", linestyle="--", linewidth=1)
        axes.set_ylim(0, 1.05)
        axes.set_title(title, fontsize=10)
    panels[0].set_ylabel("share (Wilson 95% CI); dashed: chance")
    figure.suptitle(f"Reader study {result['study_id']}: telling real from synthetic (positive = synthetic)")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
