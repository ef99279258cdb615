"""Model architectures: every registered one exists as soon as :mod:`tasks.models` is imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# what a process does that loads a stored autoencoder and has imported nothing else of
# advgrid (an analysis script, a worker whose first cell is not a defense's)
LOAD_DAE_ALONE = """\
import torch
import tasks.models as models

models.MODELS.get("dae")
arch_params = models.params_of("dae", {"width": 4})
kwargs = dict(input_shape=(1, 8, 8), num_classes=0, mean=[0.5], std=[0.25])
stored = models.build("dae", arch_params, seed=1, **kwargs).state_dict()
net = models.build("dae", arch_params, **kwargs)
net.load_state_dict(stored)
out = net.eval()(torch.rand(2, 1, 8, 8))
assert out.shape == (2, 1, 8, 8) and 0 <= float(out.min()) <= float(out.max()) <= 1
"""


def test_dae_is_registered_without_importing_the_defenses_first() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_DAE_ALONE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
