"""Networks (torch modules) used by the registration methods."""

from __future__ import annotations

from MMRegistrationLib.networks.implicit import FourierFeatureMLP

__all__ = ["FourierFeatureMLP"]
