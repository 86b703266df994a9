"""Data-parallel stage 1: the sharding maths, and a real two-process torchrun (Gloo on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from samdpo.errors import ConfigError
from samdpo.train.distributed import Place, place_from_environment, shard


def test_shards_cover_the_epoch_with_equal_step_counts() -> None:
    order = [4, 0, 3, 1, 2]
    parts = [shard(order, Place(rank, 2)) for rank in range(2)]
    assert parts == [[4, 3, 2], [0, 1, 4]]  # padded by wrapping around to 6 items
    assert set(parts[0]) | set(parts[1]) == set(order)
    assert shard(order, Place()) == order


def test_a_bad_launcher_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="rank 2 is not within a world of 2"):
        place_from_environment()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="must be integers"):
        place_from_environment()


SCRIPT = """
import os
import sys
from pathlib import Path

import numpy as np
import torch

from samdpo.sam.builders import build_sam
from samdpo.sam.settings import SamSettings
from samdpo.sam.prompted import PromptedSam
from samdpo.train.prompt_data import ImagePrompts
from samdpo.train.stage1 import Stage1Settings, train_stage1

out, count, parts = Path(sys.argv[1]), int(sys.argv[2]), tuple(sys.argv[3].split(","))
torch.manual_seed(0)
size = 32
rng = np.random.default_rng(0)
images = rng.integers(0, 255, size=(count, size, size), dtype=np.uint8)
labels = np.zeros((count, size, size), np.uint8)
labels[:, 8:20, 8:20] = 1
box = np.array([[8, 8, 19, 19]], np.float32)
points, point_labels = box[:, None, :2] + 2, np.ones((1, 1), np.int64)
one = np.ones(1, bool)
prompts = [ImagePrompts(f"s{i}", box, one, points, point_labels, ("vqa",), ("llm",), one) for i in range(count)]
texts = {"vqa": np.ones(8, np.float32), "llm": np.zeros(8, np.float32)}
sam = SamSettings(
    name="small", image_size=size, encoder_width=16, encoder_depth=1, encoder_heads=2, patch_size=8, prompt_dim=16
)
model = PromptedSam(build_sam(sam), 8)
out.mkdir(parents=True, exist_ok=True)
torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / f"init{os.environ['RANK']}.pt")
settings = Stage1Settings(epochs=2, lr=1e-3, batch_images=2, train=parts, device="cpu")
history = train_stage1(model, images, labels, prompts, texts, settings, out, {}, point_count=1, progress=False)
rank = os.environ["RANK"]
torch.save({k: v.clone() for k, v in model.state_dict().items()}, out / f"rank{rank}.pt")
print(f"rank {rank} samples {history[-1]['samples_per_s'] * history[-1]['seconds']:.1f}")
"""


@pytest.mark.parametrize(
    "count,parts",
    [
        (6, "image_encoder,prompt_encoder,mask_decoder,text_proj"),  # everything trains: the encoder runs every step
        (5, "prompt_encoder,mask_decoder,text_proj"),  # frozen encoder (cached embeddings); 5 images pad to 6
    ],
)
def test_torchrun_with_two_processes_trains_one_model(tmp_path: Path, count: int, parts: str) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(out),
        str(count),
        parts,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # gradients averaged: one model
    initial = torch.load(out / "init0.pt", weights_only=True)
    trained = [k for k, v in first.items() if not torch.equal(initial[k], v)]
    assert len(trained) > 10 and all(
        ("image_encoder" in k) == ("image_encoder" in parts) for k in trained if "image_encoder" in k
    )
    # both processes logged the whole (padded) epoch: 6 pairs, summed over the two shards of 3
    assert result.stdout.count("samples 6.0") == 2, result.stdout
    # the main process alone logged epochs and wrote the outputs; the resume checkpoint is gone
    assert result.stdout.count("epoch 2:") == 1 and "x 2 processes" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "init0.pt",
        "init1.pt",
        "loss.csv",
        "loss.png",
        "model.safetensors",
        "rank0.pt",
        "rank1.pt",
        "settings.json",
    ]
    assert '"processes": 2' in (out / "settings.json").read_text()
