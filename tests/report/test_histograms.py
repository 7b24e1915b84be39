"""Weight histograms for any number of pruned tensors: none, one, and more than a row holds, titled by name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from src.report.histograms import MAX_COLUMNS, weight_histograms


@pytest.mark.parametrize("n", [0, 1, MAX_COLUMNS + 3])
def test_any_number_of_panels(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    before = [rng.normal(size=(4, 3, 2)) for _ in range(n)]
    after = [np.where(np.abs(w) > 0.5, w, 0) for w in before]
    path = weight_histograms(tmp_path / "h.png", before, after, "t", names=[f"block{i}/kernel" for i in range(n)])
    width, height = Image.open(path).size
    rows = max(-(-n // MAX_COLUMNS), 1)
    assert height == pytest.approx(270 * rows, abs=2)  # 3 in per row at 90 dpi: panels wrap, none is lost
    assert width == pytest.approx(288 * min(max(n, 1), MAX_COLUMNS), abs=2)
