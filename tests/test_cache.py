"""The shared image cache: one build per machine reused by every run, waiting processes, failures passed on."""

import os
import threading
import time

import numpy as np
import pytest

from mura_mt.data import cache as cache_module
from mura_mt.data import read_mura_index
from mura_mt.data.cache import (
    CacheBuildError,
    build_image_cache,
    cache_key,
    default_cache_dir,
    wait_for_image_cache,
)
from tests.test_training import _fit


@pytest.fixture
def paths(synthetic_root) -> list[str]:
    return read_mura_index(synthetic_root, "valid")["path"].tolist()[:12]


def test_default_location_is_per_user_and_overridable(monkeypatch, tmp_path):
    monkeypatch.setenv("MURA_MT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("MURA_MT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg/mura_mt/images"


def test_key_follows_the_source_files_and_the_size(mura_copy):
    paths = read_mura_index(mura_copy, "valid")["path"].tolist()[:5]
    key = cache_key(paths, 64)
    assert cache_key(paths, 64) == key and cache_key(paths, 96) != key and cache_key(paths[::-1], 64) != key
    stat = os.stat(paths[2])
    os.utime(paths[2], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the same file, changed later
    assert cache_key(paths, 64) != key


def test_a_second_run_reuses_the_cache_without_decoding(synthetic_root, tmp_path, monkeypatch):
    shared = tmp_path / "shared-cache"
    _fit(synthetic_root, tmp_path / "first", f"data.cache_dir={shared}", "train.epochs=1")
    built = sorted(shared.glob("images-*.npy"))
    assert len(built) == 2  # train and val
    mtimes = [p.stat().st_mtime_ns for p in built]

    def no_decoding(path):
        raise AssertionError(f"decoded {path} again")

    monkeypatch.setattr(cache_module, "load_radiograph", no_decoding)
    _fit(synthetic_root, tmp_path / "second", f"data.cache_dir={shared}", "train.epochs=1")
    assert sorted(shared.glob("images-*.npy")) == built and [p.stat().st_mtime_ns for p in built] == mtimes
    assert not list(shared.glob(".*"))  # no temporary files left behind


def test_waiting_processes_open_the_builders_file(paths, tmp_path):
    results = {}

    def wait():
        results["waited"] = wait_for_image_cache(paths, 32, tmp_path, timeout_s=120, poll_s=0.02)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # nothing to open yet: it waits, it does not decode
    images, failures = build_image_cache(paths, 32, tmp_path, progress=False)
    waiter.join(timeout=60)
    waited_images, waited_failures = results["waited"]
    assert np.array_equal(waited_images, images) and waited_failures == failures == {}


def test_a_failed_build_stops_the_waiters_with_its_message(paths, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(cache_module, "letterbox", disk_full)
    with pytest.raises(OSError, match="No space left"):
        build_image_cache(paths, 32, tmp_path, progress=False)
    start = time.perf_counter()
    with pytest.raises(CacheBuildError, match="No space left on device"):
        wait_for_image_cache(paths, 32, tmp_path, timeout_s=60, poll_s=0.02)
    assert time.perf_counter() - start < 5
    assert not list(tmp_path.glob("images-*")) and not list(tmp_path.glob(".images-*"))  # nothing half-written


def test_waiting_is_bounded(paths, tmp_path):
    with pytest.raises(CacheBuildError, match="cache_wait_minutes"):
        wait_for_image_cache(paths, 32, tmp_path, timeout_s=0.2, poll_s=0.05)
