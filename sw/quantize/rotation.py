"""Incoherence by rotation: the store holds W·H for an orthogonal H over the input
dimension, and the host multiplies the activations by H before the layer:
y = W x = (W H)(Hᵀ x), i.e. for row-vector activations `x @ Wᵀ = (x @ H) @ (W H)ᵀ`.

H is a signed block Hadamard matrix, rebuilt from four numbers the manifest declares
(docs/FORMATS.md, "Rotation"): `size` n (= the weight's `in`), `block` b (b divides n),
`seed` and the sign rule, with

    H = diag(s) · blockdiag(A_b / √b, ..., A_b / √b)        (n / b blocks)

- `A_b` is a b×b ±1 Hadamard matrix: Sylvester's `A_1 = [1]`, `A_2m = [[A_m, A_m],
  [A_m, -A_m]]` (so `A_b[i, j] = (-1)^popcount(i & j)`) when b is a power of two, and
  `kron(P_12, A_(b/12))` when b = 12·2^a, with P_12 the Paley (type I, q = 11) matrix
  `I + S`, `S = [[0, 1ᵀ], [-1, Q]]`, `Q[i, j] = χ(j - i)` the quadratic character mod 11
  (residues 1, 3, 4, 5, 9);
- `s_i = -1` if the top bit of the i-th SplitMix64 output (i = 0, 1, ..., state starting at
  `seed`) is 1, else +1 (sign rule "splitmix64-msb"; no numpy RNG, so any reader can
  rebuild it).

The default block is the largest such order dividing n (384 = 12·32 and 1536 = 12·128
get one full-size Hadamard: the larger the block, the more a weight outlier is spread).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ...errors import SmartquantError

HADAMARD = "hadamard"
ROTATION_KINDS = (HADAMARD,)
SIGN_RULE = "splitmix64-msb"
SEED_LIMIT = 1 << 64
PALEY_ORDER = 12
_QUADRATIC_RESIDUES_11 = {1, 3, 4, 5, 9}
_MASK64 = SEED_LIMIT - 1


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def is_hadamard_order(block: int) -> bool:
    """True for the block sizes `hadamard_matrix` builds: 2^a or 12·2^a, at least 2."""
    return block >= 2 and (_power_of_two(block) or (block % PALEY_ORDER == 0 and _power_of_two(block // PALEY_ORDER)))


def largest_block(size: int) -> int:
    """The largest Hadamard order (`is_hadamard_order`) dividing `size`."""
    best = max((b for b in _orders_up_to(size) if size % b == 0), default=0)
    if not best:
        raise SmartquantError(f"in={size} has no Hadamard block (2^a or 12*2^a, at least 2) dividing it")
    return best


def _orders_up_to(size: int):
    b = 2
    while b <= size:
        yield b
        if PALEY_ORDER * b // 2 <= size:
            yield PALEY_ORDER * b // 2
        b *= 2


def paley_12() -> np.ndarray:
    """The 12x12 Paley type I Hadamard matrix (±1, float64)."""
    q = PALEY_ORDER - 1
    chi = [0] + [1 if d in _QUADRATIC_RESIDUES_11 else -1 for d in range(1, q)]
    s = np.zeros((PALEY_ORDER, PALEY_ORDER))
    s[0, 1:], s[1:, 0] = 1, -1
    s[1:, 1:] = [[chi[(j - i) % q] for j in range(q)] for i in range(q)]
    return np.eye(PALEY_ORDER) + s


def hadamard_matrix(block: int) -> np.ndarray:
    """The ±1 Hadamard matrix A_b of the module docstring (float64, b x b)."""
    if not is_hadamard_order(block):
        raise SmartquantError(f"Hadamard block {block} is not 2^a or 12*2^a (at least 2)")
    sylvester = block if _power_of_two(block) else block // PALEY_ORDER
    i = np.arange(sylvester)
    parity = np.array([bin(v).count("1") & 1 for v in range(sylvester)])
    a = 1.0 - 2.0 * parity[i[:, None] & i[None, :]]
    return a if _power_of_two(block) else np.kron(paley_12(), a)


def splitmix64(seed: int, count: int) -> list[int]:
    """The first `count` outputs of SplitMix64 (Steele et al. 2014) from state `seed`."""
    state, out = seed & _MASK64, []
    for _ in range(count):
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        out.append(z ^ (z >> 31))
    return out


def signs(seed: int, count: int) -> np.ndarray:
    """±1 (float64) per input: -1 where the SplitMix64 output's bit 63 is set."""
    return np.array([-1.0 if z >> 63 else 1.0 for z in splitmix64(seed, count)])


@functools.lru_cache(maxsize=16)
def _matrix(size: int, block: int, seed: int) -> np.ndarray:
    a = hadamard_matrix(block) / np.sqrt(block)
    h = np.kron(np.eye(size // block), a)
    h *= signs(seed, size)[:, None]
    h.setflags(write=False)
    return h


@functools.lru_cache(maxsize=16)
def _torch_matrix(size: int, block: int, seed: int, dtype):
    import torch
    return torch.tensor(_matrix(size, block, seed), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Rotation:
    """H over an input dimension of `size`: signed block Hadamard (module docstring)."""
    size: int
    block: int
    seed: int
    kind: str = HADAMARD
    sign_rule: str = SIGN_RULE

    def __post_init__(self):
        if self.kind not in ROTATION_KINDS:
            raise SmartquantError(f"rotation kind {self.kind!r} is not one of {', '.join(ROTATION_KINDS)}")
        if self.sign_rule != SIGN_RULE:
            raise SmartquantError(f"rotation sign rule {self.sign_rule!r} is not {SIGN_RULE!r}")
        if not is_hadamard_order(self.block) or self.size % self.block:
            raise SmartquantError(f"rotation block {self.block} is not a Hadamard order (2^a or 12*2^a) "
                                  f"dividing size {self.size}")
        if not 0 <= self.seed < SEED_LIMIT:
            raise SmartquantError(f"rotation seed {self.seed} is not in 0..2^64-1")

    @classmethod
    def for_size(cls, size: int, seed: int = 0) -> "Rotation":
        """The default rotation of an input dimension: the largest Hadamard block."""
        return cls(size, largest_block(size), seed)

    def matrix(self) -> np.ndarray:
        """H (size x size, float64, read-only)."""
        return _matrix(self.size, self.block, self.seed)

    def rotate_weight(self, weight) -> np.ndarray:
        """W·H (float64) of a weight (out, size): what the store holds."""
        return np.asarray(weight, dtype=np.float64) @ self.matrix()

    def unrotate_weight(self, rotated) -> np.ndarray:
        """W = (W·H)·Hᵀ (float64)."""
        return np.asarray(rotated, dtype=np.float64) @ self.matrix().T

    def rotate_inputs(self, x):
        """x·H of activations (..., size), a torch tensor or numpy array of x's dtype."""
        if isinstance(x, np.ndarray):
            return x @ self.matrix().astype(x.dtype)
        return x @ _torch_matrix(self.size, self.block, self.seed, x.dtype)

    def to_json(self) -> dict:
        return {"kind": self.kind, "size": self.size, "block": self.block, "seed": self.seed,
                "signs": self.sign_rule}

    @classmethod
    def from_json(cls, d: dict) -> "Rotation":
        """The rotation of a manifest row that `validate.check_rotation` accepted."""
        return cls(size=d["size"], block=d["block"], seed=d["seed"], kind=d["kind"], sign_rule=d["signs"])


def parse_rotate(text: str | None) -> int | None:
    """`--rotate` value: None or "none" -> None; "hadamard" -> seed 0; "hadamard:SEED" -> SEED."""
    if text is None or text == "none":
        return None
    kind, _, seed = text.partition(":")
    if kind != HADAMARD:
        raise SmartquantError(f"rotation {text!r} is not 'none', 'hadamard' or 'hadamard:SEED'")
    try:
        value = int(seed) if seed else 0
    except ValueError:
        raise SmartquantError(f"rotation seed {seed!r} is not an integer") from None
    if not 0 <= value < SEED_LIMIT:
        raise SmartquantError(f"rotation seed {value} is not in 0..2^64-1")
    return value


def rotations_for(weights: dict[str, np.ndarray], seed: int) -> dict[str, Rotation]:
    """The default rotation of every weight's input dimension, all from one seed (weights
    sharing an input dimension share H, so their rotated activations can be shared)."""
    out = {}
    for name, weight in weights.items():
        try:
            out[name] = Rotation.for_size(int(np.shape(weight)[1]), seed)
        except SmartquantError as exc:
            raise SmartquantError(f"tensor {name!r}: cannot rotate: {exc}") from None
    return out


def rotate_weights(weights: dict[str, np.ndarray], rotations: dict[str, Rotation]) -> dict[str, np.ndarray]:
    """W·H (float64) of each weight with a rotation; the others as they are."""
    return {name: rotations[name].rotate_weight(w) if name in rotations else w
            for name, w in weights.items()}
