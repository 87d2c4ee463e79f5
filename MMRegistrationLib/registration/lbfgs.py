"""L-BFGS on a scalar loss of one parameter tensor, with cancel checks and a clear error for a non-finite loss."""

from __future__ import annotations

import torch

from MMRegistrationLib.core.errors import MMRegError
from MMRegistrationLib.core.progress import Monitor


def minimize_lbfgs(params: torch.Tensor, loss_fn, iterations: int, monitor: Monitor, label: str,
                   tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 10) -> tuple:
    """Minimise ``loss_fn(p)`` (a scalar tensor) from ``params`` with L-BFGS (strong Wolfe line search, at most
    ``iterations`` iterations); returns ``(p detached, final loss, loss evaluations)``. ``monitor.check(label)`` runs
    before every evaluation (cancel); a NaN/Inf loss raises :class:`MMRegError` naming ``label``."""
    p = params.clone().detach().requires_grad_(True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=int(iterations), line_search_fn="strong_wolfe",
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                            history_size=history_size)
    count = [0]

    def closure():
        monitor.check(label)
        opt.zero_grad()
        loss = loss_fn(p)
        if not bool(torch.isfinite(loss)):
            raise MMRegError(f"the {label} loss became {float(loss)}; check the input images")
        loss.backward()
        count[0] += 1
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(loss_fn(p))
    return p.detach(), final, count[0]
