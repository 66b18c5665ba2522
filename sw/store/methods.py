"""Quantization methods of `smartquant quantize --method`: how each tensor's codes,
scales and zeros are chosen, and the calibration the PTQ methods need.

| method | quantizer | calibration |
|---|---|---|
| `rtn` | `NestedRTN` (per-group min/max, 8-bit round to nearest) | - |
| `mse` | `NestedMSEClip` (clipping search over the views) | - |
| `gptq`, `gpfq` | `GPTQ` / `GPFQ` by incremental upscaling over the views, `NestedMSEClip` groups | yes |
| `axe-gptq`, `axe-gpfq` | the same with the AXE accumulator constraint on every view | yes |
| `joint` | `JointGPTQ`: one pass, codes and feedback under the multi-view objective, `JointClip` groups | yes |

Calibration of a layer is a (tokens, in) matrix of its inputs: for `minilm` from the
shipped PTQ calibration sentences (`ptq_model.calibration_inputs`), for a `.safetensors`
source from a file holding one such matrix per weight name (`read_calibration_inputs`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ...errors import SmartquantError, about_tensor
from ..quantize.axe import AccumulatorSpec, check_feasible
from ..quantize.gpfq import GPFQ
from ..quantize.gptq import GPTQ
from ..quantize.joint import JointClip, JointGPTQ, check_anchor, check_view_weights
from ..quantize.quantizer import NestedMSEClip, NestedRTN, QuantizedTensor, StoreFormat
from .sources import MINILM, read_safetensors

#: method name -> sequential quantizer class (None: a grid quantizer, no calibration)
SEQUENTIAL = {"rtn": None, "mse": None, "gptq": GPTQ, "gpfq": GPFQ, "axe-gptq": GPTQ, "axe-gpfq": GPFQ,
              "joint": JointGPTQ}
METHODS = tuple(SEQUENTIAL)
AXE_METHODS = ("axe-gptq", "axe-gpfq")
#: error feedback of `joint`: one working copy per view, or the weighted-mean reconstruction's error
JOINT_FEEDBACK = ("per-view", "mean")
#: the method `smartquant quantize` uses on a .safetensors source when none is named: it needs no calibration
DEFAULT_METHOD = "mse"
#: the views a method optimises when none are named
DEFAULT_VIEWS = (3, 4, 8)
#: Hessian damping of the calibrated methods when none is named: the fraction of the mean
#: Hessian diagonal added to its diagonal (reference GPTQ's percdamp)
DEFAULT_DAMPING = 0.01


@dataclasses.dataclass(frozen=True)
class SourceDefaults:
    """What `smartquant quantize` (and the demo) use for each option not given, per source."""
    method: str = DEFAULT_METHOD
    views: tuple[int, ...] = DEFAULT_VIEWS
    view_weights: tuple[float, ...] | None = None   #: joint's lambda_k, with the default views only
    group_size: int = StoreFormat().group_size
    rotate: str | None = None
    damping: float | None = None                    #: of the default method (None: DEFAULT_DAMPING)
    act_order: bool = False                         #: of the default method

    def settings(self) -> "MethodSettings":
        """MethodSettings with every default (asymmetric, fp16 scales)."""
        return MethodSettings(self.method, StoreFormat(self.group_size), self.views, self.view_weights,
                              damping=self.damping, act_order=self.act_order)


#: MiniLM (shipped calibration sentences): the configuration that meets the any-precision
#: targets, nesting gaps included, on the hold-out pairs (docs/PTQ.md): joint, rotated, G = 32,
#: views 3, 4, 8 with lambda 1, 1, 3, damping 0.3, activation order
MINILM_DEFAULTS = SourceDefaults(method="joint", views=(3, 4, 8), view_weights=(1.0, 1.0, 3.0),
                                 group_size=32, rotate="hadamard", damping=0.3, act_order=True)


def defaults_for(source: str) -> SourceDefaults:
    """The option defaults of quantizing `source` (`minilm` or a .safetensors path)."""
    return MINILM_DEFAULTS if source == MINILM else SourceDefaults()


@dataclasses.dataclass(frozen=True)
class MethodSettings:
    """Everything that decides the codes of an image besides the weights and calibration."""
    method: str = DEFAULT_METHOD
    fmt: StoreFormat = StoreFormat()
    views: tuple[int, ...] = DEFAULT_VIEWS
    view_weights: tuple[float, ...] | None = None      #: lambda_k of `joint`, one per view
    accumulator: AccumulatorSpec | None = None          #: AXE methods only
    joint_feedback: str | None = None                   #: joint: "per-view" (None: the default) or "mean"
    joint_anchor: int | None = None                     #: joint: bits fixed by a first pass over the views <= it
    act_order: bool = False                             #: calibrated methods: columns by decreasing H_jj
    damping: float | None = None                        #: calibrated methods (None: DEFAULT_DAMPING)

    def __post_init__(self):
        if self.method not in SEQUENTIAL:
            raise SmartquantError(f"unknown method {self.method!r} (one of {', '.join(METHODS)})")
        views, weights = check_view_weights(self.views, self.view_weights)
        if self.view_weights is not None and self.method != "joint":
            raise SmartquantError(f"view weights belong to the joint method, not {self.method}")
        object.__setattr__(self, "views", views)
        object.__setattr__(self, "view_weights", weights if self.method == "joint" else None)
        if self.joint_feedback is not None and self.method != "joint":
            raise SmartquantError(f"--joint-feedback belongs to the joint method, not {self.method}")
        if self.method == "joint":
            feedback = self.joint_feedback or JOINT_FEEDBACK[0]
            if feedback not in JOINT_FEEDBACK:
                raise SmartquantError(f"joint feedback {feedback!r} is not one of {', '.join(JOINT_FEEDBACK)}")
            object.__setattr__(self, "joint_feedback", feedback)
            check_anchor(views, self.joint_anchor, feedback == "per-view")
        elif self.joint_anchor is not None:
            raise SmartquantError(f"--joint-anchor belongs to the joint method, not {self.method}")
        if self.act_order and SEQUENTIAL[self.method] is None:
            raise SmartquantError(f"--act-order belongs to the calibrated methods, not {self.method}")
        object.__setattr__(self, "damping", self.checked_damping())
        if (self.accumulator is not None) != (self.method in AXE_METHODS):
            raise SmartquantError(f"{self.method}: accumulator options (--accumulator-bits, --input-bits) "
                                  + ("are required" if self.method in AXE_METHODS else "belong to the AXE methods"))
        if self.accumulator is not None and not self.fmt.symmetric:
            raise SmartquantError(f"{self.method} needs a symmetric format (--format sym): with a free zero "
                                  f"point a refined view can outgrow the coarse one")

    @property
    def calibrated(self) -> bool:
        return SEQUENTIAL[self.method] is not None

    def checked_damping(self) -> float | None:
        """The damping of a calibrated method (DEFAULT_DAMPING when none is named), in [0, 1);
        None for the others, which refuse one."""
        if not self.calibrated:
            if self.damping is not None:
                raise SmartquantError(f"--damping belongs to the calibrated methods, not {self.method}")
            return None
        damping = DEFAULT_DAMPING if self.damping is None else float(self.damping)
        if not 0.0 <= damping < 1.0:
            raise SmartquantError(f"damping {damping:g} must be a fraction of the mean Hessian diagonal in [0, 1)")
        return damping

    def grid(self):
        """The group-grid quantizer (scales and zeros) of the method."""
        if self.method == "rtn":
            return NestedRTN(self.fmt)
        if self.method == "joint":
            return JointClip(self.fmt, self.views, self.view_weights)
        return NestedMSEClip(self.fmt, views=self.views)

    def check_feasible(self, weights: dict[str, np.ndarray]) -> None:
        """Before any work: AXE's tile and P fit every tensor's coarsest named view."""
        if self.accumulator is None:
            return
        for name, weight in weights.items():
            with about_tensor(name):
                cols = np.shape(weight)[1]
                size = self.fmt.group_size
                tile = self.accumulator.tile_for(-(-cols // size) * size, size)
                check_feasible(self.accumulator, self.views, tile)

    def info(self) -> dict:
        """Manifest `info` fields of the method (docs/FORMATS.md section 3)."""
        out = {"method": self.method, "views": list(self.views)}
        if self.view_weights is not None:
            out["view_weights"] = list(self.view_weights)
            out["joint_feedback"] = self.joint_feedback
            if self.joint_anchor is not None:
                out["joint_anchor"] = self.joint_anchor
        if self.act_order:
            out["act_order"] = True
        if self.damping is not None:
            out["damping"] = self.damping
        if self.accumulator is not None:
            acc = self.accumulator
            out["accumulator"] = {"bits": acc.accumulator_bits, "input_bits": acc.input_bits,
                                  "signed_inputs": acc.signed_inputs, "tile": acc.tile, "views": list(self.views)}
        return out


class CalibratedQuantizer:
    """A sequential PTQ method applied tensor by tensor with each tensor's calibration inputs."""

    def __init__(self, settings: MethodSettings, calibration: dict[str, np.ndarray]):
        self.settings, self.fmt, self.calibration = settings, settings.fmt, calibration

    def quantize_named(self, name: str, weight: np.ndarray) -> QuantizedTensor:
        if name not in self.calibration:        # no input reaches it (minilm's pooler): the grid alone
            return self.settings.grid().quantize(weight, progress=name)
        return self.quantize_on(weight, self.inputs(name))

    def inputs(self, name: str) -> np.ndarray:
        """The (tokens, in) calibration inputs of layer `name`."""
        return self.calibration[name]

    def quantize_on(self, weight: np.ndarray, inputs) -> QuantizedTensor:
        """`weight` quantized by the method with `inputs` as its calibration."""
        s = self.settings
        layer = SEQUENTIAL[s.method](np.shape(weight)[1])
        layer.add_batch(inputs)
        if s.method == "joint":
            return layer.quantize(weight, views=s.views, view_weights=s.view_weights, grid=s.grid(),
                                  per_view=s.joint_feedback == "per-view", anchor=s.joint_anchor,
                                  act_order=s.act_order, percdamp=s.damping)
        return layer.quantize(weight, views=s.views, grid=s.grid(), accumulator=s.accumulator, act_order=s.act_order,
                              percdamp=s.damping)


def make_quantizer(settings: MethodSettings, calibration: dict | None):
    """The quantizer `model_store.quantize_model` runs for `settings`."""
    if not settings.calibrated:
        return settings.grid()
    return CalibratedQuantizer(settings, calibration)


def check_calibration(calibration: dict[str, np.ndarray], weights: dict[str, np.ndarray], where: str) -> None:
    """Every weight has a (tokens, in) matrix of finite inputs of its width, and nothing else is there."""
    for name in calibration:
        if name not in weights:
            raise SmartquantError(f"{where}: tensor {name!r} is not a weight of the source")
    for name, weight in weights.items():
        if name not in calibration:
            raise SmartquantError(f"{where}: no calibration inputs for tensor {name!r}")
        inputs = np.asarray(calibration[name])
        width = np.shape(weight)[1]
        if inputs.ndim != 2 or inputs.shape[1] != width or inputs.shape[0] < 1:
            raise SmartquantError(f"{where}: calibration inputs of {name!r} have shape {tuple(inputs.shape)}, "
                                  f"not (tokens, {width}) for a weight of in={width}")
        if not np.isfinite(inputs).all():
            raise SmartquantError(f"{where}: calibration inputs of {name!r} hold NaN or infinite values")


def read_calibration_inputs(path: str | Path, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The calibration file of a `.safetensors` source: per weight name a (tokens, in) matrix."""
    inputs = read_safetensors(Path(path))
    check_calibration(inputs, weights, str(path))
    return inputs


def minilm_calibration_texts(sentences: int | None) -> list[str]:
    """`sentences` of the shipped PTQ calibration sentences (all when None)."""
    from ..infer.evalset import load_ptq_calibration
    return load_ptq_calibration(limit=sentences)


def minilm_calibration(sentences: int | None) -> tuple[dict, dict]:
    """(name -> (tokens, in) inputs, info) of MiniLM's linear layers over `sentences` of the
    shipped PTQ calibration sentences (all when None).  The pooler is not on the sentence-embedding
    path (mean pooling): no input reaches it, and the info lists it as uncalibrated."""
    from ..infer.model import load_encoder
    from ..infer.ptq_model import calibration_inputs
    texts = minilm_calibration_texts(sentences)
    inputs = {name: x.numpy() for name, x in calibration_inputs(load_encoder(MINILM), texts).items()}
    tokens = next(iter(inputs.values())).shape[0]
    return inputs, {"sentences": len(texts), "tokens": int(tokens)}


def check_minilm_calibration(calibration: dict, weights: dict) -> list[str]:
    """`check_calibration` for the weights the forward pass reaches; the names of the others."""
    reached = {n: w for n, w in weights.items() if n in calibration}
    check_calibration(calibration, reached, MINILM)
    return [n for n in weights if n not in calibration]


def load_calibration_for(spec: str, settings: MethodSettings, weights: dict, sentences: int | None,
                         inputs_file: str | None, sequential: bool = False) -> tuple[dict | None, dict | None]:
    """(calibration, manifest info) for a source: what the method needs, else an error.
    `sequential` (minilm only: it needs the model to run) is recorded in the info; the
    one-pass inputs returned then say which layers the forward pass reaches."""
    if not settings.calibrated:
        if inputs_file is not None or sentences is not None or sequential:
            raise SmartquantError(f"method {settings.method} uses no calibration (--calibration, "
                                  f"--calibration-inputs, --sequential-calibration are for "
                                  f"{', '.join(m for m in METHODS if SEQUENTIAL[m])})")
        return None, None
    if spec == MINILM:
        if inputs_file is not None:
            raise SmartquantError("minilm calibrates on its shipped sentences (--calibration N), "
                                  "not --calibration-inputs")
        calibration, info = minilm_calibration(sentences)
        return calibration, {**info, "uncalibrated": check_minilm_calibration(calibration, weights),
                             **({"sequential": True} if sequential else {})}
    if sequential:
        raise SmartquantError("--sequential-calibration runs the model on its calibration sentences: "
                              "minilm only (a .safetensors source has fixed --calibration-inputs)")
    if sentences is not None:
        raise SmartquantError("--calibration N counts minilm's shipped sentences; a .safetensors "
                              "source takes --calibration-inputs FILE")
    if inputs_file is None:
        raise SmartquantError(f"method {settings.method} needs calibration data: --calibration-inputs FILE "
                              f"(per weight name a (tokens, in) matrix of its inputs)")
    return read_calibration_inputs(inputs_file, weights), {"inputs": str(inputs_file)}


def rotate_calibration(calibration: dict | None, rotations: dict) -> dict | None:
    """Calibration inputs of rotated weights as their layers see them: x·H (y = (W·H)(x·H)ᵀ)."""
    if calibration is None:
        return None
    return {name: rotations[name].rotate_inputs(np.asarray(x)) if name in rotations else x
            for name, x in calibration.items()}
