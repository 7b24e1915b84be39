"""Aggregation of a report table over training seeds: pure pandas.

A sweep with more than one training seed (``train.seed``) for the same settings is reported as one row
per setting with ``<metric>_mean``, ``<metric>_std`` (sample standard deviation, ddof=1; NaN for one seed)
and ``n_seeds``; the per-run rows stay available beside it (runs.csv).
"""

from __future__ import annotations

import pandas as pd

SEED = "train.seed"


def has_seeds(table: pd.DataFrame, seed: str = SEED) -> bool:
    """True when ``table`` holds more than one value of the ``seed`` column."""
    return seed in table.columns and table[seed].nunique(dropna=True) > 1


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    """(mean, sample std (NaN for fewer than two values), count) of the non-NaN values."""
    values = values.dropna()
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"), len(values)


def over_seeds(table: pd.DataFrame, metrics: list[str], seed: str = SEED, joined: tuple[str, ...] = ("engine",),
               drop: tuple[str, ...] = ("run_id",)) -> pd.DataFrame:
    """One row per setting (the columns that are not ``seed``, ``metrics``, ``joined`` or ``drop``), in the
    order settings first appear: ``<metric>_mean`` and ``<metric>_std`` for each metric, ``n_seeds``
    (distinct seeds), and each ``joined`` column as its distinct values joined by commas (e.g. the engines
    a setting's runs used)."""
    joined = tuple(c for c in joined if c in table.columns)
    keys = [c for c in table.columns if c not in (seed, *metrics, *joined, *drop)]
    rows = []
    for key, group in table.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for c in joined:
            row[c] = ",".join(dict.fromkeys(str(v) for v in group[c].dropna() if str(v)))
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std(group[m])
        row["n_seeds"] = int(group[seed].nunique())
        rows.append(row)
    columns = [*keys, *(f"{m}_{s}" for m in metrics for s in ("mean", "std")), *joined, "n_seeds"]
    return pd.DataFrame(rows, columns=columns)
