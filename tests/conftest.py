"""Shared fixtures: analytic models with known answers and tiny seeded CNNs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
GALAXIES = REPO.parent / "shared" / "data" / "galaxies"


class LinearBinary(nn.Module):
    """Two-class linear classifier: logits (w.x + b, 0). Its p_y level sets are hyperplanes w.x = const."""

    def __init__(self, shape=(3, 8, 8), seed: int = 0, scale: float = 0.05):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(shape, generator=gen) * scale)
        self.b = nn.Parameter(torch.zeros(()))
        self.num_classes = 2

    def forward(self, x):
        z = (x * self.w).flatten(1).sum(1) + self.b
        return torch.stack([z, torch.zeros_like(z)], dim=1)


class TinyCNN(nn.Module):
    """A small seeded CNN with BatchNorm and Dropout, so eval mode matters."""

    def __init__(self, num_classes: int = 4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Dropout(0.5),
        )
        self.head = nn.Linear(64, num_classes)
        self.num_classes = num_classes

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one thread avoids thread-pool synchronisation costing more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def linear_model():
    return LinearBinary()


@pytest.fixture
def tiny_cnn():
    return TinyCNN()


@pytest.fixture
def galaxies_dir() -> Path:
    if not GALAXIES.is_dir():
        pytest.skip(f"real galaxy cutouts not found at {GALAXIES}")
    return GALAXIES


def subprocess_env() -> dict[str, str]:
    """Environment for child processes: without PYTHONDONTWRITEBYTECODE, which makes torch imports twice as slow."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device (skipped without one)")


def one_line_exit_2(capsys, argv, *needles) -> str:
    """`blindspots ARGV` exits 2 with one stderr line, 'blindspots COMMAND: error: ...', holding every needle."""
    from blindspots.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"blindspots {argv[0]}: error: "), err
    for needle in needles:
        assert needle in err[0], (needle, err)
    return err[0]


def one_line(exc, *needles: str) -> str:
    """The message of a caught exception (`pytest.raises`'s ExceptionInfo): one line holding every needle."""
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def measure_in_chromium(page, expression: str):
    """Open `page` in headless Chromium at 1280 x 900 and return the JSON of `expression`, evaluated after the web
    fonts and the page's own scripts (the site's theme wraps each table) have run."""
    import html
    import json
    import subprocess

    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", "".join([
        "<script>window.addEventListener('load', () => document.fonts.ready.then(() => setTimeout(() => ",
        f"document.body.setAttribute('data-w', JSON.stringify({expression})), 500)));</script></body>"])))
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(html.unescape(dom.split('data-w="')[1].split('"')[0]))
