"""Options of SINR registration (:mod:`MMRegistrationLib.registration.sinr`): one field each, with help, unit and
range (the CLI, ``mmreg methods`` and the Slicer module are generated from them), and the presets."""

from __future__ import annotations

from dataclasses import dataclass

from MMRegistrationLib.core.options import MethodConfig, existing_file, option


@dataclass(frozen=True)
class SINRConfig(MethodConfig):
    """Parameters of :func:`~MMRegistrationLib.registration.sinr.sinr_register` (the ``fast`` preset's values).

    The surface terms are a weighted soft Dice between the fixed and warped moving masks (prostate weight 1, other
    structures ``context_weight``) and, with ``weight_sdm`` > 0, the mean squared difference of the fixed and warped
    moving signed distance maps (clipped at ``sdm_clip_mm`` and divided by it; after paper 004), which also drives
    the interior of the structures. Both are evaluated at ``loss_spacing_mm`` points inside a fixed structure or
    within ``band_mm`` of its surface. Regularisers: velocity MSE (mm^2), total variation (per mm) and bending energy
    (per mm^2). The optional image term (``weight_image`` > 0) is the DISA similarity (paper 001) of the fixed and
    warped moving images at the fixed descriptor positions inside the box, counted from its value at the start.
    """

    margin_mm: float = option(15.0, "margin around the fixed structures' bounding box; the field is 0 outside it",
                              unit="mm", minimum=1.0, maximum=200.0)
    velocity_spacing_mm: float = option(4.0, "spacing of the velocity grid (MLP evaluation and scaling and squaring)",
                                        unit="mm", minimum=0.5, maximum=50.0)
    loss_spacing_mm: float = option(2.5, "spacing of the points where the losses are evaluated", unit="mm",
                                    minimum=0.5, maximum=50.0)
    mask_smoothing_mm: float = option(1.0, "Gaussian sigma applied to the masks before they are compared", unit="mm",
                                      minimum=0.0, maximum=20.0)
    band_mm: float = option(10.0, "losses are evaluated inside the fixed structures and within this distance of "
                            "their surfaces", unit="mm", minimum=0.0, exclusive_minimum=True, maximum=100.0)
    weight_sdm: float = option(1.0, "weight of the signed-distance-map loss (0 = Dice only)", minimum=0.0,
                               maximum=1e6)
    sdm_clip_mm: float = option(10.0, "signed distances are clipped at this distance", unit="mm", minimum=0.0,
                                exclusive_minimum=True, maximum=200.0)
    iterations: int = option(80, "maximum Adam iterations", minimum=1, maximum=100000)
    coarse_iterations: int = option(0, "of the iterations, how many run first on a velocity grid at twice the "
                                    "spacing (coarse to fine: cheaper steps while the field is smooth)", minimum=0,
                                    maximum=100000)
    learning_rate: float = option(5e-3, "Adam learning rate", minimum=0.0, exclusive_minimum=True, maximum=1.0)
    patience: int = option(15, "stop when the loss has not improved for this many iterations", minimum=1,
                           maximum=100000)
    min_improvement: float = option(1e-3, "relative loss decrease that counts as an improvement", minimum=0.0,
                                    maximum=0.5)
    weight_mse: float = option(1e-4, "weight of the velocity MSE (per mm^2)", minimum=0.0, maximum=1e6)
    weight_tv: float = option(0.0, "weight of the velocity total variation", minimum=0.0, maximum=1e6)
    weight_bending: float = option(30.0, "weight of the velocity bending energy", minimum=0.0, maximum=1e9)
    context_weight: float = option(0.5, "loss weight of structures other than the prostate (label 1, weight 1)",
                                   minimum=0.0, maximum=100.0)
    num_frequencies: int = option(32, "Fourier features of the MLP input", minimum=1, maximum=1024)
    frequency_scale: float = option(1.5, "standard deviation of the Fourier feature frequencies (box coordinates in "
                                    "[-1, 1])", minimum=0.0, exclusive_minimum=True, maximum=100.0)
    hidden: int = option(64, "MLP hidden width", minimum=1, maximum=4096)
    depth: int = option(2, "MLP hidden layers", minimum=1, maximum=32)
    velocity_scale_mm: float = option(1.0, "the MLP output is multiplied by this", unit="mm", minimum=0.0,
                                      exclusive_minimum=True, maximum=1000.0)
    squaring_steps: int = option(5, "scaling-and-squaring steps during the fit (one more for the output)",
                                 minimum=1, maximum=12)
    output_spacing_mm: float = option(2.0, "spacing of the output displacement fields (the fitted field is "
                                      "continuous)", unit="mm", minimum=0.25, maximum=50.0)
    weight_image: float = option(0.0, "weight of the optional DISA image term (learned LC2 of the fixed and warped "
                                 "moving images inside the box, relative to the surface terms); 0 = off",
                                 minimum=0.0, maximum=1e6)
    image_weights: str = option("", "DISA weights file of the image term (default: the shipped network)",
                                parse=existing_file)


PRESETS = {
    "fast": {},
    "accurate": dict(
        velocity_spacing_mm=3.0, loss_spacing_mm=2.0, iterations=200, learning_rate=3e-3, patience=30,
        min_improvement=2e-4, weight_bending=20.0, output_spacing_mm=1.5,
        hidden=128, num_frequencies=48, frequency_scale=2.0, squaring_steps=7,
    ),
}
"""Preset name -> the fields it changes from :class:`SINRConfig`'s defaults (``fast`` is the defaults)."""


def sinr_config(preset: str = "fast", **overrides) -> SINRConfig:
    """A preset with some fields overridden (None = the preset's value); errors name the option. The same path as
    ``mmreg register --method sinr --preset P ...`` (the registry's ``build_config``)."""
    from MMRegistrationLib.registration.methods import get_method

    return get_method("sinr").build_config({**overrides, "preset": preset})

