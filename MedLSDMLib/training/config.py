"""Training configurations (YAML): one for the VQ-GAN stage, one for the diffusion stage."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, TypeVar, Union

import yaml

from MedLSDMLib.card import (
    ModelBasics,
    ModelCard,
    SchedulerConfig,
    UNetConfig,
    fields_of,
    from_dict,
)
from MedLSDMLib.errors import InputError
from MedLSDMLib.runtime.hardware import PRECISION_NAMES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")


@dataclass
class DataConfig:
    """Where the image/label pairs are and how they are split."""

    pairs: str  # a folder of *_image.* / *_label.* files, or a .csv / .json list of pairs
    validation_fraction: float = 0.2
    sources: List[Dict[str, str]] = field(default_factory=list)  # provenance for the model card

    def __post_init__(self) -> None:
        if not 0 <= self.validation_fraction < 1:
            raise ValueError("data.validation_fraction must be in [0, 1)")


@dataclass
class AugmentConfig:
    """Joint image/label augmentation (MONAI transforms); each applied with ``probability``."""

    probability: float = 0.5
    rotate_degrees: float = 10.0
    scale: float = 0.1
    elastic: bool = True
    elastic_sigma: Tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: Tuple[float, float] = (50.0, 150.0)
    flip_axes: Tuple[int, ...] = (0,)  # axis 0 is left-right in RAS and LPS
    intensity: float = 0.1  # relative scale and shift jitter of the image


@dataclass
class TrainingCommon:
    """Settings both stages share."""

    steps: int = 1000
    batch_size: int = 1
    patch_size: Tuple[int, int, int] = (64, 64, 64)
    learning_rate: float = 1e-4
    grad_accumulation: int = 1
    precision: str = "auto"  # auto (chosen by the hardware), fp32, bf16 or fp16 autocast
    checkpoint_every: int = 100
    validate_every: int = 250
    log_every: int = 10
    seed: int = 0
    max_minutes: Optional[float] = None  # wall-clock budget of one run: then it checkpoints and writes its bundle
    workers: int = 0  # processes that cut and augment patches (0: the training process itself)

    def __post_init__(self) -> None:
        if self.max_minutes is not None and not 0 < self.max_minutes < math.inf:
            raise ValueError(f"training.max_minutes must be a positive number of minutes, not {self.max_minutes!r}")
        if not 0 <= self.workers <= 64:
            raise ValueError(f"training.workers must be a whole number from 0 to 64, not {self.workers!r}")
        if self.precision not in PRECISION_NAMES:
            raise ValueError(f"training.precision must be one of {', '.join(PRECISION_NAMES)}")
        if (
            min(
                self.steps,
                self.batch_size,
                self.grad_accumulation,
                self.checkpoint_every,
                self.validate_every,
                self.log_every,
            )
            < 1
        ):
            raise ValueError("training: steps, batch_size, grad_accumulation and the *_every values must be >= 1")
        if len(self.patch_size) != 3 or min(self.patch_size) < 8:
            raise ValueError("training.patch_size needs three sizes of at least 8")
        if not 0 < self.learning_rate <= 1:
            raise ValueError(f"training.learning_rate must be a positive number up to 1, not {self.learning_rate!r}")
        if not 0 <= self.seed < 2**63 - 2**20:
            raise ValueError("training.seed must be a whole number from 0 to 2**63 - 2**20")


@dataclass
class VQGANTraining(TrainingCommon):
    adversarial_weight: float = 0.05
    adversarial_start: int = 500  # steps of reconstruction-only training before the GAN loss starts
    feature_matching_weight: float = 1.0
    discriminator_channels: int = 32
    discriminator_layers: int = 3
    discriminator_learning_rate: float = 1e-4
    perceptual_weights: Optional[str] = None  # torchvision ResNet-50 weights file you provide; never downloaded
    perceptual_weight: float = 0.1
    freeze_encoder: bool = False  # keep init_from's encoder and codebook: its latent space (and UNet) stay valid
    gradient_weight: float = 0.0  # L1 between the image gradients (finite differences) of reconstruction and real
    frequency_weight: float = 0.0  # L1 between the 3D Fourier amplitudes of reconstruction and real patches

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (0 <= self.gradient_weight < math.inf and 0 <= self.frequency_weight < math.inf):
            raise ValueError("training.gradient_weight and training.frequency_weight must be numbers >= 0")


@dataclass
class DiffusionTraining(TrainingCommon):
    label_dropout: float = 0.15  # fraction of maps replaced by the null map (trains the guidance branch)
    loss: str = "l1"  # l1 (as the paper) or l2
    ema_decay: float = 0.999
    validation_steps: int = 20  # DDIM steps for validation samples
    noise_draws: int = 1  # noise levels per patch and step: more use of each patch where cutting them is the limit

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.label_dropout < 1:
            raise ValueError("training.label_dropout must be in [0, 1)")
        if not 0 <= self.ema_decay < 1:
            raise ValueError("training.ema_decay must be in [0, 1)")
        if self.validation_steps < 1:
            raise ValueError("training.validation_steps must be at least 1")
        if self.loss not in ("l1", "l2"):
            raise ValueError("training.loss must be l1 or l2")
        if self.noise_draws < 1:
            raise ValueError("training.noise_draws must be at least 1")


@dataclass
class VQGANModel(ModelBasics):
    """What the model card says about data and the autoencoder."""

    def __post_init__(self) -> None:
        values = [e.value for e in self.labels]
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ValueError(f"model.labels: value(s) {', '.join(map(str, duplicates))} appear more than once")
        # the checks of the model card it becomes, before any data is read
        ModelCard(**fields_of(self))


@dataclass
class DiffusionModel:
    """What the diffusion stage adds to the card; the rest comes from the VQ-GAN bundle."""

    name: Optional[str] = None
    version: Optional[str] = None
    description: Optional[str] = None
    unet: UNetConfig = field(default_factory=UNetConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    default_guidance: float = 2.0


@dataclass
class VQGANRun:
    output: str
    data: DataConfig
    model: VQGANModel
    training: VQGANTraining = field(default_factory=VQGANTraining)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    init_from: Optional[str] = None  # a bundle whose autoencoder weights start the run (where they fit)

    def __post_init__(self) -> None:
        if self.training.freeze_encoder and self.init_from is None:
            raise ValueError("training.freeze_encoder needs init_from: the bundle whose encoder and codebook to keep")


@dataclass
class DiffusionRun:
    output: str
    autoencoder: str  # the VQ-GAN stage's bundle folder
    data: DataConfig
    model: DiffusionModel = field(default_factory=DiffusionModel)
    training: DiffusionTraining = field(default_factory=DiffusionTraining)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    init_from: Optional[str] = None  # a complete bundle whose UNet (and latent scale) start the run: fine-tuning


MAX_CONFIG_NODES = 100_000


def _expanded_size(data: Any) -> int:
    """How many values ``data`` holds once YAML aliases are expanded, counted without expanding them:
    aliases load as shared objects, so each object's count is computed once (a "billion laughs" file
    of nested aliases is a small graph whose expansion is astronomically large)."""
    sizes: Dict[int, int] = {}
    visiting = set()
    # post-order over the graph of containers, iteratively (deeply nested files must not recurse)
    stack = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, (dict, list)) or id(node) in sizes:
            continue
        children = list(node.keys()) + list(node.values()) if isinstance(node, dict) else node
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_CONFIG_NODES + 1)
            visiting.discard(id(node))
        elif id(node) in visiting:
            return MAX_CONFIG_NODES + 1  # a value that contains itself: endless
        else:
            visiting.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in sizes)
    return sizes.get(id(data), 1)


def load_run_config(path: Union[str, Path], kind: Type[T]) -> T:
    """Read a YAML config; relative paths in it are relative to the config file's folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} does not exist: give a YAML file (see Resources/Configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"config {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(
            f"config {path} cannot be read as UTF-8 text ({type(exc).__name__}): give a YAML file"
        ) from None
    if _expanded_size(data) > MAX_CONFIG_NODES:
        raise InputError(
            f"config {path} expands to more than {MAX_CONFIG_NODES} values through YAML aliases "
            "(a config needs a few hundred): write it out without nested aliases"
        )
    if not isinstance(data, dict):
        raise InputError(f"config {path} must be a mapping of sections (output, data, model, training)")
    try:
        config = from_dict(kind, data)
    except ValueError as exc:
        raise InputError(f"config {path}: {exc}") from None
    base = path.resolve().parent
    run: Any = config  # every run config has output and data (VQGANRun, DiffusionRun, SegmenterRun)
    run.output = str((base / run.output).resolve())
    run.data.pairs = str((base / run.data.pairs).resolve())
    if isinstance(config, DiffusionRun):
        config.autoencoder = str((base / config.autoencoder).resolve())
    if isinstance(config, (VQGANRun, DiffusionRun)) and config.init_from is not None:
        config.init_from = str((base / config.init_from).resolve())
    return config
