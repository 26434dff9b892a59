"""Network, scheduler and model-card configurations: dataclasses that round-trip through model.json."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a JSON value to the type named by ``hint``, or raise ValueError saying where."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
        return from_dict(hint, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict and not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {type(value).__name__}")
    if origin is dict or hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def from_dict(cls: Type[T], data: Dict[str, Any], where: str = "") -> T:
    """Build dataclass ``cls`` from a dict; unknown keys and wrong types raise ValueError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"{where or cls.__name__}: {exc}") from None


def _positive(where: str, *values: int) -> None:
    if any(v < 1 for v in values):
        raise ValueError(f"{where} must be at least 1")


def _finite(where: str, value: float, low: float = -math.inf, high: float = math.inf) -> None:
    """``value`` is a finite number in [low, high], or ValueError naming ``where``."""
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        bounds = "" if (low, high) == (-math.inf, math.inf) else f" in [{low:g}, {high:g}]"
        raise ValueError(f"{where} must be a finite number{bounds}, not {value!r}")


ORIENTATION_AXES = ("RL", "AP", "SI")
DECODERS = ("plain", "spade")
# how the spade decoder doubles its size a level: MONAI's stride-2 transposed convolution (0.2.0), or
# nearest-neighbour ×2 then a 3×3×3 convolution, whose output for a constant input is constant (no latent-grid stamp)
UPSAMPLES = ("transposed", "resize")
# the UNet's SPADE blocks: MONAI's as is (γ/β instance-normalised over the field of view, bundles up to 0.2.0),
# or local (plain γ/β convolutions: a voxel's modulation depends only on the labels near it)
UNET_SPADES = ("monai", "local")
SCHEDULES = ("cosine", "linear_beta", "scaled_linear_beta", "sigmoid_beta")  # MONAI's NoiseSchedules


def check_orientation(code: str) -> None:
    """A three-letter code with one letter of each of R/L, A/P, S/I (RAS, LPS, PIR, ...)."""
    if not (
        isinstance(code, str)
        and len(code) == 3
        and sorted(next((i for i, pair in enumerate(ORIENTATION_AXES) if c in pair), 9) for c in code) == [0, 1, 2]
    ):
        raise ValueError(
            f"orientation {code!r} is not an orientation code: need one letter of each of R/L, A/P "
            "and S/I, such as RAS or LPS"
        )


def to_dict(obj: Any) -> Dict[str, Any]:
    """A JSON-ready dict of a dataclass (tuples become lists)."""
    return dataclasses.asdict(obj)


def fields_of(obj: Any) -> Dict[str, Any]:
    """A dataclass's fields by name, the values themselves (not copied, unlike ``to_dict``)."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclass
class AutoencoderConfig:
    """The VQ-GAN autoencoder (MONAI ``VQVAE``); each entry of ``channels`` halves the size once."""

    in_channels: int = 1
    channels: Tuple[int, ...] = (64, 128)
    num_res_layers: int = 2
    num_res_channels: Tuple[int, ...] = (64, 128)
    latent_channels: int = 8
    num_embeddings: int = 512
    commitment_cost: float = 0.25
    decay: float = 0.5  # EMA codebook decay (MONAI VQVAE default); 0.99 adapted too slowly here
    decoder: str = "plain"  # "plain": MONAI's VQ-VAE decoder; "spade": conditioned on the full-resolution label map
    spade_hidden_channels: int = 32  # width of the SPADE blocks' label branch ("spade" decoder)
    decoder_channels: Optional[Tuple[int, ...]] = None  # "spade" decoder widths (default: channels), one per level
    upsample: str = "transposed"  # "spade" decoder: one of UPSAMPLES

    @property
    def downsample_factor(self) -> int:
        return 2 ** len(self.channels)

    @property
    def label_conditioned(self) -> bool:
        """Whether decoding needs the label map (the SPADE decoder)."""
        return self.decoder == "spade"

    def __post_init__(self) -> None:
        if len(self.num_res_channels) != len(self.channels):
            raise ValueError("autoencoder: num_res_channels needs one entry per entry of channels")
        _positive(
            "autoencoder: in_channels, channels, num_res_layers, num_res_channels, latent_channels and num_embeddings",
            self.in_channels,
            *self.channels,
            self.num_res_layers,
            *self.num_res_channels,
            self.latent_channels,
            self.num_embeddings,
        )
        if not self.channels:
            raise ValueError("autoencoder.channels needs at least one entry")
        if self.decoder not in DECODERS:
            raise ValueError(f"autoencoder.decoder must be one of {', '.join(DECODERS)}, not {self.decoder!r}")
        _positive("autoencoder.spade_hidden_channels", self.spade_hidden_channels)
        if self.decoder_channels is not None:
            if self.decoder != "spade" or len(self.decoder_channels) != len(self.channels):
                raise ValueError(
                    "autoencoder.decoder_channels is for the spade decoder, one entry per entry of channels"
                )
            _positive("autoencoder.decoder_channels", *self.decoder_channels)
        if self.upsample not in UPSAMPLES or (self.upsample != "transposed" and self.decoder != "spade"):
            raise ValueError(
                f"autoencoder.upsample must be one of {', '.join(UPSAMPLES)} (other than transposed: spade decoder)"
            )
        _finite("autoencoder.commitment_cost", self.commitment_cost, 0.0)
        _finite("autoencoder.decay", self.decay, 0.0, 1.0)


@dataclass
class UNetConfig:
    """The latent diffusion UNet (MONAI ``SPADEDiffusionModelUNet``)."""

    channels: Tuple[int, ...] = (64, 128, 256)
    attention_levels: Tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    num_head_channels: int = 32
    spade_intermediate_channels: int = 64
    spade: str = "monai"  # one of UNET_SPADES; cards without it (up to 0.2.0) are MONAI's

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError("unet.channels needs at least one entry")
        _positive(
            "unet: channels, num_res_blocks, norm_num_groups, num_head_channels and spade_intermediate_channels",
            *self.channels,
            self.num_res_blocks,
            self.norm_num_groups,
            self.num_head_channels,
            self.spade_intermediate_channels,
        )
        if len(self.attention_levels) != len(self.channels):
            raise ValueError("unet: attention_levels needs one entry per entry of channels")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError("unet: every entry of channels must be a multiple of norm_num_groups")
        if self.spade not in UNET_SPADES:
            raise ValueError(f"unet.spade must be one of {', '.join(UNET_SPADES)}, not {self.spade!r}")


@dataclass
class SchedulerConfig:
    """The noise process the UNet was trained with: ``ddpm`` (ε or v prediction) or ``rflow``."""

    kind: str = "ddpm"
    num_train_timesteps: int = 1000
    schedule: str = "cosine"
    prediction_type: str = "epsilon"

    def __post_init__(self) -> None:
        if self.kind not in ("ddpm", "rflow"):
            raise ValueError(f"scheduler.kind must be 'ddpm' or 'rflow', not {self.kind!r}")
        if self.kind == "ddpm" and self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError("scheduler.prediction_type must be 'epsilon' or 'v_prediction'")
        if self.num_train_timesteps < 1:
            raise ValueError("scheduler.num_train_timesteps must be at least 1")
        if self.kind == "ddpm" and self.schedule not in SCHEDULES:
            raise ValueError(f"scheduler.schedule {self.schedule!r} is not known: use one of {', '.join(SCHEDULES)}")


@dataclass
class LabelEntry:
    """One class of the model: the value it has in label maps, its name and display colour."""

    value: int
    name: str
    color: Tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise ValueError(f"labels: the class of value {self.value} needs a name")
        if len(self.color) not in (3, 4):
            raise ValueError(f"labels: the colour of {self.name!r} needs three numbers (red, green, blue)")
        for c in self.color:
            _finite(f"labels: the colour of {self.name!r}", c, 0.0, 1.0)


@dataclass
class IntensityConfig:
    """How images were scaled to [-1, 1] for training; ``low``/``high`` map back to physical units."""

    mode: str = "percentile"  # "percentile" (MRI) or "window" (CT, HU)
    low: float = 0.0
    high: float = 1.0
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def __post_init__(self) -> None:
        if self.mode not in ("percentile", "window"):
            raise ValueError("intensity.mode must be 'percentile' or 'window'")
        _finite("intensity.low", self.low)
        _finite("intensity.high", self.high)
        _finite("intensity.lower_percentile", self.lower_percentile, 0.0, 100.0)
        _finite("intensity.upper_percentile", self.upper_percentile, 0.0, 100.0)
        if not self.upper_percentile > self.lower_percentile:
            raise ValueError("intensity.upper_percentile must be greater than intensity.lower_percentile")
        if not self.high > self.low:
            raise ValueError("intensity.high must be greater than intensity.low")


MIN_MODEL_SPACING, MAX_MODEL_SPACING = 0.01, 100.0  # mm


@dataclass
class ModelBasics:
    """The part of a model card the VQ-GAN stage's config gives (``training.config.VQGANModel``): the name,
    the data (label table, grid, intensity scaling) and the autoencoder."""

    name: str
    labels: List[LabelEntry]
    spacing: Tuple[float, ...] = (1.0, 1.0, 1.0)
    orientation: str = "RAS"
    modality: str = "MRI"
    version: str = "0.1.0"
    description: str = ""
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)


@dataclass
class ModelCard(ModelBasics):
    """Everything model.json says about a bundle: the basics, the diffusion half and the record."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    latent_scale: float = 1.0
    default_guidance: float = 2.0
    training: Dict[str, Any] = field(default_factory=dict)
    metrics: Dict[str, Any] = field(default_factory=dict)
    weights: Dict[str, str] = field(default_factory=dict)
    format_version: int = 1

    def __post_init__(self) -> None:
        values = [e.value for e in self.labels]
        if len(values) < 2 or len(set(values)) != len(values):
            raise ValueError("labels: need at least two classes with distinct values")
        if 0 not in values:
            raise ValueError("labels: the table must include the background value 0")
        if len(self.spacing) != 3:
            raise ValueError("spacing: need three positive numbers")
        for s in self.spacing:
            _finite("spacing", s, MIN_MODEL_SPACING, MAX_MODEL_SPACING)
        check_orientation(self.orientation)
        _finite("latent_scale", self.latent_scale)
        if not self.latent_scale > 0:
            raise ValueError(f"latent_scale must be greater than 0, not {self.latent_scale!r}")
        _finite("default_guidance", self.default_guidance, 0.0)

    @property
    def size_multiple(self) -> int:
        """Image sizes must be a multiple of this for the autoencoder and the UNet."""
        return self.autoencoder.downsample_factor * self.unet.downsample_factor

    def label_names(self) -> str:
        return ", ".join(f"{e.value}={e.name}" for e in self.labels)


CARD_FILE = "model.json"
