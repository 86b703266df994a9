"""Per-dataset summary: case, slice and foreground counts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class DatasetSummary:
    """What a dataset folder holds.

    Attributes:
        kind: ``amos``, ``busi`` or ``cxr``.
        cases: number of cases (volumes for AMOS, images for the 2D datasets).
        slices: number of 2D slices (all axial slices of the volumes for AMOS; images otherwise).
        foreground: class name -> foreground voxel (AMOS) or pixel count in the original files.
    """

    kind: str
    cases: int
    slices: int
    foreground: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"kind", "cases", "slices", "foreground"}``."""
        return asdict(self)

    def to_table(self) -> str:
        """A readable plain-text table."""
        lines = [f"dataset: {self.kind}", f"cases:   {self.cases}", f"slices:  {self.slices}", ""]
        width = max([len("class")] + [len(name) for name in self.foreground])
        unit = "voxels" if self.kind == "amos" else "pixels"
        lines.append(f"{'class':<{width}}  {'foreground ' + unit:>18}")
        lines.append(f"{'-' * width}  {'-' * 18}")
        lines += [f"{name:<{width}}  {count:>18,d}" for name, count in self.foreground.items()]
        return "\n".join(lines)
