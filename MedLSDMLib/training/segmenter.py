"""Training the Dice protocol's segmenter: a MONAI 3D UNet with Dice + cross-entropy (softmax) on real
image/label pairs, with the training pipeline of the generative stages (preprocessing, patches,
augmentation, checkpoints, resume, metrics.csv)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
from monai.losses import DiceCELoss

from MedLSDMLib.card import fields_of
from MedLSDMLib.errors import InputError
from MedLSDMLib.evaluation.dice import dice_per_class, mean_defined
from MedLSDMLib.evaluation.segmenter import (
    SegmenterCard,
    SegmenterModel,
    build_network,
    predict_classes,
    save_segmenter,
)
from MedLSDMLib.io.figures import planes_figure
from MedLSDMLib.training.config import AugmentConfig, DataConfig, TrainingCommon
from MedLSDMLib.training.trainer import Trainer


@dataclass
class SegmenterRun:
    output: str
    data: DataConfig
    model: SegmenterModel
    training: TrainingCommon = field(default_factory=TrainingCommon)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)


class SegmenterTrainer(Trainer[TrainingCommon]):
    stage = "segmenter"
    config: SegmenterRun

    def __init__(self, config: SegmenterRun, resume: bool = False, device: str = "auto") -> None:
        super().__init__(config, resume, device)
        m, s = config.model, config.training
        if any(p % m.network.downsample_factor for p in s.patch_size):
            raise InputError(
                f"training.patch_size {list(s.patch_size)} must be a multiple of the network's "
                f"downsampling factor {m.network.downsample_factor} (the product of its strides)"
            )
        self.load_data(m.labels, m.spacing, m.orientation, m.intensity)
        self.card = SegmenterCard(**fields_of(m), patch_size=s.patch_size)
        self.num_classes = len(m.labels)
        self.net = build_network(m.network, self.num_classes).to(self.device)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=s.learning_rate, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision.name == "fp16")
        self.ready(self.num_classes)
        self.train_net = self.parallel(self.net)

    def train_step(self, batches: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in batches:
            with self.autocast():
                logits = self.train_net(batch["image"])
            loss = self.loss(logits.float(), batch["label"][:, None])
            self.check_finite({"loss": loss})
            self.scaler.scale(loss / len(batches)).backward()
            total += float(loss.detach()) / len(batches)
        self.apply_gradients(self.optimizer, self.scaler)
        return {"loss": total}

    @torch.no_grad()
    def validate(self) -> Dict[str, float]:
        """Mean foreground Dice of sliding-window predictions on the whole validation cases; a figure of
        the first."""
        self.net.eval()
        scores = []
        for index, case in enumerate(self.val_cases):
            with self.autocast():
                predicted = predict_classes(self.net, case.image, self.settings.patch_size, self.device)
            per_class = dice_per_class(predicted, case.classes, range(1, self.num_classes))
            scores.append(mean_defined(per_class.values()))
            if index == 0 and self.dist.is_main:
                planes_figure(
                    self.output / "figures" / f"step_{self.step:06d}.png",
                    [("image", case.image), ("prediction", predicted.astype(np.float32))],
                    case.classes,
                    self.card.spacing,
                    title=f"segmenter step {self.step}: {case.name} (outlines: reference labels)",
                )
        self.net.train()
        value = mean_defined(scores)
        self.card.metrics = {"validation_dice": value, "step": self.step}
        return {"val_dice": float("nan") if value is None else value}

    def stateful(self) -> Dict[str, Any]:
        return {"net": self.net, "optimizer": self.optimizer, "scaler": self.scaler}

    def write_bundle(self) -> Path:
        """The segmenter folder: segmenter.safetensors and segmenter.json."""
        self.card.training = self.record()
        return save_segmenter(self.output / "segmenter", self.card, self.net)
