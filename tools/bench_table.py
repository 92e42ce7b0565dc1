"""The benchmark's results: one Row per model and batch size, rendered as the markdown table
tools/bench.py prints (and, with --baseline, the table comparing two checkouts)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

COLUMNS = ("model", "batch", "forward ms/img", "saliency ms/img", "saliency/forward",
           "reference ms/img", "reference/saliency", "augment s", "rewrite mem/model size",
           "ref diff", "completeness", "peak RSS MiB fwd/sal/ref")
COMPARISON_COLUMNS = ("model", "batch", "saliency ms/img baseline/new", "saliency new/baseline",
                      "augment s baseline/new", "augment new/baseline",
                      "peak RSS MiB sal baseline/new", "completeness baseline/new", "map diff")


def _num(value: float | None, fmt: str) -> str:
    if value is None:
        return "—"
    return format(value, ".0f" if fmt == ".3g" and abs(value) >= 1000 else fmt)


@dataclass
class Baseline:
    """The --baseline checkout's saliency model, measured beside the current one's."""

    saliency_ms: float
    augment_s: float
    peak_rss_mib: float
    completeness: float | None
    map_diff: float | None  # max |new map − baseline map| / max |baseline map|


@dataclass
class Row:
    """One model and batch size."""

    model: str
    batch: int
    forward_ms: float
    saliency_ms: float
    reference_ms: float | None
    augment_s: float
    rewrite_ratio: float
    ref_diff: float | None
    completeness: float | None = None
    precision: str = "float32"
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    gpu_mib: dict[str, float | None] = field(default_factory=dict)
    profile: dict[str, float] | None = None
    baseline: Baseline | None = None

    @property
    def saliency_over_forward(self) -> float:
        """Saliency time / forward time."""
        return self.saliency_ms / self.forward_ms

    @property
    def reference_over_saliency(self) -> float | None:
        """Reference time / saliency time."""
        return None if self.reference_ms is None else self.reference_ms / self.saliency_ms

    def cells(self) -> list[str]:
        """The markdown table cells, in COLUMNS order."""
        rss = "/".join(_num(self.peak_rss_mib.get(k), ".0f")
                       for k in ("forward", "saliency", "reference"))
        return [self.model, str(self.batch), _num(self.forward_ms, ".3g"),
                _num(self.saliency_ms, ".3g"), _num(self.saliency_over_forward, ".3g"),
                _num(self.reference_ms, ".3g"), _num(self.reference_over_saliency, ".3g"),
                _num(self.augment_s, ".3g"), _num(self.rewrite_ratio, ".3g"),
                _num(self.ref_diff, ".1e"), _num(self.completeness, ".1e"), rss]

    def comparison_cells(self) -> list[str]:
        """The cells of the --baseline table, in COMPARISON_COLUMNS order."""
        base = self.baseline
        assert base is not None

        def pair(old: float | None, new: float | None, fmt: str) -> str:
            return f"{_num(old, fmt)}/{_num(new, fmt)}"

        return [self.model, str(self.batch), pair(base.saliency_ms, self.saliency_ms, ".3g"),
                _num(self.saliency_ms / base.saliency_ms, ".3f"),
                pair(base.augment_s, self.augment_s, ".3g"),
                _num(self.augment_s / base.augment_s, ".3f"),
                pair(base.peak_rss_mib, self.peak_rss_mib.get("saliency"), ".0f"),
                pair(base.completeness, self.completeness, ".1e"), _num(base.map_diff, ".1e")]

    def as_json(self) -> dict[str, Any]:
        """Everything, ratios included (the baseline only where there is one)."""
        data = {**asdict(self), "saliency_over_forward": self.saliency_over_forward,
                "reference_over_saliency": self.reference_over_saliency}
        if self.baseline is None:
            del data["baseline"]
        else:
            data["baseline"]["saliency_new_over_baseline"] = (self.saliency_ms
                                                              / self.baseline.saliency_ms)
        return data


def markdown_table(rows: Sequence[Row]) -> str:
    """The results as a markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def comparison_table(rows: Sequence[Row], baseline: str) -> str:
    """The --baseline results as a markdown table, under a line naming the baseline."""
    columns = COMPARISON_COLUMNS
    lines = [f"Baseline: {baseline} (new: this checkout; ratios below 1 are faster)", "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(row.comparison_cells()) + " |"
              for row in rows if row.baseline is not None]
    return "\n".join(lines)


def profile_report(rows: Sequence[Row], top: int = 8) -> str:
    """Per op type time of the saliency sessions (``--profile``)."""
    lines = []
    for row in rows:
        if not row.profile:
            continue
        total = sum(row.profile.values())
        parts = [f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)"
                 for op, ms in list(row.profile.items())[:top]]
        lines.append(f"{row.model} batch {row.batch}: {total:.1f} ms/run in kernels; "
                     + ", ".join(parts))
    return "\n".join(lines)
