"""Synthetic MR (moving) / TRUS (fixed) prostate cases with an exact ground-truth deformation.

>>> from MMRegistrationLib.synthetic import SyntheticCaseConfig, generate_case, write_case
>>> case = generate_case(SyntheticCaseConfig(seed=0))      # doctest: +SKIP
>>> paths = write_case(case, "case0")                       # doctest: +SKIP

Modules: :mod:`.config` (settings), :mod:`.geometry` (frames, grids, probe), :mod:`.anatomy` (analytic
anatomy), :mod:`.deformation` (ground truth), :mod:`.landmarks` (calcifications), :mod:`.mr` / :mod:`.trus`
(appearance), :mod:`.generator` (``generate_case``), :mod:`.writer` (``write_case``).
"""

from __future__ import annotations

from MMRegistrationLib.synthetic.anatomy import LABEL_NAMES
from MMRegistrationLib.synthetic.config import SyntheticCaseConfig
from MMRegistrationLib.synthetic.generator import SyntheticCase, generate_case
from MMRegistrationLib.synthetic.writer import CASE_FILES, write_case

__all__ = ["CASE_FILES", "LABEL_NAMES", "SyntheticCase", "SyntheticCaseConfig", "generate_case", "write_case"]
