import subprocess
import sys

import pytest


def test_packages_resolve_names_lazily_without_importing_torch():
    code = (
        "import sys, robustsam_prior, robustsam_prior.degradations, eval.metrics, restore.training\n"
        "assert 'torch' not in sys.modules, 'a package __init__ imported torch'\n"
        "assert 'build_prior' in dir(robustsam_prior) and 'degrade' in dir(robustsam_prior.degradations)\n"
        "from robustsam_prior.degradations import degrade\n"
        "assert degrade.__module__ == 'robustsam_prior.degradations.api'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error():
    import robustsam_prior

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        robustsam_prior.nope  # noqa: B018
    with pytest.raises(ImportError):
        from robustsam_prior import nope  # noqa: F401
