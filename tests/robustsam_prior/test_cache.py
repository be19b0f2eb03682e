"""The on-disk prior cache: keys, hits without recomputation, corrupt entries, concurrent writers."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue as queue_module
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from robustsam_prior.cache import CacheEntryError, PriorCache, cache_key
from robustsam_prior.prior import Prior, PriorOutput, build_prior


class CountingPrior(Prior):
    """Labels = 2x2 blocks numbered in raster order; one feature map; counts its calls."""

    name = "counting"

    def __init__(self, *, tag: str = "a", big_ids: bool = False) -> None:
        super().__init__(tag=tag, big_ids=big_ids)
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        b, _, h, w = images.shape
        ids = torch.arange(h)[:, None] // 2 * ((w + 1) // 2) + torch.arange(w)[None] // 2
        if self.options["big_ids"]:
            ids = ids + 70_000  # beyond uint16
        feats = {"embedding": images[:, :2, ::2, ::2] * 3.14159 + 0.001}
        return PriorOutput(ids.to(torch.int32).expand(b, h, w).contiguous(), feats, self.meta)


def image(seed: int = 0, h: int = 12, w: int = 10) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def entries(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_hit_does_not_run_the_prior(tmp_path):
    prior, cache = CountingPrior(), PriorCache(tmp_path)
    first = cache.get_or_compute(prior, image())
    assert prior.calls == 1 and cache.stats == {"hits": 0, "misses": 1, "corrupt": 0}
    again = cache.get_or_compute(prior, image())
    assert prior.calls == 1 and cache.stats["hits"] == 1
    assert torch.equal(first.labels, again.labels)
    assert torch.equal(first.features["embedding"], again.features["embedding"])
    # a fresh cache object on the same folder (another process, later) also hits
    other = PriorCache(tmp_path)
    other.get_or_compute(prior, image())
    assert prior.calls == 1 and other.stats["hits"] == 1
    assert len(entries(tmp_path)) == 1


def test_output_matches_the_prior_up_to_float16(tmp_path):
    prior = CountingPrior()
    direct = prior(image())
    cached = PriorCache(tmp_path).get_or_compute(prior, image())
    assert torch.equal(cached.labels, direct.labels)
    ref = direct.features["embedding"].to(torch.float16).to(torch.float32)
    assert torch.equal(cached.features["embedding"], ref)
    assert cached.features["embedding"].dtype == torch.float32
    assert cached.meta == prior.meta


def test_key_depends_on_content_and_meta_only(tmp_path):
    meta = CountingPrior().meta
    a = cache_key(meta, image(0))
    assert a == cache_key(meta, image(0).clone())
    assert a != cache_key(meta, image(1))
    assert a != cache_key(CountingPrior(tag="b").meta, image(0))
    assert a != cache_key(meta, image(0).reshape(1, 3, 10, 12))  # same bytes, other shape
    # meta key order does not matter (canonical JSON)
    assert cache_key({"x": 1, "y": [1, 2]}, image(0)) == cache_key({"y": [1, 2], "x": 1}, image(0))
    with pytest.raises(ValueError, match=r"one image \(1, 3, H, W\)"):
        cache_key(meta, torch.rand(2, 3, 4, 4))


def test_other_prior_options_do_not_share_entries(tmp_path):
    cache = PriorCache(tmp_path)
    a, b = CountingPrior(tag="a"), CountingPrior(tag="b")
    cache.get_or_compute(a, image())
    cache.get_or_compute(b, image())
    assert a.calls == 1 and b.calls == 1 and len(entries(tmp_path)) == 2


def test_large_label_ids_and_batches(tmp_path):
    prior, cache = CountingPrior(big_ids=True), PriorCache(tmp_path)
    batch = torch.cat([image(0), image(1), image(0)])
    out = cache.get_or_compute(prior, batch)
    assert out.labels.shape == (3, 12, 10) and int(out.labels.min()) == 70_000
    assert prior.calls == 2  # the third image is the first one again: a hit
    assert torch.equal(out.labels, prior(batch).labels)
    assert cache.stats == {"hits": 1, "misses": 2, "corrupt": 0}


def test_regions_prior_round_trip(tmp_path):
    prior = build_prior("regions")
    x = torch.rand(1, 3, 40, 60)
    out = PriorCache(tmp_path).get_or_compute(prior, x)
    assert torch.equal(out.labels, prior(x).labels) and out.features == {}
    assert torch.equal(PriorCache(tmp_path).get_or_compute(prior, x).labels, out.labels)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip_byte", "empty", "wrong_key"])
def test_corrupt_entry_is_detected_and_recomputed(tmp_path, damage, caplog):
    prior, cache = CountingPrior(), PriorCache(tmp_path)
    good = cache.get_or_compute(prior, image())
    (path,) = entries(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 50)
    elif damage == "flip_byte":
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0xFF]) + data[-4:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a valid entry of another image copied under this key
        other = PriorCache(tmp_path / "other")
        other.get_or_compute(prior, image(5))
        path.write_bytes(entries(tmp_path / "other")[0].read_bytes())
        prior.calls -= 1
    with caplog.at_level("WARNING"):
        again = cache.get_or_compute(prior, image())
    assert prior.calls == 2 and cache.stats["corrupt"] == 1
    assert "recomputing" in caplog.text
    assert torch.equal(again.labels, good.labels)
    assert torch.equal(again.features["embedding"], good.features["embedding"])
    # the entry was rewritten and is valid now
    assert cache.load(cache_key(prior.meta, image()), prior.meta).labels.shape == (1, 12, 10)


def test_lookup_and_errors(tmp_path, caplog):
    prior, cache = CountingPrior(), PriorCache(tmp_path)
    assert cache.lookup(prior, image()) is None
    cache.get_or_compute(prior, image())
    assert cache.lookup(prior, image()) is not None
    path = entries(tmp_path)[0]
    path.write_bytes(b"junk")
    with caplog.at_level("WARNING"):
        assert cache.lookup(prior, image()) is None
    assert "unreadable cache entry" in caplog.text
    key = cache_key(prior.meta, image())
    with pytest.raises(CacheEntryError, match="unreadable"):
        cache.load(key, prior.meta)
    out = prior(image())
    cache.store(key, prior.meta, out)
    with pytest.raises(CacheEntryError, match="another prior meta"):
        cache.load(key, {"name": "other"})
    with pytest.raises(ValueError, match="batch of 1"):
        cache.store(key, prior.meta, PriorOutput.cat([out, out]))
    with pytest.raises(ValueError, match="must be >= 0"):
        cache.store(key, prior.meta, PriorOutput(out.labels - 5))
    with pytest.raises(ValueError, match=r"expects \(B, 3, H, W\)"):
        cache.get_or_compute(prior, torch.rand(3, 4, 4))


_WRITER = textwrap.dedent(
    """
    import torch

    def write(root, barrier, rounds, queue):
        from robustsam_prior.cache import PriorCache, cache_key
        from robustsam_prior.prior import build_prior

        prior = build_prior("regions", n_segments=20)
        x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
        out = prior(x)
        cache, key = PriorCache(root), cache_key(prior.meta, x)
        barrier.wait()
        for _ in range(rounds):  # both processes write the same key at the same time
            cache.store(key, prior.meta, out)
        queue.put(int(out.labels.sum()))
    """
)


@pytest.mark.slow  # two spawned interpreters importing torch: 5-15 s on 2 shared cores
def test_concurrent_writers_leave_one_valid_entry(tmp_path, monkeypatch):
    helper_dir = tmp_path / "helper"
    helper_dir.mkdir()
    (helper_dir / "_prior_cache_writer.py").write_text(_WRITER)
    monkeypatch.syspath_prepend(str(helper_dir))  # spawn children inherit sys.path
    import _prior_cache_writer as w

    root = tmp_path / "cache"
    prior = build_prior("regions", n_segments=20)
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    cache, key = PriorCache(root), cache_key(prior.meta, x)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=w.write, args=(str(root), barrier, 40, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    barrier.wait(timeout=120)
    sums, valid_reads, deadline = [], 0, time.monotonic() + 120
    while len(sums) < len(procs) and time.monotonic() < deadline:
        try:  # while both write, every read sees no entry or a whole, valid one
            cache.load(key, prior.meta)
            valid_reads += 1
        except FileNotFoundError:
            pass
        with contextlib.suppress(queue_module.Empty):
            sums.append(queue.get_nowait())
    sums.sort()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(sums) == 2 and sums[0] == sums[1]
    files = entries(root)
    assert len(files) == 1 and files[0].suffix == ".safetensors" and not files[0].name.startswith(".")
    got = PriorCache(root).load(key, prior.meta)
    assert int(got.labels.sum()) == sums[0]
    np.testing.assert_array_equal(got.labels.numpy(), prior(x).labels.numpy())
    sys.modules.pop("_prior_cache_writer", None)
