"""A short run on a CUDA GPU: train, resume on the CPU, convert, evaluate on both devices.
Skipped where torch sees no CUDA GPU (CI has none)."""

from __future__ import annotations

import pytest
import torch

from deepstdp.config import TrainConfig
from deepstdp.conversion.converter import convert_run
from deepstdp.conversion.evaluation import evaluate_run
from deepstdp.conversion.settings import ConversionSettings
from deepstdp.data.datasets import Data
from deepstdp.loop.training import train
from deepstdp.network.features import extract_features
from deepstdp.network.models import ConvNet
from deepstdp.run.loaded import load_run
from deepstdp.runtime.devices import Compute

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("precision", ["auto", "fp16", "fp32"])
def test_train_on_the_gpu_then_resume_convert_and_evaluate_on_the_cpu(tmp_path, precision):
    cfg = TrainConfig(epochs=1, device="cuda", precision=precision, threads=2)
    rows = train(cfg, tmp_path, quiet=True)
    expected = {"auto": "bf16" if torch.cuda.is_bf16_supported() else "fp16"}
    assert rows[-1]["precision"] == expected.get(precision, precision)
    assert rows[-1]["knn_acc"] > 0.8  # digits: the untrained network's features already give 0.9
    ck = load_run(tmp_path).checkpoint
    assert all(t.device.type == "cpu" for t in ck.model.values())

    more = train(TrainConfig(**{**cfg.to_dict(), "epochs": 2, "device": "cpu"}), tmp_path,
                 resume=True, quiet=True)
    assert [r["epoch"] for r in more] == [0, 1, 2]

    convert_run(tmp_path, ConversionSettings(calib_images=64))
    on_gpu = evaluate_run(tmp_path, [8], limit=64, device="cuda")
    on_cpu = evaluate_run(tmp_path, [8], limit=64, device="cpu")
    assert on_gpu["rows"][0]["val_agreement"] == pytest.approx(
        on_cpu["rows"][0]["val_agreement"], abs=0.05)


def test_gpu_features_match_the_cpus():
    data = Data(**TrainConfig().data_options(), progress=False)
    torch.manual_seed(0)
    model = ConvNet.from_config(TrainConfig(), 1, 10)
    cpu = extract_features(model, data.x_val, Compute())
    gpu = extract_features(model.cuda(), data.x_val, Compute(torch.device("cuda"), "fp32"))
    assert abs(cpu - gpu).max() < 1e-3 * abs(cpu).max()
