"""The corrupted-dataset cache: computed once and reused, checksummed, keyed, safe under concurrency."""

from __future__ import annotations

import numpy as np
import pytest

import namex_bench.corruptions.cache as cache_module
import namex_bench.files as files_module
from namex_bench.corruptions import ALL_CORRUPTIONS, SEVERITIES, CorruptionCache, corrupt, corrupt_dataset, image_seed


def dataset(n: int = 4, size: int = 28, channels: int | None = None, seed: int = 0) -> np.ndarray:
    shape = (n, size, size) + ((channels,) if channels else ())
    base = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    return np.sort(base, axis=1)  # some structure, so blurs and JPEG have something to do


def entries(root) -> list:
    return sorted(p for p in root.rglob("*.npy"))


def test_the_second_method_hits_every_entry_and_recomputes_nothing(tmp_path, monkeypatch):
    images = dataset()
    first = CorruptionCache(tmp_path)  # method A's run
    results = {}
    for name in ALL_CORRUPTIONS:
        for severity in SEVERITIES:
            results[name, severity] = first.get_or_compute("mnist-test", images, name, severity, 0, workers=1, progress=False)
    assert first.computed == len(ALL_CORRUPTIONS) * len(SEVERITIES) and first.hits == 0
    assert first.images_computed == first.computed * len(images)

    def no_corruption(*args, **kwargs):
        raise AssertionError("a corruption was recomputed")

    monkeypatch.setattr(cache_module, "corrupt", no_corruption)
    second = CorruptionCache(tmp_path)  # method B's run, a new process in practice
    for (name, severity), expected in results.items():
        again = second.get_or_compute("mnist-test", images, name, severity, 0, workers=1, progress=False)
        assert np.array_equal(again, expected)
    assert second.computed == 0 and second.invalid == 0 and second.hits == len(results)
    assert {event for event, _ in second.events} == {"hit"}


def test_entries_are_image_by_image_engine_calls_with_per_image_seeds(tmp_path):
    images = dataset(3, 32, channels=3)
    out = CorruptionCache(tmp_path).get_or_compute("d", images, "glass_blur", 2, 11, workers=1, progress=False)
    for i, image in enumerate(images):
        assert np.array_equal(out[i], corrupt(image, "glass_blur", 2, image_seed(11, i)))
    assert not np.array_equal(out[0], out[1]) and image_seed(11, 0) != image_seed(11, 1)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "drop the checksum", "wrong checksum"])
def test_a_damaged_entry_is_detected_and_recomputed(tmp_path, damage):
    images = dataset()
    cache = CorruptionCache(tmp_path)
    original = cache.get_or_compute("d", images, "gaussian_noise", 3, 0, workers=1, progress=False)
    (path,) = entries(tmp_path)
    sidecar = path.with_name(path.name + ".sha256")
    if damage == "flip a byte":
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "drop the checksum":
        sidecar.unlink()
    else:
        sidecar.write_text("0" * 64 + "  " + path.name + "\n")
    again = cache.get_or_compute("d", images, "gaussian_noise", 3, 0, workers=1, progress=False)
    assert np.array_equal(again, original)
    assert cache.invalid == 1 and cache.computed == 2 and cache.hits == 0
    # the rewritten entry is intact: a third call is a plain hit
    cache.get_or_compute("d", images, "gaussian_noise", 3, 0, workers=1, progress=False)
    assert cache.hits == 1 and cache.invalid == 1


def test_the_key_changes_with_images_dataset_corruption_severity_seed_and_engine(tmp_path, monkeypatch):
    cache = CorruptionCache(tmp_path)
    images = dataset()
    changed = images.copy()
    changed[0, 0, 0] ^= 1
    base = cache.key("d", images, "fog", 2, 0)
    assert cache.key("d", images.copy(), "fog", 2, 0) == base  # content, not identity
    variants = [
        cache.key("d", changed, "fog", 2, 0),
        cache.key("d", images[:3], "fog", 2, 0),
        cache.key("d", images.reshape(4, 28, 28, 1), "fog", 2, 0),
        cache.key("other", images, "fog", 2, 0),
        cache.key("d", images, "frost", 2, 0),
        cache.key("d", images, "fog", 3, 0),
        cache.key("d", images, "fog", 2, 1),
    ]
    fingerprint = cache_module.engine_fingerprint()
    monkeypatch.setattr(cache_module, "engine_fingerprint", lambda: {**fingerprint, "engine": "999"})
    variants.append(cache.key("d", images, "fog", 2, 0))
    assert len({base, *variants}) == len(variants) + 1


def _fill(root, barrier, queue, images, locking):
    if not locking:
        files_module.fcntl = None  # this child only: no locks (namex_bench.files holds them)
    cache = CorruptionCache(root)
    barrier.wait()
    out = cache.get_or_compute("shared", images, "glass_blur", 3, 5, workers=1, progress=False)
    queue.put((cache.computed, cache.hits, out.tobytes()))


@pytest.mark.parametrize("locking", [True, False])
def test_two_processes_filling_one_entry_leave_one_valid_entry(tmp_path, locking):
    """With the lock one process computes and the other reads; without it both may compute — the same bytes."""
    if locking and files_module.fcntl is None:
        pytest.skip("no fcntl on this platform")
    images = dataset(12, 96, channels=3)
    ctx = cache_module.process_context()  # not fork: see process_context
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_fill, args=(tmp_path, barrier, queue, images, locking)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    computed, hits = sorted(r[0] for r in results), sum(r[1] for r in results)
    if locking:
        assert computed == [0, 1] and hits == 1  # computed once, read once
    else:  # usually both compute (the race); either way each process got the entry once
        assert 1 in computed and sum(computed) + hits == 2
    assert results[0][2] == results[1][2]
    (path,) = entries(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))
    check = CorruptionCache(tmp_path)
    out = check.get_or_compute("shared", images, "glass_blur", 3, 5, workers=1, progress=False)
    assert check.hits == 1 and check.invalid == 0 and out.tobytes() == results[0][2]


def test_parallel_workers_give_the_serial_bytes(tmp_path):
    images = dataset(7, 40, channels=3)
    with CorruptionCache(tmp_path) as cache:  # one pool, kept across calls
        for name in ("impulse_noise", "glass_blur", "frost", "jpeg_compression", "defocus_blur"):
            serial = corrupt_dataset(images, name, 4, 3, workers=1, progress=False)
            parallel = cache.get_or_compute("d", images, name, 4, 3, workers=2, progress=True)
            assert np.array_equal(serial, parallel), name
        assert cache.computed == 5


def test_bad_requests_are_refused(tmp_path):
    cache = CorruptionCache(tmp_path)
    with pytest.raises(ValueError, match="unknown corruption"):
        cache.get_or_compute("d", dataset(), "rain", 1, 0)
    with pytest.raises(ValueError, match="uint8"):
        cache.get_or_compute("d", dataset().astype(np.float32), "fog", 1, 0)
