"""The rows of a run folder's metrics.jsonl / eval.jsonl (written by ``psjax.run``, read by ``psjax.compare``).

A non-finite value is written as the string "nan", "inf" or "-inf" and "no value this iteration" as null, so the
two stay apart in the file; ``decode_row`` turns the strings back into floats. No JAX here: a report reads rows
without it.
"""

from __future__ import annotations

import math

NONFINITE_STRINGS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def decode_row(row: dict) -> dict:
    """A logged row with its non-finite values as floats ("nan" -> nan, "inf" -> inf); null stays None."""
    return {k: NONFINITE_STRINGS[v] if isinstance(v, str) and v in NONFINITE_STRINGS else v for k, v in row.items()}


def nonfinite_quantities(row: dict) -> list[str]:
    """What a decoded metrics row holds non-finite: its columns with a non-finite value, and ``params`` when the
    trainer counted non-finite parameters (``nonfinite_params``)."""
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    return bad + (["params"] if (row.get("nonfinite_params") or 0) > 0 else [])
