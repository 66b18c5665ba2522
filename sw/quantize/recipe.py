"""Hardware-aware per-tensor quantization recipes (after QuantX) and their search.

An *option* is one way to store a tensor that the controller dequantizes cheaply:
uniform (affine, asymmetric or symmetric) or a nested codebook (`sw/quantize/codebook.py`),
group size 32..256, scale format fp16 / bf16 / pow2, and for uniform grids the
clipping search (`NestedMSEClip` on the recipe's view) or plain min/max.

A *recipe* assigns one option to every tensor for serving at `bits` (the view k the
plan reads), under a budget of average bits per weight *including metadata*: a full
read at view k fetches k plane lines per block, the group metadata lines and, for a
codebook tensor, the lines of its view-k table (`option_bits`).

The search measures each tensor's sensitivity as the relative output error of every
option on calibration activations, `tr(dW H dW^T) / tr(W H W^T)` with H the input
second moment (GPTQ Eq. 1; H = I without calibration: weight error), and minimises the
summed error under the budget exactly (a multiple-choice knapsack over whole DRAM
lines, solved by dynamic programming).  `write_recipe` / `read_recipe` keep it as JSON;
`quantize_with_recipe` applies it (`smartquant quantize SRC --recipe recipe.json`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ...errors import SmartquantError, about_tensor
from ...report import write_json
from ...spec import (BLOCK_WEIGHTS, CODE_BITS, GROUP_SIZES, GROUPS_PER_META_LINE, LINE_BITS, ScaleFormat,
                    codebook_lines_read)
from .codebook import CodebookQuantizer
from .quantizer import NestedMSEClip, NestedRTN, StoreFormat

RECIPE_FORMAT = "smartquant-recipe"
RECIPE_VERSION = 1
KINDS = ("uniform", "codebook")
SCALE_NAMES = {f.name.lower(): f for f in ScaleFormat}
#: range multipliers the clipping search tries (coarser than NestedMSEClip's default, so a
#: search over every tensor and option stays quick; the best p is rarely outside it)
CLIP_GRID = tuple(np.round(np.arange(0.60, 1.001, 0.05), 2))


@dataclasses.dataclass(frozen=True)
class TensorOption:
    """How one tensor is stored (see module docstring)."""
    kind: str = "uniform"
    group_size: int = 128
    symmetric: bool = False          #: uniform only (a codebook region is never symmetric)
    scale_format: str = "fp16"
    clip: bool = True                #: uniform only: clipping search on the recipe's views

    def __post_init__(self):
        if self.kind not in KINDS:
            raise SmartquantError(f"option kind {self.kind!r} not one of {KINDS}")
        if self.group_size not in GROUP_SIZES:
            raise SmartquantError(f"group size {self.group_size} not one of {GROUP_SIZES}")
        if self.scale_format not in SCALE_NAMES:
            raise SmartquantError(f"scale format {self.scale_format!r} not one of {tuple(SCALE_NAMES)}")
        if self.kind == "codebook" and self.symmetric:
            raise SmartquantError("a codebook option cannot be symmetric")

    @property
    def label(self) -> str:
        if self.kind == "codebook":
            return f"lut g{self.group_size} {self.scale_format}"
        return (f"{'sym' if self.symmetric else 'asym'} g{self.group_size} {self.scale_format}"
                f"{' clip' if self.clip else ''}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "TensorOption":
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in d.items() if k in fields})
        except TypeError as exc:
            raise SmartquantError(f"recipe option {d!r} is malformed ({exc})") from None

    def quantize(self, weight: np.ndarray, views, sensitivity: np.ndarray | None = None):
        """QuantizedTensor (uniform) or CodebookTensor of `weight` tuned for `views`."""
        fmt_scale = SCALE_NAMES[self.scale_format]
        if self.kind == "codebook":
            return CodebookQuantizer(self.group_size, fmt_scale, anchors=views).quantize(weight, sensitivity)
        fmt = StoreFormat(self.group_size, self.symmetric, fmt_scale)
        return (NestedMSEClip(fmt, views=views, grid=CLIP_GRID) if self.clip else NestedRTN(fmt)).quantize(weight)


def option_grid(kinds=KINDS, group_sizes=GROUP_SIZES, scale_formats=("fp16",),
                symmetric=(False, True), clip=(True,)) -> list[TensorOption]:
    """Every combination of the given choices (codebooks ignore `symmetric` and `clip`)."""
    options = []
    for kind, g, scale in itertools.product(kinds, group_sizes, scale_formats):
        if kind == "codebook":
            options.append(TensorOption("codebook", g, False, scale, False))
        else:
            options += [TensorOption("uniform", g, sym, scale, c) for sym in symmetric for c in clip]
    return options


def option_lines(shape, option: TensorOption, k: int) -> int:
    """DRAM lines a full read of a tensor of `shape` at view k fetches: plane lines of
    the padded tensor, its metadata lines and (codebook) the view-k table lines."""
    out, cols = shape
    padded_in = -(-cols // option.group_size) * option.group_size
    blocks = -(-out * padded_in // BLOCK_WEIGHTS)
    meta_lines = -(-blocks * BLOCK_WEIGHTS // option.group_size // GROUPS_PER_META_LINE)
    return blocks * k + meta_lines + (codebook_lines_read(k) if option.kind == "codebook" else 0)


def option_bits(shape, option: TensorOption, k: int) -> float:
    """`option_lines` as bits per real weight."""
    return option_lines(shape, option, k) * LINE_BITS / (shape[0] * shape[1])


def output_error(weight: np.ndarray, approx: np.ndarray, hessian: np.ndarray | None) -> float:
    """Relative output error tr(dW H dW^T) / tr(W H W^T) (H = I when None)."""
    delta = np.asarray(approx, np.float64) - weight
    if hessian is None:
        return float(np.square(delta).sum() / max(np.square(weight).sum(), 1e-300))
    return float(np.sum((delta @ hessian) * delta) / max(np.sum((weight @ hessian) * weight), 1e-300))


@dataclasses.dataclass
class Recipe:
    """Per-tensor options for serving at view `bits`, with the measured figures."""
    bits: int
    budget: float                                   #: bits per weight incl. metadata
    views: tuple[int, ...]                          #: views the quantizers tune for
    options: dict[str, TensorOption]
    measured: dict[str, dict] = dataclasses.field(default_factory=dict)   #: name -> bits, error, weights

    def average_bits(self) -> float | None:
        if not self.measured:
            return None
        total = sum(m["weights"] for m in self.measured.values())
        return sum(m["bits_per_weight"] * m["weights"] for m in self.measured.values()) / total

    def to_json(self) -> dict:
        return {"format": RECIPE_FORMAT, "version": RECIPE_VERSION, "bits": self.bits, "budget": self.budget,
                "views": list(self.views), "average_bits": self.average_bits(),
                "tensors": [{"name": n, **o.to_json(), **self.measured.get(n, {})} for n, o in self.options.items()]}

    @classmethod
    def from_json(cls, d: dict) -> "Recipe":
        if not isinstance(d, dict) or d.get("format") != RECIPE_FORMAT:
            raise SmartquantError(f"not a {RECIPE_FORMAT} file")
        if d.get("version") != RECIPE_VERSION:
            raise SmartquantError(f"unsupported recipe version {d.get('version')!r} (this tool reads {RECIPE_VERSION})")
        try:
            tensors = d["tensors"]
            options = {str(t["name"]): TensorOption.from_json(t) for t in tensors}
            measured = {str(t["name"]): {k: t[k] for k in ("bits_per_weight", "error", "weights") if k in t}
                        for t in tensors}
            views = tuple(int(v) for v in d["views"])
            bits = int(d["bits"])
            budget = float(d["budget"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SmartquantError(f"recipe is malformed ({exc!r})") from None
        if not 1 <= bits <= CODE_BITS or not views or not all(1 <= v <= CODE_BITS for v in views):
            raise SmartquantError(f"recipe bits {bits} / views {views} must be in 1..{CODE_BITS}")
        return cls(bits, budget, views, options, {n: m for n, m in measured.items() if len(m) == 3})

    def table_rows(self) -> list[list]:
        return [[n, o.label, round(self.measured[n]["bits_per_weight"], 4), self.measured[n]["error"]]
                if n in self.measured else [n, o.label, None, None] for n, o in self.options.items()]


TABLE_HEADER = ("tensor", "option", "bits/weight", "output error")


def write_recipe(recipe: Recipe, path) -> None:
    write_json(path, recipe.to_json())


def read_recipe(path) -> Recipe:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmartquantError(f"{path}: unreadable recipe ({exc})") from None
    try:
        return Recipe.from_json(data)
    except SmartquantError as exc:
        raise SmartquantError(f"{path}: {exc}") from None


def measure_options(weights: dict[str, np.ndarray], options, bits: int, views,
                    hessians: dict[str, np.ndarray] | None = None, progress: bool = True) -> dict:
    """name -> [(option, DRAM lines at view `bits`, output error)] for every option."""
    hessians = hessians or {}
    table = {}
    pairs = [(n, o) for n in weights for o in options]
    for name, option in tqdm(pairs, desc="recipe options", unit="option", disable=not progress or None,
                             file=sys.stderr):
        w = np.asarray(weights[name], np.float64)
        h = hessians.get(name)
        with about_tensor(name):
            q = option.quantize(w, views, None if h is None else np.diag(h))
        table.setdefault(name, []).append((option, option_lines(w.shape, option, bits),
                                           output_error(w, q.dequantize(bits), h)))
    return table


def choose(measured: dict, budget_lines: int) -> dict[str, tuple]:
    """name -> (option, lines, error) with the least summed error in at most `budget_lines`
    DRAM lines: exact, by dynamic programming over the line count (multiple-choice knapsack;
    costs are whole lines)."""
    best = np.zeros(budget_lines + 1)            # least error of the tensors so far within c lines
    picks = []
    for rows in measured.values():
        new = np.full(budget_lines + 1, np.inf)
        arg = np.zeros(budget_lines + 1, dtype=np.int64)
        for i, (_, lines, error) in enumerate(rows):
            if lines > budget_lines:
                continue
            candidate = np.full(budget_lines + 1, np.inf)
            candidate[lines:] = best[:budget_lines + 1 - lines] + error
            better = candidate < new
            new[better], arg[better] = candidate[better], i
        best = new
        picks.append(arg)
    if not np.isfinite(best[budget_lines]):
        cheapest = sum(min(r[1] for r in rows) for rows in measured.values())
        raise SmartquantError(f"the budget ({budget_lines} lines) is below the cheapest recipe ({cheapest} lines)")
    choice, c = {}, budget_lines
    for (name, rows), arg in zip(reversed(measured.items()), reversed(picks)):
        choice[name] = rows[arg[c]]
        c -= choice[name][1]
    return choice


def search(weights: dict[str, np.ndarray], bits: int, budget: float, options=None, views=None,
           hessians: dict[str, np.ndarray] | None = None, progress: bool = True) -> Recipe:
    """The recipe with the least summed output error at view `bits` within `budget`."""
    if not 1 <= bits <= CODE_BITS:
        raise SmartquantError(f"bits {bits} outside 1..{CODE_BITS}")
    views = tuple(views or (bits,))
    measured = measure_options(weights, options or option_grid(), bits, views, hessians, progress)
    return best_recipe(measured, {n: int(np.size(w)) for n, w in weights.items()}, bits, budget, views)


def best_recipe(measured: dict, sizes: dict[str, int], bits: int, budget: float, views,
                kinds=KINDS) -> Recipe:
    """The least-error recipe among the `measure_options` rows of the given `kinds`."""
    rows = {n: [r for r in measured[n] if r[0].kind in kinds] for n in measured}
    choice = choose(rows, int(budget * sum(sizes.values()) // LINE_BITS))
    return Recipe(bits, budget, tuple(views), {n: choice[n][0] for n in measured},
                  {n: {"bits_per_weight": choice[n][1] * LINE_BITS / sizes[n], "error": choice[n][2],
                       "weights": sizes[n]} for n in measured})


def apply(weights: dict[str, np.ndarray], recipe: Recipe, hessians: dict[str, np.ndarray] | None = None,
          progress: bool = True) -> dict:
    """name -> quantized tensor (QuantizedTensor or CodebookTensor) per the recipe."""
    missing = [n for n in weights if n not in recipe.options]
    if missing:
        raise SmartquantError(f"recipe has no option for {len(missing)} tensors, e.g. {missing[0]!r}")
    hessians = hessians or {}
    out = {}
    for name in tqdm(weights, desc="quantize (recipe)", unit="tensor", disable=not progress or None, file=sys.stderr):
        h = hessians.get(name)
        with about_tensor(name):
            out[name] = recipe.options[name].quantize(np.asarray(weights[name], np.float64), recipe.views,
                                                      None if h is None else np.diag(h))
    return out
