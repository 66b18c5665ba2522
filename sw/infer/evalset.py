"""The shipped evaluation set: sentence pairs (paraphrase / related / unrelated) and
calibration sentences, written for this project (sw/data/, no downloads).

`sentence_pairs.tsv`: one pair a line, `label<TAB>sentence_a<TAB>sentence_b`;
`holdout_pairs.tsv`: more pairs in that format, used to calibrate, tune or choose nothing
(the figures a choice made on the shipped pairs must be confirmed on);
`calibration.txt`: one sentence a line, the calibration of precision plans;
`ptq_calibration.txt`: more sentences, which with `calibration.txt` calibrate the PTQ
methods (their Hessians need more tokens than a plan's sensitivities).  Lines starting
with `#` are comments.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from ...errors import SmartquantError

LABELS = ("paraphrase", "related", "unrelated")


@dataclasses.dataclass(frozen=True)
class SentencePair:
    label: str
    a: str
    b: str


def _lines(path: str | Path | None, default: str) -> tuple[str, list[str]]:
    if path is None:
        text = resources.files("smartquant.sw").joinpath("data", default).read_text()
        where = default
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SmartquantError(f"{path}: cannot read ({exc.strerror})") from None
        where = str(path)
    return where, [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def _take(items: list, limit: int | None) -> list:
    """The first `limit` items spread over the whole list (every n-th), or all of them."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise SmartquantError(f"sample size {limit} must be at least 1")
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def load_pairs(path: str | Path | None = None, limit: int | None = None) -> list[SentencePair]:
    """Sentence pairs (all, or `limit` of them spread over the labels)."""
    where, lines = _lines(path, "sentence_pairs.tsv")
    return _parse_pairs(where, lines, limit)


def _parse_pairs(where: str, lines: list[str], limit: int | None) -> list[SentencePair]:
    pairs = []
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if len(fields) != 3 or fields[0] not in LABELS or not all(f.strip() for f in fields[1:]):
            raise SmartquantError(f"{where}: pair {number} is not 'label<TAB>sentence<TAB>sentence' "
                                  f"with a label in {LABELS}")
        pairs.append(SentencePair(*fields))
    if not pairs:
        raise SmartquantError(f"{where}: no sentence pairs")
    return _take(pairs, limit)


#: named pair sets (`eval --pairs-from`): shipped file names
PAIR_SETS = {"shipped": "sentence_pairs.tsv", "holdout": "holdout_pairs.tsv"}


def pair_set_file(source: str) -> str | None:
    """The file a pair set reads from the user's disk (None for a named, shipped set)."""
    return None if source in PAIR_SETS else source


def load_pair_set(source: str, limit: int | None = None) -> list[SentencePair]:
    """The pairs of a named set (PAIR_SETS) or of a TSV file at `source`."""
    where, lines = _lines(pair_set_file(source), PAIR_SETS.get(source, ""))
    return _parse_pairs(where, lines, limit)


def load_calibration(path: str | Path | None = None, limit: int | None = None) -> list[str]:
    """Calibration sentences for static plans (disjoint from the pairs)."""
    where, lines = _lines(path, "calibration.txt")
    if not lines:
        raise SmartquantError(f"{where}: no calibration sentences")
    return _take(lines, limit)


def unique_sentences(pairs: list[SentencePair]) -> list[str]:
    """Every sentence of the pairs once, in first-seen order."""
    return list(dict.fromkeys(s for p in pairs for s in (p.a, p.b)))


def load_ptq_calibration(limit: int | None = None) -> list[str]:
    """Calibration sentences of the PTQ methods: `calibration.txt`, then `ptq_calibration.txt`
    (all, or `limit` of them spread over both)."""
    return _take(load_calibration() + _lines(None, "ptq_calibration.txt")[1], limit)
