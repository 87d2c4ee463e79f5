"""Registration methods, initialisers and the file-to-file pipeline."""

from __future__ import annotations

from MMRegistrationLib.registration.base import RegistrationInputs, RegistrationResult
from MMRegistrationLib.registration.initializers import center_of_mass_init, rigid_mask_init
from MMRegistrationLib.registration.methods import METHODS, get_method

__all__ = [
    "METHODS",
    "RegistrationInputs",
    "RegistrationResult",
    "center_of_mass_init",
    "get_method",
    "rigid_mask_init",
]
