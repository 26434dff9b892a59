"""What both training stages share: the run folder, data, the step loop, checkpoints and logs."""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import (
    Any,
    Callable,
    ContextManager,
    Dict,
    Generic,
    Iterator,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    TypeVar,
)

import torch
from monai.data import set_track_meta
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler
from tqdm import tqdm

from MedLSDMLib.card import IntensityConfig, LabelEntry, ModelCard, to_dict
from MedLSDMLib.errors import Cancelled, InputError, MedLSDMError, ModelError
from MedLSDMLib.io.preprocess import Case
from MedLSDMLib.models.bundle import read_bundle_state
from MedLSDMLib.runtime.hardware import choose_precision, describe_run
from MedLSDMLib.runtime.interrupt import staged_file
from MedLSDMLib.training.config import AugmentConfig, DataConfig, TrainingCommon
from MedLSDMLib.training.data import PatchDataset, find_pairs, load_cases, split_pairs, summary
from MedLSDMLib.training.distributed import Distributed, setup

CHECKPOINT = "checkpoint.pt"
RUN_FILE = "run.json"
LOCK_FILE = ".medlsdm-run.lock"
# what a run writes before its first checkpoint: a run killed then (kill -9) may simply start again
EARLY_FILES = {RUN_FILE, "figures", "metrics.csv", "tensorboard", LOCK_FILE}
# interrupt.staged_file's names of a checkpoint or run.json being written
PARTIAL_CHECKPOINT = re.compile(r"\.(checkpoint\.partial-\d+\.pt|run\.partial-\d+\.json)")

Settings = TypeVar("Settings", bound=TrainingCommon)
Settings_co = TypeVar("Settings_co", bound=TrainingCommon, covariant=True)


def read_init_from(folder: str, *names: str) -> Tuple[ModelCard, List[Dict[str, torch.Tensor]]]:
    """``init_from``'s card and weight files (hash checked); a bundle that cannot be read is the config's fault."""
    try:
        return read_bundle_state(folder, names)
    except ModelError as exc:
        raise InputError(f"init_from: {exc}") from None


def _seed_worker(seed: int, worker: int) -> None:
    """A patch worker's own random stream: forked workers would otherwise draw the same augmentations."""
    info = torch.utils.data.get_worker_info()
    if info is not None and isinstance(info.dataset, PatchDataset):
        info.dataset.transforms.set_random_state(seed + 7919 * (worker + 1))


class RunConfig(Protocol[Settings_co]):
    """What every stage's config has (VQGANRun, DiffusionRun, SegmenterRun): the trainer reads these."""

    output: str
    data: DataConfig
    augmentation: AugmentConfig

    @property
    def training(self) -> Settings_co: ...


class RunLock:
    """An exclusive lock on a run folder (``fcntl.flock`` on a file in it), held by the main process for
    the whole run, so that a second process (a ``--resume`` while the run goes on) is refused with one
    line. The folder is created if needed, and removed again if the run ends having written nothing.
    The kernel releases the lock when the process dies, kill -9 included."""

    def __init__(self, folder: Path, enabled: bool = True) -> None:
        self.folder, self.enabled = folder, enabled
        self.created = False
        self.stream: Optional[Any] = None

    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"output {self.folder} is a file, not a folder: set output in the config to a folder")
        self.created = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"cannot create the output folder {self.folder} ({exc.strerror or exc}): "
                "set output in the config to a writable folder"
            ) from None
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, runs are not guarded
            return self
        path = self.folder / LOCK_FILE
        while True:
            try:
                stream = open(path, "a+", encoding="utf-8")
            except OSError as exc:
                self._remove_if_empty()
                raise InputError(
                    f"cannot write into the output folder {self.folder} ({exc.strerror or exc}): "
                    "set output in the config to a writable folder"
                ) from None
            try:
                fcntl.flock(stream.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                stream.seek(0)
                holder = stream.read().strip() or "another process"
                stream.close()
                raise InputError(
                    f"output folder {self.folder} is in use by another training process "
                    f"(pid {holder}): wait for it to end, or set another output folder"
                ) from None
            try:
                same = os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
            except OSError:
                same = False
            if same:  # not a lock file its previous holder removed meanwhile
                break
            stream.close()
        stream.seek(0)
        stream.truncate()
        stream.write(str(os.getpid()))
        stream.flush()
        self.stream = stream
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                (self.folder / LOCK_FILE).unlink()
            self.stream.close()
            self.stream = None
        self._remove_if_empty()

    def _remove_if_empty(self) -> None:
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty


class TrainingFailed(MedLSDMError, kind="training"):
    """Training cannot go on (a NaN or infinite loss)."""


def _comparable(config: Dict[str, Any]) -> Dict[str, Any]:
    """The config without what may change on resume (the number of steps)."""
    config = json.loads(json.dumps(config))
    config["training"].pop("steps", None)
    return config


class Trainer(Generic[Settings]):
    """What every stage shares: the run folder, the data (``load_data``), DDP wrapping (``parallel``),
    the step loop, checkpoints, logs and the training record (``record``). Each step takes
    ``grad_accumulation`` batches; a subclass does the maths (``train_step``), validation, its state for
    checkpoints, and the bundle. Its ``__init__`` builds the networks, then calls ``ready``."""

    stage = "stage"

    def __init__(self, config: RunConfig[Settings], resume: bool = False, device: str = "auto") -> None:
        set_track_meta(False)  # plain tensors out of MONAI transforms
        self.config = config
        self.settings: Settings = config.training
        self.output = Path(config.output)
        self.dist: Distributed = setup(device)
        self.device = self.dist.device
        self.precision = choose_precision(self.settings.precision, self.device.type)
        self.dtype = self.precision.dtype
        self.step = 0
        self.checkpoint_step = 0
        self.skipped_steps = 0
        self.skipped_in_a_row = 0
        self.seconds = 0.0
        self.stopped_early = False  # by training.max_minutes
        self.resume = resume
        self.cases: List[Case] = []
        self.val_cases: List[Case] = []
        self.data_summary: Dict[str, Any] = {}
        self.batches: Iterator[Dict[str, torch.Tensor]] = iter(())
        self._tensorboard: Optional[Any] = None
        self._check_run_folder()
        torch.manual_seed(self.settings.seed + self.dist.rank)

    # -- set-up shared by the stages ----------------------------------------------------
    def load_data(
        self, labels: List[LabelEntry], spacing: Sequence[float], orientation: str, intensity: IntensityConfig
    ) -> List[Tuple[float, float]]:
        """Find the image/label pairs of ``config.data``, split them, and preprocess both sets onto the
        model's labels, spacing, orientation and intensity (``cases``, ``val_cases``, ``data_summary``).
        Returns the training images' intensity ranges."""
        pairs = find_pairs(self.config.data.pairs)
        train_pairs, val_pairs = split_pairs(pairs, self.config.data.validation_fraction, self.settings.seed)
        self.cases, ranges = load_cases(train_pairs, labels, spacing, orientation, intensity)
        self.val_cases, _ = load_cases(val_pairs, labels, spacing, orientation, intensity)
        self.data_summary = {
            "training": summary(train_pairs, self.cases),
            "validation": [p.name for p in val_pairs],
            "sources": self.config.data.sources,
        }
        return ranges

    def ready(self, num_classes: int) -> None:
        """Once the networks are built: open the run folder (or load the checkpoint to resume) and start
        the batches of ``num_classes`` one-hot labels."""
        self.open_run()
        self.batches = self.make_loader(self.cases, num_classes)

    def parallel(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` for the training steps: wrapped in DistributedDataParallel under torchrun (gradients
        synchronised), itself when the run is alone."""
        if not self.dist.enabled:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def record(self) -> Dict[str, Any]:
        """What the model card keeps about this training: steps, time, processes, config and data."""
        return {
            "steps": self.step,
            "seconds": round(self.seconds, 1),
            "stopped_by_max_minutes": self.stopped_early,
            "world_size": self.dist.world_size,
            "config": to_dict(self.config),
            "data": self.data_summary,
        }

    # -- run folder -----------------------------------------------------------------
    def _check_run_folder(self) -> None:
        """Refuse to start over another run, or to resume a run of another config (nothing written)."""
        run_file, checkpoint = self.output / RUN_FILE, self.output / CHECKPOINT
        config = to_dict(self.config)
        if self.output.exists() and not self.output.is_dir():
            raise InputError(f"output {self.output} is a file, not a folder: set output in the config to a folder")
        names = {p.name for p in self.output.iterdir()} if self.output.is_dir() else set()
        # a run stopped (kill -9, a crash) before its first checkpoint: nothing to resume, so it starts over
        early = {n for n in names if n in EARLY_FILES or PARTIAL_CHECKPOINT.fullmatch(n)}
        self.restart = RUN_FILE in names and not checkpoint.exists() and names == early
        if self.resume:
            if self.restart:
                raise InputError(
                    f"--resume: the run in {self.output} stopped before its first checkpoint, so there "
                    "is nothing to continue: start it again without --resume (it starts over)"
                )
            if not checkpoint.is_file() or not run_file.is_file():
                raise InputError(f"--resume: {self.output} holds no checkpoint of a run to continue")
            try:
                previous = json.loads(run_file.read_text(encoding="utf-8"))
                same = previous.get("stage") == self.stage and _comparable(previous["config"]) == _comparable(config)
            except (ValueError, KeyError, TypeError, AttributeError):
                raise InputError(f"--resume: {run_file} is damaged: start the run again in another folder") from None
            if not same:
                raise InputError(
                    f"--resume: the config differs from the one {self.output} was started with "
                    "(only training.steps may change): use the original config"
                )
        elif names - {LOCK_FILE} and not self.restart:
            raise InputError(
                f"output folder {self.output} already holds a run: use --resume to continue it, "
                "or set another output folder"
            )

    def _partial_checkpoints(self) -> List[Path]:
        return [p for p in self.output.iterdir() if PARTIAL_CHECKPOINT.fullmatch(p.name)]

    def open_run(self) -> None:
        """Once the data and networks are ready: create the run folder, or load the checkpoint to resume."""
        if self.resume:
            self.load_checkpoint()
        elif self.dist.is_main:
            if self.restart:  # the logs of a run that never reached its first checkpoint
                tqdm.write(
                    f"starting over: the run in {self.output} stopped before its first checkpoint", file=sys.stderr
                )
                for path in [self.output / "metrics.csv", *self._partial_checkpoints()]:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                for name in ("tensorboard", "figures"):
                    shutil.rmtree(self.output / name, ignore_errors=True)
            self.output.mkdir(parents=True, exist_ok=True)
            (self.output / "figures").mkdir(exist_ok=True)
            record = {"stage": self.stage, "config": to_dict(self.config)}
            with staged_file(self.output / RUN_FILE) as temporary:
                temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        self.dist.barrier()

    # -- data -------------------------------------------------------------------------
    def make_loader(self, cases: List[Case], num_classes: int) -> Iterator[Dict[str, torch.Tensor]]:
        """Endless batches of random patches; each process draws its own."""
        s = self.settings
        per_epoch = max(len(cases), s.batch_size * self.dist.world_size) * 8
        seed = s.seed + 1000 * self.dist.rank + self.step
        dataset = PatchDataset(cases, s.patch_size, num_classes, self.config.augmentation, per_epoch, seed=seed)
        sampler: Sampler[int]
        if self.dist.enabled:
            sampler = DistributedSampler(dataset, self.dist.world_size, self.dist.rank, seed=s.seed)
        else:
            sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(s.seed + self.step))
        loader = DataLoader(
            dataset,
            batch_size=s.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=s.workers,
            persistent_workers=s.workers > 0,
            worker_init_fn=functools.partial(_seed_worker, seed) if s.workers else None,
        )
        epoch = 0
        while True:
            if isinstance(sampler, DistributedSampler):
                sampler.set_epoch(epoch + self.step)
            for batch in loader:
                yield {k: v.to(self.device) for k, v in batch.items()}
            epoch += 1

    # -- precision --------------------------------------------------------------------
    def autocast(self) -> ContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def check_finite(self, losses: Dict[str, torch.Tensor]) -> None:
        """Stop every process when any loss anywhere is NaN or infinite (before the optimiser step)."""
        flag = torch.tensor([0.0 if all(torch.isfinite(v).all() for v in losses.values()) else 1.0], device=self.device)
        if self.dist.mean(flag).item() > 0:
            bad = ", ".join(k for k, v in losses.items() if not torch.isfinite(v).all()) or "on another process"
            raise TrainingFailed(
                f"the loss became NaN or infinite at step {self.step + 1} ({bad}): lower "
                f"training.learning_rate or use precision fp32; {self._kept()}"
            )

    def apply_gradients(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> bool:
        """Step the optimiser unless a gradient is non-finite on any process; then skip the step, as
        GradScaler does for fp16. PyTorch's bf16 conv3d weight gradient on the CPU is now and then
        non-finite for tiny (2³) inputs. Five skipped steps in a row stop the run."""
        if scaler.is_enabled():
            scaler.step(optimizer)
            scaler.update()
            return True
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all().float()
        if self.dist.mean(finite.to(self.device)).item() == 1.0:
            optimizer.step()
            self.skipped_in_a_row = 0
            return True
        self.skipped_in_a_row += 1
        self.skipped_steps += 1
        if self.skipped_in_a_row >= 5:
            raise TrainingFailed(
                f"the gradients were NaN or infinite for 5 steps in a row at step {self.step + 1}: "
                f"lower training.learning_rate or use precision fp32; {self._kept()}"
            )
        return False

    def _kept(self) -> str:
        if self.checkpoint_step:
            return f"the checkpoint of step {self.checkpoint_step} in {self.output} is kept, continue with --resume"
        return "no checkpoint had been written yet"

    # -- subclass hooks -----------------------------------------------------------------
    def train_step(self, batches: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        """One optimiser step (a stage implements it; ``check_finite`` and ``apply_gradients`` help).

        Args:
            batches: ``grad_accumulation`` batches of ``make_loader`` ("image" (B, 1, X, Y, Z) in [-1, 1],
                "label" one-hot (B, classes, X, Y, Z)).

        Returns:
            The step's losses by name, logged to metrics.csv.
        """
        raise NotImplementedError

    def validate(self) -> Dict[str, float]:
        """The validation metrics on ``val_cases`` (a stage implements it; every ``validate_every`` steps).

        Returns:
            Metric values by name, logged to metrics.csv.
        """
        raise NotImplementedError

    def stateful(self) -> Dict[str, Any]:
        """What the checkpoint keeps (a stage implements it); ``state`` and ``load_state`` come from it.

        Returns:
            Each object with a ``state_dict()`` (networks, optimizers, scalers) by checkpoint key.
        """
        raise NotImplementedError

    def state(self) -> Dict[str, Any]:
        """The checkpoint's tensors: each ``stateful()`` object's ``state_dict()`` by key."""
        return {key: part.state_dict() for key, part in self.stateful().items()}

    def load_state(self, state: Dict[str, Any]) -> None:
        """Give each ``stateful()`` object its part of a loaded checkpoint."""
        for key, part in self.stateful().items():
            part.load_state_dict(state[key])

    def write_bundle(self) -> Path:
        """Write what the stage made (a stage implements it): the networks' weights with a model card that
        keeps ``record()`` (models/bundle.py's format), on the main process.

        Returns:
            The folder written.
        """
        raise NotImplementedError

    # -- checkpoints ------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        if self.dist.is_main:
            state = {"step": self.step, "seconds": self.seconds, "rng": torch.get_rng_state(), **self.state()}
            with staged_file(self.output / CHECKPOINT) as temporary:
                torch.save(state, temporary)
        self.checkpoint_step = self.step
        self.dist.barrier()

    def load_checkpoint(self) -> None:
        """Load the checkpoint to resume (tensors and plain values only: ``weights_only``, never any
        other pickled object); a damaged one (truncated, empty, garbage, another network's) is one
        ModelError line."""
        path = self.output / CHECKPOINT
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError("not a dictionary")
            self.step, self.seconds = int(state["step"]), float(state["seconds"])
            torch.set_rng_state(state["rng"])
            torch.manual_seed(self.settings.seed + self.dist.rank + self.step)  # each process its own stream
            self.load_state(state)
        except MedLSDMError:
            raise
        except Exception as exc:  # torch.load and load_state_dict raise many kinds for a damaged file
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise ModelError(
                f"checkpoint {path} is damaged or does not fit this config ({type(exc).__name__}"
                f"{': ' + first if first else ''}): start again in another output folder, or "
                "restore the checkpoint"
            ) from None

    # -- logs ---------------------------------------------------------------------------
    def log_metrics(self, values: Dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        path = self.output / "metrics.csv"
        row = {"step": self.step, "seconds": round(self.seconds, 2), **{k: f"{v:.6g}" for k, v in values.items()}}
        new = not path.exists()
        with open(path, "a", newline="", encoding="utf-8") as stream:
            writer = csv.writer(stream)
            if new:
                writer.writerow(["step", "seconds", "name", "value"])
            for key, value in row.items():
                if key not in ("step", "seconds"):
                    writer.writerow([row["step"], row["seconds"], key, value])
        if self._tensorboard is not None:
            for key, value in values.items():
                self._tensorboard.add_scalar(f"{self.stage}/{key}", value, self.step)

    def _open_tensorboard(self) -> None:
        if self.dist.is_main:
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter

                self._tensorboard = SummaryWriter(str(self.output / "tensorboard"))

    @classmethod
    def run(
        cls,
        config: Any,
        resume: bool = False,
        device: str = "auto",
        cancel: Optional[Callable[[], bool]] = None,
    ) -> Path:
        """Lock the run folder, build the trainer, train, and leave the process group however it ends."""
        with RunLock(Path(config.output), enabled=int(os.environ.get("RANK", "0")) == 0):
            trainer = cls(config, resume, device)
            try:
                return trainer.fit(trainer.batches, cancel)
            finally:
                trainer.dist.close()

    # -- the loop -------------------------------------------------------------------------
    def _out_of_time(self, started: float) -> bool:
        """Whether ``training.max_minutes`` of wall clock have passed since this process's ``fit`` began
        (on any process: all stop at the same step)."""
        if self.settings.max_minutes is None:
            return False
        over = time.perf_counter() - started > 60 * self.settings.max_minutes
        return bool(self.dist.mean(torch.tensor([float(over)], device=self.device)).item() > 0)

    def fit(self, batches: Iterator[Dict[str, torch.Tensor]], cancel: Optional[Callable[[], bool]] = None) -> Path:
        """Train up to ``settings.steps``, checkpointing and validating on the way; write the bundle.
        ``cancel`` (Ctrl-C, SIGTERM) stops between steps, keeping the last checkpoint."""
        s = self.settings
        self.checkpoint_step = self.step
        self._open_tensorboard()
        if self.dist.is_main:
            print(
                f"training {self.stage}: {describe_run(self.device.type, self.precision, torch.get_num_threads())}"
                + (f"\nwarning: {self.precision.warning}" if self.precision.warning else ""),
                file=sys.stderr,
                flush=True,
            )
        bar = tqdm(
            total=s.steps,
            initial=self.step,
            desc=f"training {self.stage}",
            unit="step",
            disable=not self.dist.is_main,
            dynamic_ncols=True,
        )
        started = time.perf_counter()
        try:
            if self.resume and self.dist.is_main:
                tqdm.write(f"resuming {self.stage} training at step {self.step} of {s.steps}", file=sys.stderr)
            while self.step < s.steps:
                if self._out_of_time(started):
                    self.stopped_early = True
                    tqdm.write(
                        f"{self.stage}: training.max_minutes ({s.max_minutes:g}) reached at step {self.step} of "
                        f"{s.steps}; writing the checkpoint and the bundle",
                        file=sys.stderr,
                    )
                    if self.step > self.checkpoint_step:
                        self.log_metrics(self.validate())
                        self.save_checkpoint()
                    break
                if cancel is not None and cancel():
                    raise Cancelled(f"training stopped at step {self.step}; {self._kept()}")
                start = time.perf_counter()
                values = self.train_step([next(batches) for _ in range(s.grad_accumulation)])
                if self.skipped_steps:
                    values["skipped_steps"] = float(self.skipped_steps)
                self.step += 1
                self.seconds += time.perf_counter() - start
                bar.update(1)
                volumes = s.batch_size * s.grad_accumulation * self.dist.world_size * self.step
                postfix = {k: f"{v:.4f}" for k, v in values.items()}
                postfix["vol/s"] = f"{volumes / max(self.seconds, 1e-9):.2f}"
                bar.set_postfix(postfix, refresh=False)
                if self.step % s.log_every == 0:
                    self.log_metrics(values)
                if self.step % s.validate_every == 0 or self.step == s.steps:
                    self.log_metrics(self.validate())
                if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            if self._tensorboard is not None:
                self._tensorboard.close()
        bundle = self.write_bundle() if self.dist.is_main else self.output / "bundle"
        self.dist.barrier()
        return bundle
