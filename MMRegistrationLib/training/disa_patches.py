"""DISA training patches (sections 2-3 of :mod:`MMRegistrationLib.training.disa`): the LC2-targeted patch-pair
sampler and the rotation/sign/intensity augmentation of the network inputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from MMRegistrationLib.core.conventions import ALIGN_CORNERS
from MMRegistrationLib.core.errors import MMRegError
from MMRegistrationLib.core.progress import Monitor
from MMRegistrationLib.networks.disa import (
    RECEPTIVE_FIELD,
)
from MMRegistrationLib.similarity.lc2 import DEFAULT_RADII, PatchSearch
from MMRegistrationLib.training.disa_config import (
    CROP_HALF,
    HALF,
    PAD,
    TrainingConfig,
)
from MMRegistrationLib.training.disa_data import (
    TrainingVolume,
    VolumePair,
)


# =============================================================================================================
# 2. Patch-pair sampler
# =============================================================================================================
@dataclass
class PatchPairs:
    """Sampled patch pairs (rows correspond).

    Attributes:
        volume_a, volume_b: ``(N,)`` int volume indices (``a`` = LC2 target, ``b`` = regressor).
        centre_a, centre_b: ``(N, 3)`` int ``(k, j, i)`` patch centres.
        target: ``(N,)`` float32 LC2 of the pair, in [0, 1].
        pair: ``(N,)`` int index of the :class:`VolumePair` they come from.
    """

    volume_a: np.ndarray
    centre_a: np.ndarray
    volume_b: np.ndarray
    centre_b: np.ndarray
    target: np.ndarray
    pair: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def subset(self, rows) -> "PatchPairs":
        return PatchPairs(*(np.asarray(getattr(self, f))[rows] for f in self.__dataclass_fields__))

    @classmethod
    def concatenate(cls, parts: Sequence["PatchPairs"]) -> "PatchPairs":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__))

    @classmethod
    def empty(cls) -> "PatchPairs":
        z = np.zeros(0, dtype=np.int64)
        return cls(z, np.zeros((0, 3), np.int64), z, np.zeros((0, 3), np.int64), np.zeros(0, np.float32), z)

    def histogram(self, bins: int = 10) -> list:
        """Counts of the targets in ``bins`` equal bins over [0, 1]."""
        return np.histogram(self.target, bins=bins, range=(0.0, 1.0))[0].astype(int).tolist()


class PatchPairSampler:
    """The LC2-targeted sampler of the paper (see the module docstring, section 2).

    Args:
        volumes: the :class:`TrainingVolume` list the pairs refer to.
        radii: LC2 radii.
        search_size: largest region (voxels per axis) of the regressor volume searched at once.
        targets_per_round: target patches per searched region.
        rng: numpy ``Generator`` (all randomness of the sampler).
    """

    def __init__(self, volumes: Sequence[TrainingVolume], radii=DEFAULT_RADII, search_size: int = 64,
                 targets_per_round: int = 16, rng: np.random.Generator | None = None):
        self.volumes = list(volumes)
        self.radii = tuple(radii)
        self.margin = max(self.radii)
        self.search_size = int(search_size)
        self.targets_per_round = int(targets_per_round)
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def _region(self, volume: TrainingVolume) -> tuple:
        """Random region ``(start, stop)`` (per axis) of at most ``search_size`` voxels that holds valid centres."""
        shape = np.array(volume.shape)
        size = np.minimum(shape, self.search_size)
        valid = np.argwhere(volume.centres)
        for _ in range(20):
            # centre the region on a random valid centre so that it always holds candidates
            centre = valid[self.rng.integers(len(valid))]
            start = np.clip(centre - size // 2, 0, shape - size)
            stop = start + size
            inner = volume.centres[tuple(slice(a + self.margin, b - self.margin) for a, b in zip(start, stop))]
            if inner.any():
                return start, stop
        raise MMRegError(f"sampler: no valid patch centre found in regions of {volume.name}")

    def _targets(self, volume: TrainingVolume, count: int) -> np.ndarray:
        """``(count, 3)`` centres drawn with probability proportional to the LC2 weight."""
        flat = volume.weights.ravel()
        chosen = self.rng.choice(flat.size, size=count, p=flat / flat.sum())
        return np.stack(np.unravel_index(chosen, volume.shape), axis=1)

    def round(self, pair_index: int, pair: VolumePair, count: int) -> PatchPairs:
        """Up to ``count`` pairs (one searched region of the regressor volume)."""
        first, second = pair.first, pair.second
        if pair.target == "random" and self.rng.random() < 0.5:
            first, second = second, first
        va, vb = self.volumes[first], self.volumes[second]
        r = self.margin
        centres_a = self._targets(va, count)
        patches = np.stack([va.volume.array[k - r:k + r + 1, j - r:j + r + 1, i - r:i + r + 1] for k, j, i in centres_a])
        start, stop = self._region(vb)
        box = tuple(slice(a, b) for a, b in zip(start, stop))
        search = PatchSearch(vb.volume.array[box], self.radii, gradient=vb.gradient[box], dtype=torch.float32)
        lc2, _ = search(torch.as_tensor(patches))
        lc2 = lc2.numpy()
        valid = vb.centres[tuple(slice(a + r, b - r) for a, b in zip(start, stop))]
        flat_valid = np.flatnonzero(valid.ravel())
        values = lc2.reshape(count, -1)[:, flat_valid]  # (count, candidates)
        t = self.rng.random(count)
        best = np.abs(values - t[:, None]).argmin(axis=1)
        local = np.stack(np.unravel_index(flat_valid[best], valid.shape), axis=1)
        centres_b = local + start + r
        target = values[np.arange(count), best].astype(np.float32)
        n = np.full(count, first, np.int64), np.full(count, second, np.int64)
        return PatchPairs(n[0], centres_a.astype(np.int64), n[1], centres_b.astype(np.int64), target,
                          np.full(count, pair_index, np.int64))

    def sample(self, pair_index: int, pair: VolumePair, count: int, monitor: Monitor | None = None) -> PatchPairs:
        """``count`` patch pairs from one volume pair."""
        monitor = monitor or Monitor()
        parts, done = [], 0
        while done < count:
            n = min(self.targets_per_round, count - done)
            parts.append(self.round(pair_index, pair, n))
            done += n
            monitor.report(done / count, f"sampling patches: {self.volumes[pair.first].name} / {self.volumes[pair.second].name}")
        return PatchPairs.concatenate(parts)


# =============================================================================================================
# 3. Augmentation and network inputs
# =============================================================================================================
def random_rotations(count: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, 3)`` rotation matrices: uniform on SO(3) (normalised Gaussian quaternions), the 48 signed
    axis permutations (``octahedral``), or identities."""
    if kind == "none":
        return torch.eye(3).expand(count, 3, 3).clone()
    if kind == "octahedral":
        perms = torch.stack([torch.randperm(3, generator=generator) for _ in range(count)])
        signs = torch.randint(0, 2, (count, 3), generator=generator).float() * 2 - 1
        mats = torch.zeros(count, 3, 3)
        mats.scatter_(2, perms[:, :, None], signs[:, :, None])
        return mats
    q = torch.randn(count, 4, generator=generator)
    q = q / q.norm(dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


class PatchBatcher:
    """Network inputs ``(2B, 1, 17, 17, 17)`` for a batch of patch pairs (rows ``0..B-1``: patches ``a``;
    ``B..2B-1``: patches ``b``), augmented or plain centre crops."""

    def __init__(self, volumes: Sequence[TrainingVolume], config: TrainingConfig, generator: torch.Generator | None = None):
        self.volumes = list(volumes)
        self.config = config
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        n = RECEPTIVE_FIELD
        self._base = F.affine_grid(torch.eye(3, 4)[None] * 1.0, (1, 1, n, n, n), align_corners=ALIGN_CORNERS)

    def _crops(self, volume_index: np.ndarray, centres: np.ndarray, half: int) -> torch.Tensor:
        out = []
        for v, (k, j, i) in zip(volume_index, centres):
            padded = self.volumes[int(v)].padded
            k, j, i = k + PAD, j + PAD, i + PAD
            out.append(padded[k - half:k + half + 1, j - half:j + half + 1, i - half:i + half + 1])
        return torch.stack(out)[:, None]

    def inputs(self, pairs: PatchPairs, augment: bool) -> torch.Tensor:
        """``(2B, 1, 17, 17, 17)`` float32 network inputs for the pairs (augmented when ``augment``)."""
        volume_index = np.concatenate([pairs.volume_a, pairs.volume_b])
        centres = np.concatenate([pairs.centre_a, pairs.centre_b])
        if not augment or self.config.rotation == "none":
            x = self._crops(volume_index, centres, HALF)
        else:
            b = len(pairs)
            rot = random_rotations(b, self.config.rotation, self.generator).repeat(2, 1, 1)  # same for a and b
            theta = torch.cat([rot * (HALF / CROP_HALF), torch.zeros(2 * b, 3, 1)], dim=2)
            grid = F.affine_grid(theta, (2 * b, 1) + (RECEPTIVE_FIELD,) * 3, align_corners=ALIGN_CORNERS)
            crops = self._crops(volume_index, centres, CROP_HALF)
            x = F.grid_sample(crops, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)
        if augment:
            n = x.shape[0]
            lo, hi = (math.log(v) for v in self.config.intensity_scale)
            scale = torch.exp(lo + (hi - lo) * torch.rand(n, generator=self.generator))
            sign = torch.randint(0, 2, (n,), generator=self.generator).float() * 2 - 1
            shift = (torch.rand(n, generator=self.generator) * 2 - 1) * self.config.intensity_shift
            x = x * (sign * scale).view(n, 1, 1, 1, 1) + shift.view(n, 1, 1, 1, 1)
        return x
