"""Implicit neural representations: an MLP over spatial coordinates."""

from __future__ import annotations

import math

import torch
from torch import nn


class FourierFeatureMLP(nn.Module):
    """``f(x) = W_out(relu(... relu(W_1 [sin(2 pi B x), cos(2 pi B x)])))``.

    Args:
        in_features: coordinate dimension (3).
        out_features: output dimension (3 for a velocity field).
        num_frequencies: rows of the random matrix ``B`` (Gaussian, std ``frequency_scale``), giving
            ``2 * num_frequencies`` Fourier features; ``frequency_scale`` sets the finest detail the field can
            represent (in cycles per unit of the normalised input coordinates, which span [-1, 1]).
        hidden: width of the hidden layers; depth: their number.
        zero_init: start with a zero output layer (the identity transform), as a registration should.
        generator: torch generator for ``B`` and the weights (seeded, deterministic).

    Shapes: input ``(N, in_features)``, output ``(N, out_features)``.
    """

    def __init__(
        self,
        in_features: int = 3,
        out_features: int = 3,
        num_frequencies: int = 32,
        frequency_scale: float = 2.0,
        hidden: int = 64,
        depth: int = 2,
        zero_init: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if num_frequencies < 1 or hidden < 1 or depth < 1:
            raise ValueError("FourierFeatureMLP: num_frequencies, hidden and depth must be positive")
        b = torch.randn(num_frequencies, in_features, generator=generator) * frequency_scale
        self.register_buffer("frequencies", b)
        layers: list = []
        width = 2 * num_frequencies
        for _ in range(depth):
            linear = nn.Linear(width, hidden)
            with torch.no_grad():
                bound = math.sqrt(6.0 / width)  # He-uniform, drawn from the given generator
                linear.weight.uniform_(-bound, bound, generator=generator)
                linear.bias.zero_()
            layers += [linear, nn.ReLU()]
            width = hidden
        out = nn.Linear(width, out_features)
        with torch.no_grad():
            if zero_init:
                out.weight.zero_()
            else:
                out.weight.uniform_(-1e-3, 1e-3, generator=generator)
            out.bias.zero_()
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        projected = 2.0 * math.pi * x @ self.frequencies.T
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encode(x))

    def from_encoded(self, features: torch.Tensor) -> torch.Tensor:
        """The output for inputs already encoded by :meth:`encode` (the frequencies are fixed, so the encoding of
        fixed points can be computed once)."""
        return self.net(features)
