"""A gland mask from one image: sampled onto the network's world-mm grid, the network's probability resampled back
onto the image's grid, then the largest component with its holes filled and the quality check."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.registration.net_geometry import normalised_intensity
from MMRegistrationLib.segmentation.network import SegNetConfig, segmentation_grid
from MMRegistrationLib.segmentation.postprocess import clean_mask, quality_warnings
from MMRegistrationLib.spatial.sampling import sample_at_world


@dataclass
class PredictedGland:
    """``mask``: uint8 label map (1 = gland) on the image's grid; ``probability``: float32 on the same grid;
    ``network_grid``: where the network looked; ``warnings``: the quality check's (empty when plausible)."""

    mask: Image
    probability: Image
    network_grid: Grid
    warnings: list = field(default_factory=list)


def network_input(image: Image, grid: Grid, device=None) -> torch.Tensor:
    """``(1, 1, N, N, N)`` float32: the image's scaled intensity sampled (trilinear, 0 outside) on ``grid``."""
    volume = torch.as_tensor(normalised_intensity(image.array), device=device)[None]
    points = grid.world_points_torch(device=device, dtype=torch.float32)
    return sample_at_world(volume, image.grid, points, outside_value=0.0).permute(3, 0, 1, 2)[None]


def probability_on(image_grid: Grid, probability: torch.Tensor, grid: Grid) -> np.ndarray:
    """The network grid's ``(N, N, N)`` probability resampled (trilinear, 0 outside) onto ``image_grid``."""
    points = image_grid.world_points_torch(device=probability.device, dtype=torch.float32)
    return sample_at_world(probability[None], grid, points, outside_value=0.0)[..., 0].cpu().numpy()


def predict_gland(network: torch.nn.Module, config: SegNetConfig, image: Image, device=None,
                  what: str = "the predicted gland") -> PredictedGland:
    """Segment the gland in ``image`` (any grid: oblique, anisotropic, any origin) with ``network``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    grid = segmentation_grid(config, image.grid)
    network = network.to(device).eval()
    with torch.no_grad():
        logits = network(network_input(image, grid, device))[0, 0]
        probability = probability_on(image.grid, torch.sigmoid(logits.float()), grid)
    raw = probability >= config.threshold
    cleaned = clean_mask(raw)
    return PredictedGland(Image(cleaned.astype(np.uint8), image.grid), Image(probability.astype(np.float32),
                                                                             image.grid),
                          grid, quality_warnings(raw, cleaned, image.grid, what))
