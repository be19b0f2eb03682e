"""LPIPS integration: equal to the lpips package with the same (random) backbone; unavailable without weights."""

import pytest
import torch

from eval.metrics.lpips_metric import (
    BACKBONE_FILES,
    LpipsUnavailable,
    build_lpips,
    find_backbone_weights,
    lpips_status,
)

# the reference lpips model passes pretrained=False to torchvision, which warns about the old keyword
pytestmark = pytest.mark.filterwarnings("ignore:.*(pretrained|weight enum).*:UserWarning")


def _reference_and_weights(net, tmp_path, seed):
    """The lpips package's own model with a random trunk, and its trunk saved as torchvision's weight file."""
    import lpips

    torch.manual_seed(seed)
    ref = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    state = {}
    for (
        key,
        value,
    ) in ref.net.state_dict().items():  # lpips "slice<k>.<i>.<p>" -> torchvision "features.<i>.<p>"
        _, i, p = key.split(".")
        state[f"features.{i}.{p}"] = value.clone()
    torch.save(state, tmp_path / BACKBONE_FILES[net])
    return ref


def _compare(net, tmp_path):
    ref = _reference_and_weights(net, tmp_path, seed=7)
    metric = build_lpips(net, tmp_path)  # a folder holding the file
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 64, 48, generator=g), torch.rand(2, 3, 64, 48, generator=g)
    got = metric(x, y)
    with torch.no_grad():
        want = ref(x, y, normalize=True).reshape(-1).double()
    assert got.shape == (2,)
    assert torch.allclose(got, want, atol=1e-6, rtol=0), (got, want)
    assert metric(x, x).abs().max() < 1e-6
    return metric


def test_alex_equals_lpips_package(tmp_path):
    metric = _compare("alex", tmp_path)
    assert metric.backbone_sha256 and metric.lower_is_better


@pytest.mark.slow
def test_vgg_equals_lpips_package(tmp_path):
    _compare("vgg", tmp_path)


def test_absent_weights_report_unavailable_with_the_file_to_provide(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    ok, reason = lpips_status("alex")
    assert not ok
    assert "alexnet-owt-7be5be79.pth" in reason and str(tmp_path / "hub" / "checkpoints") in reason
    with pytest.raises(LpipsUnavailable, match="alexnet-owt-7be5be79.pth"):
        build_lpips("alex")
    with pytest.raises(LpipsUnavailable, match="from --lpips-weights"):
        find_backbone_weights("vgg", tmp_path / "nope.pth")
    ok, reason = lpips_status("vgg", tmp_path)
    assert not ok and "vgg16-397923af.pth" in reason


def test_hub_cache_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    _reference_and_weights("alex", tmp_path / "checkpoints", seed=0)
    assert find_backbone_weights("alex") == tmp_path / "checkpoints" / BACKBONE_FILES["alex"]
    assert lpips_status("alex")[0]


def test_wrong_file_fails_loudly(tmp_path):
    from robustsam_prior.core.checkpoint import CheckpointError

    torch.save({"features.0.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="missing keys"):
        build_lpips("alex", tmp_path / "bad.pth")


def test_input_validation(tmp_path):
    _reference_and_weights("alex", tmp_path, seed=0)
    metric = build_lpips("alex", tmp_path)
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        metric(x * 2 - 1, x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        metric(x[:, :1], x[:, :1])
    with pytest.raises(ValueError, match="shapes differ"):
        metric(x, torch.rand(1, 3, 32, 40))
    with pytest.raises(ValueError, match="float tensor"):
        metric(x.to(torch.uint8), x)
    with pytest.raises(ValueError, match="unknown LPIPS network"):
        build_lpips("squeezy")


def test_missing_linear_layers_are_reported(tmp_path, monkeypatch):
    import lpips

    _reference_and_weights("alex", tmp_path, seed=0)
    monkeypatch.setattr(lpips, "__file__", str(tmp_path / "lpips" / "__init__.py"))
    ok, reason = lpips_status("alex", tmp_path)
    assert not ok and "linear-layer weights" in reason
