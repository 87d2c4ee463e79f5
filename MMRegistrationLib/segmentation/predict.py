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


OTHER = {"mr": "trus", "trus": "mr"}
PROSTATE = "prostate"


def segment_image(image: Image, modality: str, weights=None, device=None, argument: str = "--image",
                  modality_argument: str = "--modality", progress=None, cancel=None) -> PredictedGland:
    """The gland of ``image`` (an ``mr`` or ``trus`` image) with the shipped network of ``modality`` (or
    ``weights``).

    No gland at all is an :class:`InputError` naming ``argument``; when the other modality's shipped network finds a
    plausible gland where this one found none or an implausible one, the message or warning names
    ``modality_argument`` (the image is probably of the other modality).
    """
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.core.progress import Monitor
    from MMRegistrationLib.segmentation.weights import load_segmentation_net

    monitor = Monitor.wrap(progress, cancel)
    monitor.check("segmenting")
    network, config, _ = load_segmentation_net(modality, weights, device or "cpu")
    monitor.report(0.2, f"segmenting: the gland on the {modality.upper()} image")
    predicted = predict_gland(network, config, image, device, what=f"the gland predicted on the {modality.upper()} "
                                                                    "image")
    monitor.check("segmenting")
    empty = not predicted.mask.array.any()
    if empty or predicted.warnings:
        hint = _other_modality_hint(image, modality, device, modality_argument)
        if empty:
            raise InputError(argument, f"no prostate found by the {modality.upper()} segmentation network"
                                       + (f"; {hint}" if hint else ": check that the image shows the prostate"))
        if hint:
            predicted.warnings.append(hint)
    monitor.report(1.0, f"segmenting: {predicted_volume_ml(predicted):.1f} ml")
    return predicted


def _other_modality_hint(image: Image, modality: str, device, modality_argument: str) -> str:
    """A hint naming ``modality_argument`` when the other modality's shipped network finds a plausible gland."""
    from MMRegistrationLib.core.errors import InputError
    from MMRegistrationLib.segmentation.weights import load_segmentation_net

    other = OTHER[modality]
    try:
        network, config, _ = load_segmentation_net(other, None, device or "cpu")
    except InputError:  # the other network missing or damaged: no hint, the user's own request stands
        return ""
    guess = predict_gland(network, config, image, device)
    if guess.mask.array.any() and not guess.warnings:
        return (f"the {other.upper()} network finds a plausible gland ({predicted_volume_ml(guess):.1f} ml): is this "
                f"a {other.upper()} image? ({modality_argument} {modality} was given)")
    return ""


def predicted_volume_ml(predicted: PredictedGland) -> float:
    from MMRegistrationLib.segmentation.postprocess import volume_ml

    return volume_ml(predicted.mask.array > 0, predicted.mask.grid)


def prediction_record(predicted: PredictedGland, modality: str, weights=None) -> dict:
    """What ``result.json`` records about a predicted segmentation: modality, network file and checksum, volume,
    network grid, warnings."""
    from MMRegistrationLib.networks.weights import read_sidecar
    from MMRegistrationLib.segmentation.weights import default_segmentation_weights

    path = weights or default_segmentation_weights(modality)
    meta = read_sidecar(path)
    grid = predicted.network_grid
    return {"predicted": True, "modality": modality, "weights": str(path), "weights_sha256": meta["sha256"],
            "volume_ml": round(predicted_volume_ml(predicted), 2), "segment_name": PROSTATE,
            "network_grid": {"size": list(grid.size_ijk), "spacing_mm": [float(s) for s in grid.spacing],
                             "center_lps_mm": [round(float(c), 3) for c in grid.center]},
            "warnings": list(predicted.warnings)}
