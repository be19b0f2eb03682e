"""Promptable segmenters for the segmentation benchmark, chosen by name from :data:`SEGMENTERS`.

``robustsam`` and ``sam``: RobustSAM's robust or SAM path of one RobustSAM model
(:class:`PredictorSegmenter`); ``regions``: the weight-free over-segmentation, a prompt selecting the
regions it covers (:class:`RegionsSegmenter`); ``box``: the prompt box itself, filled, without looking at
the image (:class:`BoxSegmenter`), the floor a segmenter has to beat on box prompts. :func:`build_segmenters` builds them by name; the
segmenters built together share one model and one predictor, so each image is encoded once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from robustsam_prior.core.registry import Registry


class PromptSegmenter:
    """A promptable segmenter: ``set_image((H, W, 3) float [0, 1])``, then ``predict(prompt) -> (H, W) bool``."""

    name: str = "segmenter"
    meta: dict = {}

    def set_image(self, image: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def predict(self, prompt: dict) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_many(self, prompts: Sequence[dict]) -> list[np.ndarray]:
        """Masks for several prompts on the set image (override to batch them)."""
        return [self.predict(p) for p in prompts]


class _SharedPredictor:
    """One predictor per model, shared by the ``robustsam`` and ``sam`` segmenters: the image is
    encoded once and each path's prompt-independent features are cached by the predictor."""

    def __init__(self, model) -> None:
        from robustsam_prior import RobustSamPredictor

        self.predictor = RobustSamPredictor(model)
        self.image: np.ndarray | None = None  # kept alive so that the identity check below is sound

    def set_image(self, image: np.ndarray) -> None:
        if image is not self.image:
            self.predictor.set_image((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
            self.image = image


class PredictorSegmenter(PromptSegmenter):
    """RobustSAM (``path="robust"``) or SAM (``path="sam"``) through :class:`robustsam_prior.RobustSamPredictor`.

    Segmenters built on one ``shared`` predictor encode each image once; each passes its own ``path`` to
    every prediction, so sharing the predictor shares no decoder setting.
    """

    def __init__(
        self, *, model, path: str, name: str | None = None, shared: _SharedPredictor | None = None
    ) -> None:
        if path not in ("robust", "sam"):
            raise ValueError(f"path must be 'robust' or 'sam', got {path!r}")
        self.shared = shared if shared is not None else _SharedPredictor(model)
        self.path = path
        self.name = name or ("robustsam" if path == "robust" else "sam")
        sha = getattr(model, "checkpoint_sha256", None)
        self.meta = {"name": self.name, "path": path, "checkpoint_sha256": sha}

    @property
    def predictor(self):
        """The (shared) :class:`robustsam_prior.RobustSamPredictor`."""
        return self.shared.predictor

    def set_image(self, image: np.ndarray) -> None:
        self.shared.set_image(image)

    def predict(self, prompt: dict) -> np.ndarray:
        points, box = prompt.get("points"), prompt.get("box")
        masks, _, _ = self.predictor.predict_batch(
            point_coords=None if points is None else np.asarray(points)[None],
            point_labels=None if points is None else np.asarray(prompt.get("labels"))[None],
            boxes=None if box is None else np.asarray(box)[None],
            multimask_output=False,
            path=self.path,
        )
        return masks[0, 0].astype(bool)

    def predict_many(self, prompts: Sequence[dict]) -> list[np.ndarray]:
        if not prompts:
            return []
        if all("box" in p for p in prompts):
            masks, _, _ = self.predictor.predict_batch(
                boxes=np.stack([p["box"] for p in prompts]), multimask_output=False, path=self.path
            )
        elif len({len(p.get("points", ())) for p in prompts}) == 1 and all("points" in p for p in prompts):
            masks, _, _ = self.predictor.predict_batch(
                point_coords=np.stack([p["points"] for p in prompts]),
                point_labels=np.stack([p["labels"] for p in prompts]),
                multimask_output=False,
                path=self.path,
            )
        else:
            return super().predict_many(prompts)
        return [m[0].astype(bool) for m in masks]


class RegionsSegmenter(PromptSegmenter):
    """The weight-free ``regions`` prior used as a promptable segmenter.

    Box: the union of regions with more than half of their area inside the box. Points: the union
    of the regions under the positive points.
    """

    def __init__(self, **options: Any) -> None:
        from robustsam_prior import build_prior

        self.prior = build_prior("regions", **options)
        self.name = "regions"
        self.meta = dict(getattr(self.prior, "meta", {}) or {})
        self.labels: np.ndarray | None = None

    def set_image(self, image: np.ndarray) -> None:
        from robustsam_prior.core.io import to_tensor

        self.labels = self.prior(to_tensor(image)).labels[0].cpu().numpy()

    def predict(self, prompt: dict) -> np.ndarray:
        if self.labels is None:
            raise RuntimeError("set_image must be called before predict")
        lab = self.labels
        if "box" in prompt:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt["box"])
            inside = np.zeros(lab.shape, bool)
            inside[y0 : y1 + 1, x0 : x1 + 1] = True
            total = np.bincount(lab.ravel())
            within = np.bincount(lab[inside], minlength=total.size)
            keep = np.nonzero(within * 2 > total)[0]
        else:
            pts = np.asarray(prompt["points"]).astype(int)
            keep = np.unique(lab[pts[:, 1], pts[:, 0]])
        return np.isin(lab, keep)


class BoxSegmenter(PromptSegmenter):
    """The filled prompt box, whatever the image: what a box prompt alone already says about the object.

    Its IoU with an instance is area(instance) / area(its tight box), so on compact objects it is high,
    and a segmenter that scores below it makes the box prompt worse. Degradations that do not move the
    masks leave it unchanged. Box prompts only.
    """

    name = "box"
    meta = {"name": "box"}

    def __init__(self) -> None:
        self.shape: tuple[int, int] | None = None

    def set_image(self, image: np.ndarray) -> None:
        self.shape = tuple(image.shape[:2])

    def predict(self, prompt: dict) -> np.ndarray:
        if self.shape is None:
            raise RuntimeError("set_image must be called before predict")
        if "box" not in prompt:
            raise ValueError("the 'box' segmenter answers box prompts only (--prompt box)")
        x0, y0, x1, y1 = (int(round(float(v))) for v in prompt["box"])
        out = np.zeros(self.shape, bool)
        out[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
        return out


class SegmenterContext:
    """What the segmenters built together share: one RobustSAM model (``model``, or built from
    ``model_config``/``checkpoint`` when a segmenter first needs it; its encoder is the fast one unless
    ``fast_encoder=False``) and one predictor over it."""

    def __init__(
        self, *, model_config: str | dict | None = None, checkpoint: str | None = None, model=None,
        fast_encoder: bool = True,
    ) -> None:
        self.model_config, self.checkpoint, self.fast_encoder = model_config, checkpoint, fast_encoder
        self._model = model
        self._shared: _SharedPredictor | None = None

    def model(self):
        """The RobustSAM model, loaded on first call (``checkpoint``, else the variant's official file)."""
        if self._model is None:
            from robustsam_prior import build_robustsam, resolve_checkpoint

            variant = self.model_config if isinstance(self.model_config, str) else "vit_b"
            self._model = build_robustsam(
                self.model_config, resolve_checkpoint(self.checkpoint if self.checkpoint is not None else variant),
                fast=self.fast_encoder,
            )
        return self._model

    def shared_predictor(self) -> _SharedPredictor:
        """The predictor over :meth:`model`, created on first call."""
        if self._shared is None:
            self._shared = _SharedPredictor(self.model())
        return self._shared


#: name -> ``factory(context) -> PromptSegmenter``
SEGMENTERS: Registry[Callable[[SegmenterContext], PromptSegmenter]] = Registry("segmenter")


@SEGMENTERS.register("robustsam")
def _robustsam(context: SegmenterContext) -> PromptSegmenter:
    return PredictorSegmenter(model=context.model(), path="robust", shared=context.shared_predictor())


@SEGMENTERS.register("sam")
def _sam(context: SegmenterContext) -> PromptSegmenter:
    return PredictorSegmenter(model=context.model(), path="sam", shared=context.shared_predictor())


@SEGMENTERS.register("regions")
def _regions(context: SegmenterContext) -> PromptSegmenter:
    return RegionsSegmenter()


@SEGMENTERS.register("box")
def _box(context: SegmenterContext) -> PromptSegmenter:
    return BoxSegmenter()


def build_segmenters(
    names: Sequence[str], *, model_config: str | dict | None = None, checkpoint: str | None = None, model=None,
    fast_encoder: bool = True,
) -> list[PromptSegmenter]:
    """Segmenters by name (:data:`SEGMENTERS`: ``robustsam``, ``sam``, ``regions``, ``box``); one RobustSAM model and
    one predictor are shared by the first two (``fast_encoder=False``: its encoder runs the stock
    forward). An unknown name is a ``KeyError`` with a "did you mean", raised before any model is loaded."""
    factories = [SEGMENTERS.get(n) for n in names]
    context = SegmenterContext(model_config=model_config, checkpoint=checkpoint, model=model,
                               fast_encoder=fast_encoder)
    return [factory(context) for factory in factories]
