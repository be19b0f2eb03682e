"""The architecture registry (kept apart from ``__init__`` so that defining modules can import it)."""

from __future__ import annotations

from robustsam_prior.core.registry import Registry

ARCHS: Registry = Registry("architecture")
