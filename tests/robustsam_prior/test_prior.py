"""The Prior interface: build_prior, the registry, input validation, the ``none`` prior."""

from __future__ import annotations

import pytest
import torch

from robustsam_prior.core.versions import package_version
from robustsam_prior.prior import PRIORS, Prior, PriorOutput, build_prior, check_images


def test_builtin_priors_registered():
    build_prior("none")  # imports the built-in modules
    assert {"none", "regions", "robustsam", "sam"} <= set(PRIORS.names())


def test_unknown_prior_and_option_named():
    with pytest.raises(KeyError, match="did you mean 'regions'"):
        build_prior("region")
    with pytest.raises(ValueError, match=r"unknown option 'n_segment' \(did you mean 'n_segments'\?\)"):
        build_prior("regions", n_segment=10)
    with pytest.raises(ValueError, match="accepted: none"):
        build_prior("none", foo=1)


def test_none_prior_all_zero_no_features():
    prior = build_prior("none")
    x = torch.rand(2, 3, 7, 11)
    out = prior(x)
    assert isinstance(out, PriorOutput)
    assert out.labels.shape == (2, 7, 11) and out.labels.dtype == torch.int32
    assert int(out.labels.abs().sum()) == 0
    assert out.features == {}
    assert out.meta == {"name": "none", "options": {}, "version": package_version()}
    assert prior.meta == out.meta and prior.name == "none"


@pytest.mark.parametrize(
    "images, message",
    [
        ([[0.0]], "must be a torch.Tensor"),
        (torch.rand(3, 8, 8), r"shape \(B, 3, H, W\)"),
        (torch.rand(1, 1, 8, 8), r"shape \(B, 3, H, W\)"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "must be a float tensor"),
        (torch.rand(1, 3, 8, 8) * 255, r"values in \[0, 1\].*0\.\.255"),
        (torch.full((1, 3, 4, 4), float("nan")), r"values in \[0, 1\]"),
        (torch.rand(1, 3, 0, 8), "is empty"),
    ],
)
def test_bad_images_rejected(images, message):
    with pytest.raises(ValueError, match=message):
        check_images(images)
    with pytest.raises(ValueError, match="none prior input"):
        build_prior("none")(images)


def test_prior_with_wrong_output_shape_is_caught():
    class Broken(Prior):
        name = "broken"

        def forward(self, images):
            return PriorOutput(torch.zeros(1, 2, 2, dtype=torch.int32))

    with pytest.raises(RuntimeError, match=r"broken prior returned labels of shape \(1, 2, 2\)"):
        Broken()(torch.rand(1, 3, 4, 4))
    with pytest.raises(NotImplementedError):
        Prior()(torch.rand(1, 3, 4, 4))
