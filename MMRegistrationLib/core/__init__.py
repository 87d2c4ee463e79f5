"""Core geometry, images, errors, devices and progress reporting."""

from __future__ import annotations

from MMRegistrationLib.core.errors import Cancelled, InputError, MMRegError
from MMRegistrationLib.core.grid import Grid
from MMRegistrationLib.core.image import Image
from MMRegistrationLib.core.progress import Monitor

__all__ = ["Cancelled", "Grid", "Image", "InputError", "MMRegError", "Monitor"]
