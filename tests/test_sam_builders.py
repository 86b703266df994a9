"""SAM builders and checkpoints: SAM-Med2D's exact layout, vanilla resizing, the small SAM, safe loading."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from segment_anything import sam_model_registry
from segment_anything.modeling.image_encoder import Block
from torch import nn

from samdpo.cli import main
from samdpo.errors import ConfigError, DataError
from samdpo.sam.builders import AdapterBlock, build_sam, set_trainable
from samdpo.sam.checkpoints import (
    convert_checkpoint,
    load_checkpoint,
    resize_pos_embed,
    resize_rel_pos,
    save_weights,
)
from samdpo.sam.settings import SamSettings

ADAPTER_KEYS = {
    "norm.weight",
    "norm.bias",
    "channel.0.weight",
    "channel.2.weight",
    "spatial.0.weight",
    "spatial.2.weight",
}


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape, in the model's order."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def constant_layout(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A state dict with the model's keys and shapes, one random constant per key.

    Each tensor is a stride-0 view of a one-element tensor: torch.save stores one number per key, so
    a checkpoint with the full ViT-B layout takes kilobytes, and every key still has its own value.
    """
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.rand((), generator=gen).expand(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def med2d() -> nn.Module:
    torch.manual_seed(0)
    return build_sam(SamSettings("sam_med2d", 256))


@pytest.fixture()
def small() -> nn.Module:
    torch.manual_seed(0)
    return build_sam(SamSettings("small", 128))


def test_sam_med2d_layout_matches_the_release(med2d: nn.Module) -> None:
    layout = shapes(med2d)
    assert len(layout) == 386
    adapters = [k for k in layout if ".Adapter." in k]
    assert len(adapters) == 72
    assert set(adapters) == {f"image_encoder.blocks.{i}.Adapter.{name}" for i in range(12) for name in ADAPTER_KEYS}
    assert layout["image_encoder.blocks.0.Adapter.spatial.0.weight"] == (768, 768, 3, 3)
    assert layout["image_encoder.blocks.0.Adapter.spatial.2.weight"] == (768, 768, 4, 4)
    assert layout["image_encoder.blocks.0.Adapter.channel.0.weight"] == (192, 768)
    assert layout["image_encoder.pos_embed"] == (1, 16, 16, 768)
    for i in range(12):
        side = 31 if i in (2, 5, 8, 11) else 27
        assert layout[f"image_encoder.blocks.{i}.attn.rel_pos_h"] == (side, 64)
        assert layout[f"image_encoder.blocks.{i}.attn.rel_pos_w"] == (side, 64)
    # Everything else is vanilla SAM ViT-B at 256 px.
    vanilla = shapes(build_sam(SamSettings("sam_vit_b", 256)))
    assert {k: v for k, v in layout.items() if ".Adapter." not in k} == vanilla
    total = sum(p.numel() for p in med2d.parameters())
    adapter_params = sum(p.numel() for n, p in med2d.named_parameters() if ".Adapter." in n)
    assert (total, adapter_params) == (271_241_776, 180_504_576)


def test_sam_med2d_forward_and_adapter_placement(med2d: nn.Module) -> None:
    with torch.no_grad():
        embedding = med2d.image_encoder(torch.rand(1, 3, 256, 256) * 255)
    assert embedding.shape == (1, 256, 16, 16)
    assert torch.isfinite(embedding).all()
    # The adapter sits beside the MLP, fed the same norm2 tokens; the rest is segment_anything's Block.
    torch.manual_seed(1)
    block = AdapterBlock(32, num_heads=4, use_rel_pos=True, window_size=4, input_size=(8, 8)).eval()
    seen: dict[str, torch.Tensor] = {}
    block.mlp.register_forward_hook(lambda _m, args, _out: seen.update(mlp_in=args[0]))
    block.Adapter.register_forward_hook(lambda _m, args, out: seen.update(adapter_in=args[0], adapter_out=out))
    x = torch.randn(2, 8, 8, 32)
    with torch.no_grad():
        y = block(x)
        assert torch.equal(seen["mlp_in"], seen["adapter_in"])
        adapter_out = seen["adapter_out"]
        assert torch.allclose(y, Block.forward(block, x) + adapter_out, atol=1e-6)


def test_sam_med2d_checkpoint_loads(med2d: nn.Module, tmp_path: Path) -> None:
    state = constant_layout(med2d, seed=3)
    path = tmp_path / "sam-med2d_b.pth"
    torch.save({"model": state}, path)
    load_checkpoint(med2d, path)
    loaded = med2d.state_dict()
    for key in (
        "image_encoder.pos_embed",
        "image_encoder.blocks.11.Adapter.spatial.2.weight",
        "mask_decoder.iou_token.weight",
    ):
        assert torch.equal(loaded[key], state[key]), key


def test_checkpoint_with_wrong_keys_is_refused(med2d: nn.Module, small: nn.Module, tmp_path: Path) -> None:
    state = constant_layout(med2d, seed=4)
    del state["image_encoder.blocks.3.Adapter.norm.bias"]
    state["image_encoder.blocks.3.Adapter.extra.weight"] = torch.zeros(2)
    path = tmp_path / "edited.pth"
    torch.save({"model": state}, path)
    with pytest.raises(ConfigError) as err:
        load_checkpoint(med2d, path)
    message = str(err.value)
    assert "1 missing, 1 unexpected, 0 of another shape" in message
    assert (
        "image_encoder.blocks.3.Adapter.norm.bias" in message
        and "image_encoder.blocks.3.Adapter.extra.weight" in message
    )

    # small's weights into SAM-Med2D, and SAM-Med2D's into small: both refused with the lists.
    torch.save(small.state_dict(), tmp_path / "small.pth")
    with pytest.raises(ConfigError, match=r"\d+ missing, 0 unexpected, \d+ of another shape") as err:
        load_checkpoint(med2d, tmp_path / "small.pth")
    assert "missing (" in str(err.value) and "another shape (" in str(err.value) and "and " in str(err.value)
    torch.save({"model": constant_layout(med2d, seed=5)}, tmp_path / "med2d.pth")
    with pytest.raises(ConfigError, match=r"unexpected \(\d+\): .*Adapter"):
        load_checkpoint(small, tmp_path / "med2d.pth")


def test_pickled_objects_need_an_explicit_conversion(small: nn.Module, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in small.state_dict().items()}
    src = tmp_path / "epoch15_sam.pth"
    # What SAM-Med2D's train.py saves: the optimizer object itself, next to the weights.
    torch.save({"model": small.state_dict(), "optimizer": torch.optim.Adam(small.parameters())}, src)
    with pytest.raises(
        ConfigError, match=r"torch\.optim\.adam\.Adam(.|\n)*samdpo sam convert .*epoch15_sam.pth .* --trust-pickle"
    ):
        load_checkpoint(small, src)
    with pytest.raises(ConfigError, match="trust_pickle=True"):
        convert_checkpoint(src, tmp_path / "out.safetensors", trust_pickle=False)
    dst = tmp_path / "converted.safetensors"
    assert main(["sam", "convert", str(src), str(dst)]) == 2  # --trust-pickle is required
    assert not dst.exists()
    assert main(["sam", "convert", str(src), str(dst), "--trust-pickle"]) == 0
    torch.manual_seed(9)
    fresh = build_sam(SamSettings("small", 128, checkpoint=str(dst)))
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in before.items())

    namespace = tmp_path / "args.pth"
    torch.save({"model": small.state_dict(), "args": argparse.Namespace(image_size=256)}, namespace)
    with pytest.raises(ConfigError, match="argparse.Namespace"):
        load_checkpoint(small, namespace)


def test_unreadable_files(small: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_checkpoint(small, tmp_path / "absent.pth")
    for junk in (b"", b"junk", b"not a checkpoint"):
        (tmp_path / "junk.pth").write_bytes(junk)
        with pytest.raises(DataError, match="junk.pth"):
            load_checkpoint(small, tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError):
        load_checkpoint(small, tmp_path / "junk.safetensors")


def test_save_weights_roundtrip_with_tied_weights(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    path = tmp_path / "tied.safetensors"
    assert save_weights(model, path) == 4
    assert set(load_file(path)) == {"0.weight", "0.bias", "1.weight", "1.bias"}
    copy = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    load_checkpoint(copy, path)
    assert torch.equal(copy[1].weight, model[0].weight)


def test_resize_functions() -> None:
    constant = torch.full((1, 64, 64, 8), 0.5)
    assert torch.allclose(resize_pos_embed(constant, (16, 16)), torch.full((1, 16, 16, 8), 0.5))
    ramp = torch.arange(64.0).view(1, 64, 1, 1).expand(1, 64, 64, 3)
    small_ramp = resize_pos_embed(ramp, (16, 16))
    # Antialiased: token i of 16 covers tokens 4i..4i+3 of 64, whose mean is 4i + 1.5 (away from borders).
    assert torch.allclose(small_ramp[0, 2:-2, 5, 0], torch.arange(2, 14.0) * 4 + 1.5, atol=1e-3)
    same = torch.randn(1, 16, 16, 4)
    assert torch.allclose(resize_pos_embed(same, (16, 16)), same, atol=1e-6)
    table = torch.randn(127, 64)
    assert resize_rel_pos(table, 31).shape == (31, 64)
    assert torch.allclose(resize_rel_pos(table, 127), table)
    line = torch.arange(127.0)[:, None].expand(127, 2)
    # Linear with align_corners=False: output j samples input (j + 0.5) * 127 / 31 - 0.5.
    j = torch.arange(1, 30.0)
    assert torch.allclose(resize_rel_pos(line, 31)[1:30, 0], (j + 0.5) * 127 / 31 - 0.5, atol=1e-4)


def test_vanilla_checkpoint_fits_another_size(tmp_path: Path) -> None:
    torch.manual_seed(0)
    at_1024 = build_sam(SamSettings("sam_vit_b", 1024))
    assert shapes(at_1024) == shapes(sam_model_registry["vit_b"]())
    state = constant_layout(at_1024, seed=6)
    gen = torch.Generator().manual_seed(7)
    state["image_encoder.pos_embed"] = torch.randn(1, 64, 64, 768, generator=gen)
    state["image_encoder.blocks.5.attn.rel_pos_h"] = torch.randn(127, 64, generator=gen)
    state["image_encoder.blocks.4.attn.rel_pos_h"] = torch.randn(27, 64, generator=gen)
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    at_256 = build_sam(SamSettings("sam_vit_b", 256, checkpoint=str(path)))
    loaded = at_256.state_dict()
    assert torch.allclose(
        loaded["image_encoder.pos_embed"], resize_pos_embed(state["image_encoder.pos_embed"], (16, 16))
    )
    rel_pos = "image_encoder.blocks.5.attn.rel_pos_h"
    assert torch.allclose(loaded[rel_pos], resize_rel_pos(state[rel_pos], 31))
    assert torch.equal(loaded["image_encoder.blocks.4.attn.rel_pos_h"], state["image_encoder.blocks.4.attn.rel_pos_h"])
    assert torch.equal(
        loaded["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
        state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )
    assert at_256.prompt_encoder.image_embedding_size == (16, 16)
    assert at_256.prompt_encoder.input_image_size == (256, 256)


def test_small_model(small: nn.Module) -> None:
    count = sum(p.numel() for p in small.parameters())
    assert count < 2_000_000, f"small SAM has {count} parameters"
    with torch.no_grad():
        embedding = small.image_encoder(torch.rand(2, 3, 128, 128) * 255)
        assert embedding.shape == (2, 64, 16, 16)
        image = torch.rand(3, 100, 128) * 255
        out = small(
            [{"image": image, "original_size": (100, 128), "boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]])}], True
        )
    assert out[0]["masks"].shape == (1, 3, 100, 128)
    assert out[0]["low_res_logits"].shape == (1, 3, 64, 64)
    decoder = sum(p.numel() for p in small.mask_decoder.parameters())
    assert set_trainable(small, ["mask_decoder"]) == decoder
    assert all(p.requires_grad == n.startswith("mask_decoder.") for n, p in small.named_parameters())
    assert set_trainable(small, ["adapters"]) == 0
    with pytest.raises(ConfigError, match="unknown"):
        set_trainable(small, ["decoder"])


def test_set_trainable_adapters(med2d: nn.Module) -> None:
    trainable = set_trainable(med2d, ["adapters", "mask_decoder"])
    names = [n for n, p in med2d.named_parameters() if p.requires_grad]
    assert all(".Adapter." in n or n.startswith("mask_decoder.") for n in names)
    assert sum(".Adapter." in n for n in names) == 72
    assert trainable == 180_504_576 + sum(p.numel() for p in med2d.mask_decoder.parameters())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "sam_med2d", "image_size": 240}, "sam.image_size"),
        ({"name": "sam_vit_b", "image_size": 1000}, "sam.image_size"),
        ({"name": "small", "image_size": 100}, "sam.image_size"),
        ({"name": "sam_vit_x", "image_size": 256}, "sam.name"),
        ({"name": "small", "image_size": 128, "prompt_dim": 60}, "sam.prompt_dim"),
        ({"name": "small", "image_size": 128, "encoder_heads": 5}, "sam.encoder_width"),
        ({"name": "small", "image_size": 128, "global_attn_indexes": [4]}, "sam.global_attn_indexes"),
        ({"name": "small", "image_size": True}, "sam.image_size"),
        ({"name": "sam_med2d", "image_size": 256, "encoder_width": 64}, "sam.encoder_width"),
        ({"name": "sam_med2d", "image_size": 256, "checkpoint": ""}, "sam.checkpoint"),
    ],
)
def test_settings_are_validated(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        SamSettings(**kwargs)


def test_unknown_name_lists_the_builders() -> None:
    with pytest.raises(ConfigError, match=r"sam_med2d.*sam_vit_b.*small"):
        SamSettings("medsam", 256)
    assert SamSettings("small", 128, global_attn_indexes=[1, 3], window_size=4).global_attn_indexes == (1, 3)
