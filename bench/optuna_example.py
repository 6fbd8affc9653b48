"""The canonical Optuna + PyTorch example, run as a script: the yardstick of bench_process.py.

As Optuna's ``pytorch_simple.py`` writes it, on scikit-learn's digits instead of FashionMNIST:
a 75/25 split (``train_test_split``), an MLP 64-128-10, ``DataLoader`` batches of 64, Adam or
SGD with a learning rate log-uniform in [1e-5, 1], 10 epochs, accuracy on the validation part
reported every epoch, no pruning, 30 trials, in-memory storage (``optuna.create_study()``).

Run: ``python bench/optuna_example.py`` (prints the best accuracy).
"""

from __future__ import annotations

import optuna
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

EPOCHS = 10
N_TRIALS = 30
BATCH = 64

X, y = load_digits(return_X_y=True)
X_train, X_valid, y_train, y_valid = train_test_split(
    X / 16.0, y, test_size=0.25, random_state=0, stratify=y
)
train_set = TensorDataset(torch.tensor(X_train, dtype=torch.float32), torch.tensor(y_train))
valid_set = TensorDataset(torch.tensor(X_valid, dtype=torch.float32), torch.tensor(y_valid))


def objective(trial: optuna.Trial) -> float:
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    name = trial.suggest_categorical("optimizer", ["Adam", "SGD"])
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    optimizer = getattr(torch.optim, name)(model.parameters(), lr=lr)
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True)
    valid_loader = DataLoader(valid_set, batch_size=BATCH)
    accuracy = 0.0
    for epoch in range(EPOCHS):
        model.train()
        for data, target in train_loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(data), target)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for data, target in valid_loader:
                correct += (model(data).argmax(dim=1) == target).sum().item()
        accuracy = correct / len(valid_set)
        trial.report(accuracy, epoch)
    return accuracy


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=N_TRIALS)
    print(f"best accuracy {study.best_value:.4f}")
