"""Typed configuration of prepare: QCFS levels and sites, MLP BatchNorm, spike masks, the event-driven
route's sites."""
from __future__ import annotations

from dataclasses import dataclass, field

from snnconvert.checks import check_fields
from snnconvert.errors import ArgumentError, SnnConvertError
from snnconvert.graph.ops import ACTIVATION_NAMES, RELU_FAMILY

#: Random Spike Masking targets (sites in :mod:`snnconvert.prepare.rsm`): Q, K and the attention
#: scores of every spiking attention, ``sa`` (all three), the MLP hidden layer, CNN activations.
MASK_TARGETS = ("q", "k", "attn", "sa", "mlp", "conv")


@dataclass(frozen=True)
class MaskConfig:
    """Where and how much Random Spike Masking to apply.

    Attributes:
        ratios: masking ratio p per target (see :data:`MASK_TARGETS`).
        blocks: mask only the first ``blocks`` owners of each target in model order (transformer
            blocks for ``q``/``k``/``attn``/``sa``/``mlp``, activations for ``conv``); None: all.
        seed: seed of the first mask; each further mask gets the next seed.
    """

    ratios: dict[str, float] = field(default_factory=dict)
    blocks: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self)
        unknown = sorted(set(self.ratios) - set(MASK_TARGETS))
        if unknown:
            raise SnnConvertError(f"unknown masking targets {unknown}; choose from {', '.join(MASK_TARGETS)}")
        bad = {t: p for t, p in self.ratios.items() if not 0.0 <= p < 1.0}
        if bad:
            raise SnnConvertError(f"masking ratios must be in [0, 1), got {bad}")
        if self.blocks is not None and self.blocks < 0:
            raise ArgumentError(f"blocks must be >= 0, got {self.blocks}")

    def describe(self) -> str:
        """``attn 0.75, mlp 0.5 (first 2 blocks)``."""
        where = f" (first {self.blocks} blocks)" if self.blocks is not None else ""
        return ", ".join(f"{t} {p:g}" for t, p in self.ratios.items()) + where


#: where ``prepare`` puts QCFS: ``mst`` (every activation, plus the Masked Spiking Transformer's
#: sites: after a residual branch's norm, on Q, K, V, scores and attention output, after a branch's
#: last projection, on the operands and output of other products) or ``activations`` only
SITE_POLICIES = ("mst", "activations")
LAYERNORM_CHOICES = ("batchnorm", "keep")
MAX_POOL_CHOICES = ("keep", "avg")
#: activations that stay floating-point ops (expectation-compensated) unless asked otherwise: gates
DEFAULT_KEPT_ACTIVATIONS = ("sigmoid", "tanh", "softsign")


@dataclass(frozen=True)
class PrepareConfig:
    """How ``prepare`` rewrites an ANN.

    Attributes:
        levels: QCFS quantization levels L (the SNN matches the QCFS ANN exactly at T = L on
            constant input, and approaches it as T grows).
        threshold: initial λ of every new QCFS (calibration usually replaces it).
        sites: where QCFS goes (:data:`SITE_POLICIES`).
        layernorm: ``batchnorm`` (the MST recipe: LayerNorm → BatchNorm over channels, γ/β kept,
            statistics calibrated; it folds or runs as a per-channel affine map) or ``keep``
            (LayerNorm stays, expectation-compensated in floating point: exact, not spike-driven).
        keep_activations: activations (by name: ``sigmoid``, ``silu`` …) left as floating-point
            ops instead of becoming QCFS; the others become QCFS, which for other than the ReLU
            family (ReLU, ReLU6, hard sigmoid, clamps) changes the function (reported).
        max_pool: ``keep`` (max-pooling stays, compensated in the SNN: the running max of running
            means) or ``avg`` (replaced by average pooling: changes the function, reported).
        mlp_batchnorm: add a BatchNorm after each Linear of the transformer MLPs, before its
            QCFS (the MST variant; they fold into the Linears at conversion).
        masks: Random Spike Masking after the QCFS sites it names (kept by conversion); a
            checkpoint's config carries them, so a masked model reloads masked.
        spike_probabilities: a QCFS (capped at 1) on every softmax output that a product reads
            (the attention probabilities, as SpikeZIP-TF and STA quantize them), so that
            attention·V becomes a product of spikes instead of MACs on real values: True (a model
            without such a softmax is refused), None (where the model has them: the event-driven
            route's default; the report says when it has none) or False.
        spike_streams: a signed QCFS (values in [−λ, λ]) on every real value a weight layer reads
            that is not a sum of spikes (a linear bottleneck's residual stream into the next
            expansion, a kept norm's output), so the layer is driven by spikes instead of MACs:
            True, None or False as for ``spike_probabilities``.
        stream_levels: L of those signed sites (None: ``levels``); fewer levels send fewer spikes
            per value (a burst of up to L), so a stream costs less than the MACs it replaces.
    """

    levels: int = 8
    threshold: float = 4.0
    sites: str = "mst"
    layernorm: str = "batchnorm"
    keep_activations: tuple[str, ...] = DEFAULT_KEPT_ACTIVATIONS
    max_pool: str = "keep"
    mlp_batchnorm: bool = False
    masks: MaskConfig | None = None
    spike_probabilities: bool | None = False
    spike_streams: bool | None = False
    stream_levels: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.masks, dict):  # from a checkpoint's JSON
            object.__setattr__(self, "masks", MaskConfig(**self.masks))
        object.__setattr__(self, "keep_activations", tuple(self.keep_activations))
        check_fields(self)
        if self.levels < 1:
            raise ArgumentError(f"levels must be >= 1, got {self.levels}")
        if self.stream_levels is not None and self.stream_levels < 1:
            raise ArgumentError(f"stream_levels must be >= 1, got {self.stream_levels}")
        if self.threshold <= 0:
            raise ArgumentError(f"threshold must be > 0, got {self.threshold}")
        unknown = sorted(set(self.keep_activations) - set(ACTIVATION_NAMES))
        if unknown:
            raise SnnConvertError(f"unknown activations {unknown} to keep; choose from {', '.join(ACTIVATION_NAMES)}")
        for name, value, choices in (("sites", self.sites, SITE_POLICIES),
                                     ("layernorm", self.layernorm, LAYERNORM_CHOICES),
                                     ("max_pool", self.max_pool, MAX_POOL_CHOICES)):
            if value not in choices:
                raise SnnConvertError(f"{name} must be one of {', '.join(choices)}, got {value!r}")

    @classmethod
    def calibration_only(cls, levels: int = 8, **overrides) -> PrepareConfig:
        """The preparation of an ANN that will not be trained: QCFS only where the ANN has
        ReLU-family activations (ReLU, ReLU6 with its cap, hard sigmoid, clamps: exact up to
        quantization), every other activation and every LayerNorm kept as floating-point ops,
        no MST sites (they change the function; training would have to win it back)."""
        settings = dict(levels=levels, sites="activations", layernorm="keep",
                        keep_activations=tuple(n for n in ACTIVATION_NAMES if n not in RELU_FAMILY))
        return cls(**{**settings, **overrides})
