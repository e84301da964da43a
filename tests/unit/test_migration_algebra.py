"""Outlier migration is exact in float: folding shifts and scales into a block leaves its function unchanged,
and only outlier channels move."""

from __future__ import annotations

import numpy as np
import torch

from ijepa_deploy.bench.datasets import inject_outliers
from ijepa_deploy.exporter.calibration import CalibrationResult, TensorStats
from ijepa_deploy.exporter.layers import input_keys
from ijepa_deploy.exporter.migration import apply_migration, plan_migration
from ijepa_deploy.reference_model import Architecture, IJepaEncoder


def _stats(model, pixels) -> CalibrationResult:
    from ijepa_deploy.exporter.calibration import hooked_inputs

    result = CalibrationResult(stats={})
    handles = [m.register_forward_pre_hook(lambda mod, args, k=k: result.stats.setdefault(k, TensorStats())
                                          .update(args[0].detach().float()))
               for k, m in hooked_inputs(model).items()]
    with torch.no_grad():
        model(pixels)
    for h in handles:
        h.remove()
    return result


def test_migration_is_exact_and_touches_outliers_only():
    arch = Architecture(hidden_size=64, num_layers=2, num_heads=4, mlp_size=128, image_size=56, patch_size=14)
    model = IJepaEncoder.empty(arch).init_random(0).eval()
    inject_outliers(model, 100.0)
    pixels = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (4, 3, 56, 56)).astype(np.float32))
    with torch.no_grad():
        before = model(pixels).last_hidden_state
    migration = plan_migration(model, _stats(model, pixels), alpha=0.75, shift=True)
    assert set(migration.shift) == set(input_keys(2))
    moved = sum(int((s != 1).sum()) for s in migration.scale.values())
    assert 0 < moved < 0.1 * sum(s.size for s in migration.scale.values())  # a few outlier channels, not all
    assert all(migration.explicit_shift(k) is None for k in migration.shift if not k.endswith("mlp.fc2"))
    apply_migration(model, migration)
    with torch.no_grad():
        after = model(pixels).last_hidden_state
    assert float((after - before).abs().max() / before.abs().max()) < 1e-5
