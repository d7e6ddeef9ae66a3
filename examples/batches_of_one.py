"""BatchNormalization trained on batches of one (BN007), in Keras and in PyTorch.

With one sample a Dense layer's BatchNormalization sees a batch variance of exactly 0, a
convolutional one normalizes an image by its own statistics, and PyTorch's BatchNorm1d refuses
with "Expected more than 1 value per channel when training". Run `bncheck examples/` to see the
findings. This file is never executed by bncheck.
"""

import numpy as np
import torch
from tensorflow import keras
from tensorflow.keras import layers
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# -- Keras -----------------------------------------------------------------------------------

x_train = np.random.rand(200, 20).astype("float32")
y_train = np.random.rand(200, 1).astype("float32")
regressor = keras.Sequential([layers.Input((20,)), layers.Dense(64), layers.BatchNormalization(), layers.Dense(1)])
regressor.compile(optimizer="adam", loss="mse")
# BN007: every training batch holds one sample.
regressor.fit(x_train, y_train, batch_size=1, epochs=5)

# -- PyTorch ---------------------------------------------------------------------------------

NUM_SAMPLES = 1025  # 16 batches of 64, and one left over
net = nn.Sequential(nn.Linear(20, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 2))
dataset = TensorDataset(torch.randn(NUM_SAMPLES, 20), torch.randint(0, 2, (NUM_SAMPLES,)))
# BN007: 1025 = 16 * 64 + 1, so the last batch of every epoch holds one sample; needs drop_last=True.
train_loader = DataLoader(dataset, batch_size=64, shuffle=True)
# BN007: no batch_size, and PyTorch's default is 1.
fine_tune_loader = DataLoader(dataset, shuffle=True)
# Evaluation with batches of one is fine: BatchNorm runs in eval() mode there.
test_loader = DataLoader(dataset, batch_size=1)

optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
for epoch in range(3):
    net.train()
    for inputs, targets in train_loader:
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
