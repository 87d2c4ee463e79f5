"""MMRegistration engine: multimodal (MR -> TRUS) image registration on torch.

The engine never imports Slicer, VTK or Qt. World convention, array order and transform
direction are documented once in :mod:`MMRegistrationLib.core.conventions`.
"""

from __future__ import annotations

__version__ = "0.1.0"
