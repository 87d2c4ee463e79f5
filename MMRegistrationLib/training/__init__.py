"""Training of learned components (the DISA descriptor network: :mod:`.disa`)."""

from __future__ import annotations
