"""PyTorch's SimpleNN, the model strata's SimpleNN mirrors: one definition for the tools.

Linear(784, 128) -> ReLU -> Linear(128, 64) -> ReLU -> Linear(64, 10) logits; state_dict keys
fc1.weight, fc1.bias, ..., fc3.bias.
"""

import torch
import torch.nn as nn


class SimpleNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, 10)

    def forward(self, x):
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)
