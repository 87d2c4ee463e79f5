"""Parametric transform models of DISA registration (fixed -> moving; ``A0`` the initial affine, ``c`` the centre).

- ``rigid``: ``T(x) = A0(R(x - c) + c + t)``, 6 parameters (rotation vector x :data:`PARAMETER_SCALE_MM`, translation
  mm);
- ``affine``: ``T(x) = A0((I + L)(x - c) + c + t)``, 12 parameters (``L`` x :data:`PARAMETER_SCALE_MM`, ``t``);
- ``probe``: ``T(x) = A0(R(P(x) - c) + c + t)`` with ``P`` the probe-pressure compression of
  :mod:`MMRegistrationLib.spatial.probe` (amplitude ``a`` mm, decay ``b`` mm): 6 + 2 parameters.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from MMRegistrationLib.core.device import move
from MMRegistrationLib.registration.global_search import rotation_matrices
from MMRegistrationLib.spatial.affine import rotation_matrix
from MMRegistrationLib.spatial.probe import compress

PARAMETER_SCALE_MM = 50.0
"""Rotation-vector and affine-matrix parameters are optimised multiplied by this length (mm): one unit moves a
point 50 mm from the centre by about 1 mm, like one unit of translation, which keeps L-BFGS well conditioned."""


PROBE_DECAY_RANGE_MM = (5.0, 60.0)
"""Bounds of the probe compression's decay length ``b`` (mm): from a push confined to the tissue touching the probe
to one reaching across a prostate; outside them the two probe parameters only fit noise."""


class PoseModel:
    """Maps a batch of parameter vectors ``(B, n)`` and fixed points ``(P, 3)`` to moving points ``(B, P, 3)``."""

    def __init__(self, kind: str, centre: np.ndarray, initial: np.ndarray, probe: Optional[tuple] = None,
                 decay_mm: float = 15.0):
        self.kind = kind
        self.n = {"rigid": 6, "affine": 12, "probe": 8}[kind]
        self.centre = torch.as_tensor(centre, dtype=torch.float64)
        self.initial = torch.as_tensor(initial, dtype=torch.float64)
        self.probe = probe
        self.decay_mm = float(decay_mm)

    def linear(self, params: torch.Tensor) -> tuple:
        """``(M (B, 3, 3), m (B, 3))`` of the affine part, initial transform included (float64)."""
        c = self.centre
        eye = torch.eye(3, dtype=params.dtype)
        if self.kind == "affine":
            lin = eye + params[:, :9].reshape(-1, 3, 3) / PARAMETER_SCALE_MM
            t = params[:, 9:12]
        else:
            lin = rotation_matrices(params[:, :3] / PARAMETER_SCALE_MM)
            t = params[:, 3:6]
        b = c - lin @ c + t
        a0, t0 = self.initial[:3, :3], self.initial[:3, 3]
        return a0 @ lin, b @ a0.T + t0

    def linear_one(self, params: torch.Tensor) -> tuple:
        """``(M (3, 3), m (3,))`` of one parameter vector ``(n,)``, the same map as :meth:`linear`; for ``rigid`` with
        the single-vector Rodrigues formula, whose autograd graph is a third of the batched one's (the cost that
        counts when an optimiser evaluates one pose at a time, as rigid-mask does)."""
        if self.kind != "rigid":
            lin, off = self.linear(params[None])
            return lin[0], off[0]
        rot = rotation_matrix(params[:3] / PARAMETER_SCALE_MM)
        c = self.centre
        a0, t0 = self.initial[:3, :3], self.initial[:3, 3]
        return a0 @ rot, a0 @ (c - rot @ c + params[3:6]) + t0

    def probe_parameters(self, params: torch.Tensor) -> tuple:
        """``(a, b)`` (mm) of each row: ``a >= 0`` (a probe can only push tissue away; measured: without this bound
        the DISA similarity chose expansions of 3-9 mm on synthetic cases whose truth is a 5 mm compression, and MIND
        one of 14.5 mm, 2.3 mm worse in TRE than rigid) and ``b`` within :data:`PROBE_DECAY_RANGE_MM`."""
        lo, hi = PROBE_DECAY_RANGE_MM
        decay = torch.clamp(self.decay_mm * torch.exp(params[:, 7] / self.decay_mm), lo, hi)
        amplitude = torch.clamp(params[:, 6], min=0.0)
        return amplitude, decay

    def project(self, params: torch.Tensor) -> torch.Tensor:
        """``params (n,)`` with the probe parameters moved back into their range (where the clamps of
        :meth:`probe_parameters` pass gradients again); other models' parameters are returned as they are. Called
        between optimisation levels, so a level that left the range does not freeze the next one."""
        if self.kind != "probe":
            return params
        lo, hi = PROBE_DECAY_RANGE_MM
        out = params.clone()
        out[6] = torch.clamp(out[6], min=0.0)
        out[7] = torch.clamp(out[7], self.decay_mm * np.log(lo / self.decay_mm), self.decay_mm * np.log(hi / self.decay_mm))
        return out

    def map(self, params: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        m_lin, m_off = self.linear(params)
        dtype = points.dtype
        m_lin, m_off = move(m_lin, points.device, dtype), move(m_off, points.device, dtype)
        if self.kind == "probe":
            amplitude, decay = self.probe_parameters(params)
            p0 = torch.as_tensor(self.probe[0], dtype=dtype, device=points.device)
            n = torch.as_tensor(self.probe[1], dtype=dtype, device=points.device)
            pts = compress(points[None], p0, n, move(amplitude, points.device, dtype)[:, None],
                           move(decay, points.device, dtype)[:, None])
            return torch.einsum("bij,bpj->bpi", m_lin, pts) + m_off[:, None]
        return torch.einsum("bij,pj->bpi", m_lin, points) + m_off[:, None]

    def matrix(self, params: torch.Tensor) -> np.ndarray:
        """4x4 fixed(-after-probe) -> moving matrix of one parameter vector ``(n,)``."""
        m_lin, m_off = self.linear(params[None].detach())
        out = np.eye(4)
        out[:3, :3] = m_lin[0].numpy()
        out[:3, 3] = m_off[0].numpy()
        return out


def rigid_to_affine(params: torch.Tensor) -> torch.Tensor:
    """The 12 ``affine`` parameters of the same map as the 6 ``rigid`` ones (to start the affine stage)."""
    rot = rotation_matrices(params[None, :3] / PARAMETER_SCALE_MM)[0]
    return torch.cat([((rot - torch.eye(3, dtype=params.dtype)) * PARAMETER_SCALE_MM).reshape(9), params[3:6]])


def nearest_rotation(linear: np.ndarray) -> np.ndarray:
    """Nearest rotation to a 3x3 matrix (for reporting the rotation angle of an affine result)."""
    u, _, vt = np.linalg.svd(linear)
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    return rot
