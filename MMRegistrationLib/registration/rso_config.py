"""Options of test-time optimisation (paper 002): image-specific (ISO, the whole fixed field of view) and
region-specific (RSO, inside a user's box). One place for the CLI (``mmreg refine``, ``mmreg register --method net
--iso-*``), ``mmreg methods`` and the RSO Refine Slicer module.

Defaults (``benchmarks/results/rso_tuning_*.md``: generated cases of seeds 300+ and DeepReg training pairs, never
the pairs the RSO figures are reported on): Adam at 2e-3 on the decoder down to half the network's resolution (the
encoder's features of the case are computed once), the multi-scale Dice of every structure both segmentations hold,
the DISA image term at 0.1 of its start value when segmentations are given (1 on images alone), bending energy 5 of
the correction, the correction confined to the box by a window (no change outside the box beyond one step-grid
voxel). Heavier image terms (DISA 0.5, MIND 0.5), the paper's learning rate 3e-4 with 400 iterations, the whole
decoder and the penalty hold were worse on the same cases (the tuning table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from MMRegistrationLib.core.errors import InputError
from MMRegistrationLib.core.options import MethodConfig, option

IMAGE_TERMS = ("disa", "mind", "lc2", "mi", "none")
"""The image term: ``disa`` (learned LC2 descriptors, paper 001), ``mind`` (MIND-SSC), ``lc2`` (LC2 itself, slow),
``mi`` (mutual information inside the region), ``none``."""

TRAINABLE = ("coarse", "decoder", "all")
"""Which weights test-time optimisation changes: ``coarse`` (the decoder down to half the network's resolution: the
correction is that level's output, a smooth field; the encoder's features are computed once), ``decoder`` (the whole
decoder) or ``all`` (paper 002)."""

HOLDS = ("window", "penalty")
"""How the field outside an RSO box is held: ``window`` (the correction is multiplied by a window that is 0 on and
outside the box border: exactly no change outside) or ``penalty`` (the correction may extend over the margin and is
penalised there by ``hold_weight``)."""

PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class TuningOptions(MethodConfig):
    """What a test-time optimisation step minimises and how (shared by ISO and RSO)."""

    learning_rate: float = option(2e-3, "Adam learning rate of the fine-tuned weights (paper 002: 3e-4 with all "
                                  "weights)", minimum=0.0, exclusive_minimum=True, maximum=1.0)
    trainable: str = option("coarse", "weights changed: coarse (the decoder to half resolution; fastest), decoder, "
                            "or all (paper 002)", choices=TRAINABLE)
    label_weight: float = option(1.0, "weight of the multi-scale Dice of every structure both segmentations hold "
                                 "(used when both are given; 0 = off)", minimum=0.0, maximum=100.0)
    image_similarity: str = option("disa", "image term: disa (learned LC2), mind (MIND-SSC), lc2, mi (mutual "
                                   "information) or none", choices=IMAGE_TERMS)
    image_weight: Optional[float] = option(None, "weight of the image term, relative to its value at the start of "
                                           "the step (default: 0.1 when both segmentations are given, 1 on images "
                                           "alone)", minimum=0.0, maximum=100.0, optional=True, kind=float)
    smooth_weight: float = option(5.0, "weight of the bending energy of the correction (per mm^2)", minimum=0.0,
                                  maximum=1000.0)
    patience: int = option(40, "stop when the loss has not improved by 0.1% for this many iterations", minimum=1,
                          maximum=100000)
    precision: str = option("auto", "arithmetic of the network; auto = bfloat16 on a CPU with native bfloat16 when "
                            "the weights were trained in it, else float32", choices=PRECISIONS)

    def check(self) -> None:
        if self.label_weight <= 0 and (self.image_similarity == "none" or self.image_weight == 0):
            raise InputError("--label-weight", "every loss term is off: give a positive --label-weight or an image "
                                               "term (--image-similarity with a positive --image-weight)")


@dataclass(frozen=True)
class RefineConfig(TuningOptions):
    """One refinement step (``mmreg refine``): ISO without a box, RSO inside ``--roi``."""

    iterations: Optional[int] = option(None, "iterations of the step (default: paper 002's 400 in a box, 100 over "
                                       "the whole image); it stops earlier on a plateau", minimum=1, maximum=100000,
                                       optional=True, kind=int, advanced=False)
    weights: str = option("", "the network fine-tuned: a shipped name or a .pt file with its .json sidecar "
                          "(default: mix_plus with a moving segmentation, srml on images alone)")
    hold: str = option("window", "how the field outside the box is held: window (the correction vanishes on the "
                       "box border; no change outside) or penalty (a penalty on the change in the margin)",
                       choices=HOLDS)
    hold_weight: float = option(10.0, "weight of the penalty on the change outside the box (hold=penalty), per "
                                "mm^2", minimum=0.0, maximum=1000.0)
    margin_mm: float = option(12.0, "context the network sees around the box", unit="mm", minimum=0.0,
                              maximum=100.0)
    ramp_mm: float = option(6.0, "the correction rises from 0 on the box border to full over this distance (at "
                            "most a quarter of the box's shortest edge)", unit="mm", minimum=0.5, maximum=50.0)

    def iterations_for(self, in_box: bool) -> int:
        """The step's iterations: the given ones, else 400 in a box and 100 over the whole image (paper 002)."""
        return self.iterations if self.iterations is not None else (400 if in_box else 100)
