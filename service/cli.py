"""The `gradsweep` command line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from engine.tasks import linear_regression
from service.plots import RunCurve, plot_curves

app = typer.Typer(help="gradsweep: hyperparameter sweeps on a small reverse-mode autodiff engine.", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Keeps `gradsweep COMMAND` a group even while it has one command."""


@app.command()
def train(
    lr: float = typer.Option(0.05, help="learning rate"),
    seed: int = typer.Option(0, help="seed of the initial parameters"),
    epochs: int = typer.Option(500, min=1),
    optimizer: str = typer.Option("sgd", help="sgd, momentum or adam"),
    mode: str = typer.Option("tensor", help="tensor (fast) or scalar (the seed's graph of Variables)"),
    n_samples: int = typer.Option(100, min=1),
    n_features: int = typer.Option(50, min=1),
    data_seed: int = typer.Option(0, min=0),
    output: Path = typer.Option(Path("loss-curve.png"), "--output", "-o", help="where to write the plot (.png or .svg)"),
) -> None:
    """Train the seed's linear regression once, here, and plot its loss curve."""
    try:
        result = linear_regression.train(lr, seed, epochs, n_samples, n_features, data_seed, mode, optimizer)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    curve = RunCurve(lr, seed, optimizer, np.asarray(result.losses), result.diverged)
    optimum = linear_regression.least_squares_loss(n_samples, n_features, data_seed)
    title = f"Linear regression {n_samples}×{n_features}, {optimizer}, lr = {lr:g}, seed {seed}"
    output.write_bytes(plot_curves([curve], title=title, optimum=optimum, fmt=output.suffix.lstrip(".") or "png"))
    status = f"diverged at epoch {result.diverged_at}" if result.diverged else f"final loss {result.losses[-1]:.6g}"
    typer.echo(f"{len(result.losses)} epochs, initial loss {result.losses[0]:.6g}, {status} "
               f"(least-squares optimum {optimum:.6g}); plot written to {output}")
