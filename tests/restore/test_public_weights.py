"""Public NAFNet weights (BasicSR ``params``/``params_ema`` files of megvii-research/NAFNet and SAM-Deblur)
through ``--model`` and ``model.init``.

The reference is NAFNet as the paper and the official ``NAFNet_arch.py`` define it, written here as
plain functions over a state dict with the official key names (``middle_blks``, ``sca.1``, ...), so that
the project's network (whose key names differ) is checked against an independent implementation.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from pipelines.cli import main
from restore.inference import load_restoration_checkpoint
from restore.public_weights import convert_public_nafnet, read_init_state
from robustsam_prior.core.checkpoint import CheckpointError
from robustsam_prior.core.io import read_image, write_image
from robustsam_prior.prior import PriorOutput

ENC, MIDDLE, DEC, WIDTH = [1, 2, 0], 2, [1, 1, 2], 8


# ------------------------------------------------------------------ the official network, as functions


def _layer_norm(x, s, p):
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    return s[p + "weight"].view(1, -1, 1, 1) * (x - mu) / (var + 1e-6).sqrt() + s[p + "bias"].view(1, -1, 1, 1)


def _conv(x, s, p, **kw):
    return F.conv2d(x, s[p + "weight"], s.get(p + "bias"), **kw)


def _gate(x):
    a, b = x.chunk(2, 1)
    return a * b


def _block(x, s, p):
    c = x.shape[1]
    y = _conv(_layer_norm(x, s, p + "norm1."), s, p + "conv1.")
    y = _gate(_conv(y, s, p + "conv2.", padding=1, groups=2 * c))
    y = y * _conv(y.mean((2, 3), keepdim=True), s, p + "sca.1.")
    x = x + _conv(y, s, p + "conv3.") * s[p + "beta"]
    y = _conv(_gate(_conv(_layer_norm(x, s, p + "norm2."), s, p + "conv4.")), s, p + "conv5.")
    return x + y * s[p + "gamma"]


def _blocks(x, s, prefix):
    n = len({int(m[1]) for k in s if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})
    for j in range(n):
        x = _block(x, s, f"{prefix}{j}.")
    return x


def official_nafnet(s, inp, levels):
    """NAFNet's forward on ``inp`` (B, C, H, W); the residual is ``inp``'s first 3 channels."""
    h, w = inp.shape[-2:]
    m = 2**levels
    inp = F.pad(inp, (0, (-w) % m, 0, (-h) % m))
    x = _conv(inp, s, "intro.", padding=1)
    skips = []
    for i in range(levels):
        x = _blocks(x, s, f"encoders.{i}.")
        skips.append(x)
        x = _conv(x, s, f"downs.{i}.", stride=2)
    x = _blocks(x, s, "middle_blks.")
    for i in range(levels):
        x = F.pixel_shuffle(F.conv2d(x, s[f"ups.{i}.0.weight"]), 2) + skips[-1 - i]
        x = _blocks(x, s, f"decoders.{i}.")
    return (_conv(x, s, "ending.", padding=1) + inp[:, :3])[..., :h, :w]


def official_state(seed, *, seg=0, scale=0.25):
    """Random weights with the official key names (beta/gamma non-zero, so every block acts)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape, s=scale):
        return torch.randn(*shape, generator=g) * s

    st = {}
    if seg:
        st |= {"pre_seg.weight": t(seg, 3, 3, 3), "pre_seg.bias": t(seg), "pre_seg_in.weight": t(seg, seg, 1, 1),
               "pre_seg_in.bias": t(seg)}
    st |= {"intro.weight": t(WIDTH, 3 + seg, 3, 3), "intro.bias": t(WIDTH),
           "ending.weight": t(3, WIDTH, 3, 3, s=0.05), "ending.bias": t(3, s=0.01)}

    def block(p, c):
        st.update({p + "norm1.weight": 1 + t(c), p + "norm1.bias": t(c), p + "conv1.weight": t(2 * c, c, 1, 1),
                   p + "conv1.bias": t(2 * c), p + "conv2.weight": t(2 * c, 1, 3, 3), p + "conv2.bias": t(2 * c),
                   p + "sca.1.weight": t(c, c, 1, 1), p + "sca.1.bias": t(c), p + "conv3.weight": t(c, c, 1, 1),
                   p + "conv3.bias": t(c), p + "norm2.weight": 1 + t(c), p + "norm2.bias": t(c),
                   p + "conv4.weight": t(2 * c, c, 1, 1), p + "conv4.bias": t(2 * c),
                   p + "conv5.weight": t(c, c, 1, 1), p + "conv5.bias": t(c), p + "beta": t(1, c, 1, 1),
                   p + "gamma": t(1, c, 1, 1)})

    c = WIDTH
    for i, n in enumerate(ENC):
        for j in range(n):
            block(f"encoders.{i}.{j}.", c)
        st |= {f"downs.{i}.weight": t(2 * c, c, 2, 2), f"downs.{i}.bias": t(2 * c)}
        c *= 2
    for j in range(MIDDLE):
        block(f"middle_blks.{j}.", c)
    for i, n in enumerate(DEC):
        st[f"ups.{i}.0.weight"] = t(2 * c, c, 1, 1)
        c //= 2
        for j in range(n):
            block(f"decoders.{i}.{j}.", c)
    return st


# ------------------------------------------------------------------ tests


@pytest.fixture
def image(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:37, 0:45] / 40.0
    pixels = np.stack([0.5 + 0.3 * np.sin(4 * xx + c) * np.cos(3 * yy) for c in range(3)], -1)
    pixels = np.clip(pixels + rng.normal(0, 0.02, pixels.shape), 0, 1).astype(np.float32)
    path = tmp_path / "blurry.png"
    write_image(path, pixels)  # 8-bit
    return path


def test_nafnet_params_file_restores_like_the_official_network(tmp_path, image):
    state = official_state(0)
    ckpt = tmp_path / "NAFNet-GoPro-tiny.pth"
    # EMA weights are what BasicSR evaluates; the plain ones differ here, so a mix-up would show
    torch.save({"params": official_state(1), "params_ema": state}, ckpt)
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["deblur", str(image), str(out), "--model", str(ckpt), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    x = torch.from_numpy(read_image(image).pixels).permute(2, 0, 1)[None]
    with torch.no_grad():
        ref = official_nafnet(state, x, len(ENC)).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    got = read_image(out / image.name).pixels
    assert np.abs(got - ref).max() <= 1 / 255 + 1e-6  # 8-bit rounding of the written PNG
    assert np.abs(ref - x[0].permute(1, 2, 0).numpy()).max() > 20 / 255  # the network does change the image
    # the same through the library, before any rounding (the float operations come in another order:
    # differences of about 1e-5 on values in [0, 1])
    net, meta = load_restoration_checkpoint(ckpt, "deblur")
    assert meta["arch"] == "nafnet" and meta["prior"]["name"] == "none"
    assert meta["arch_kwargs"] == {"width": WIDTH, "enc_blocks": ENC, "middle_blocks": MIDDLE, "dec_blocks": DEC}
    with torch.no_grad():
        torch.testing.assert_close(net(x, None).clamp(0, 1), torch.from_numpy(ref).permute(2, 0, 1)[None],
                                   rtol=0, atol=5e-5)
    # a params-only file (what NAFNet publishes) and a DDP "module." prefix are read as well
    torch.save({"params": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "plain.pth")
    net2, _ = load_restoration_checkpoint(tmp_path / "plain.pth", "deblur")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), net2.state_dict().values()))


def test_sam_deblur_map_nafnet_matches_the_official_segnafnet(tmp_path):
    state = official_state(2, seg=3)
    ckpt = tmp_path / "sam_deblur.pth"
    torch.save({"params": state}, ckpt)
    net, meta = load_restoration_checkpoint(ckpt, "deblur")
    assert meta["arch"] == "map_nafnet" and meta["arch_kwargs"]["seg_channels"] == 3
    assert meta["prior"]["name"] == "sam" and "SAM-Deblur" in meta["source_format"]
    g = torch.Generator().manual_seed(4)
    x = torch.rand(1, 3, 20, 27, generator=g)
    labels = torch.zeros(1, 20, 27, dtype=torch.int32)
    labels[:, 5:15, 3:20], labels[:, :, 22:] = 1, 2
    # SegNAFNet's mask average at inference: each mask's area gets the mean of pre_seg_in(pre_seg(x)) over it
    with torch.no_grad():
        seg = F.conv2d(F.conv2d(x, state["pre_seg.weight"], state["pre_seg.bias"], padding=1),
                       state["pre_seg_in.weight"], state["pre_seg_in.bias"])
        pooled = torch.zeros_like(seg)
        for k in range(3):
            m = (labels == k)[:, None].float()
            pooled += m * (seg * m).sum((2, 3), keepdim=True) / m.sum()
        ref = official_nafnet(state, torch.cat([x, pooled], 1), len(ENC))
        got = net(x, PriorOutput(labels, {}, {}))
    torch.testing.assert_close(got, ref, rtol=0, atol=5e-5)


def test_training_init_accepts_public_weights(tmp_path):
    state = official_state(0)
    torch.save({"params": state}, tmp_path / "nafnet.pth")
    init = read_init_state(tmp_path / "nafnet.pth", "nafnet")
    assert "middle.1.sca.weight" in init and not any("middle_blks" in k or "sca.1." in k for k in init)
    with pytest.raises(CheckpointError, match=r"nafnet.pth: a BasicSR NAFNet .* not 'map_nafnet'"):
        read_init_state(tmp_path / "nafnet.pth", "map_nafnet")


def test_training_recipe_model_init_loads_public_nafnet(tmp_path):
    from pipelines.config import load_config
    from restore.training.options import TrainConfig
    from restore.training.trainer import Trainer

    repo = Path(__file__).resolve().parents[2]
    torch.save({"params": official_state(0)}, tmp_path / "nafnet.pth")
    cfg = load_config(TrainConfig, repo / "pipelines" / "smoke_train_dehaze.yml", [
        "model.arch=nafnet", f"model.arch_kwargs={{width: {WIDTH}, enc_blocks: {ENC}, middle_blocks: {MIDDLE}, "
        f"dec_blocks: {DEC}}}", f"model.init={tmp_path / 'nafnet.pth'}", "prior.name=none",
        f"output_dir={tmp_path / 'run'}"])
    trainer = Trainer(cfg)
    ref = official_state(0)
    assert torch.equal(trainer.net.state_dict()["middle.1.sca.weight"], ref["middle_blks.1.sca.1.weight"])
    assert torch.equal(trainer.net.state_dict()["encoders.0.0.beta"], ref["encoders.0.0.beta"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"encoders.0.0.extra.weight": torch.zeros(1)}), "keys that neither NAFNet"),
        (lambda s: s.update({"intro.weight": torch.zeros(WIDTH, 1, 3, 3)}), "1-channel input"),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith("downs.1.")], "downs indexes"),
        (lambda s: s.update({"pre_seg.weight": torch.zeros(3, 3, 3, 3)}), "only in part"),
    ],
)
def test_malformed_public_files_name_the_file_and_the_problem(tmp_path, edit, message):
    state = official_state(0)
    edit(state)
    with pytest.raises(CheckpointError, match=message) as e:
        convert_public_nafnet(state, tmp_path / "bad.pth")
    assert "bad.pth" in str(e.value)


def test_public_file_without_a_task_and_mis_shaped_blocks(tmp_path):
    state = official_state(0)
    torch.save({"params": state}, tmp_path / "n.pth")
    with pytest.raises(CheckpointError, match="does not say whether it dehazes or deblurs"):
        load_restoration_checkpoint(tmp_path / "n.pth")
    state["encoders.0.0.conv1.weight"] = torch.zeros(3 * WIDTH, WIDTH, 1, 1)  # another expansion than NAFNet's 2
    torch.save({"params": state}, tmp_path / "n.pth")
    with pytest.raises(CheckpointError, match=r"(?s)n.pth.*encoders.0.0.conv1.weight.*a BasicSR NAFNet"):
        load_restoration_checkpoint(tmp_path / "n.pth", "deblur")
