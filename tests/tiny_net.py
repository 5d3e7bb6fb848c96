"""A three-class linear model on tiny images: training-loop tests run in milliseconds."""

from __future__ import annotations

import torch.nn as nn

HALF = (0.5, 0.5, 0.5)


class TinyNet(nn.Module):
    def __init__(self, size: int = 8):
        super().__init__()
        self.fc = nn.Linear(3 * size * size, 3)
        self.mean, self.std = HALF, HALF

    def forward(self, x):
        return self.fc(x.flatten(1))
