"""The guest image build: content-addressed caching and clear prerequisite errors."""

import shutil
import time
from pathlib import Path

import pytest

from images import build as images


@pytest.fixture(scope="module")
def image():
    return images.build()


def test_rebuild_with_nothing_changed_is_fast(image):
    t = time.monotonic()
    again = images.build()
    assert time.monotonic() - t < 2.0
    assert again == image


def test_kernel_matches_the_headers(image):
    abi, version = images.headers_abi()
    assert (image.kernel.abi, image.kernel.version) == (abi, version)
    assert image.boot.read_bytes()[:4] == b"\x7fELF"
    assert f"vermagic={abi} ".encode() in image.driver.read_bytes()


# a source file and the internal header: every file of the module is part of the cache key
@pytest.mark.parametrize("changed", ["fifolab_main.c", "fifolab.h"])
def test_changed_driver_source_rebuilds_module_and_initramfs_only(image, tmp_path, changed):
    src = tmp_path / "guest_driver"
    shutil.copytree(images.DRIVER_SRC, src, ignore=shutil.ignore_patterns("programs"))
    with open(src / changed, "a") as f:
        f.write(f"\n/* cache test {time.time()} */\n")
    new = images.build(driver_src=src)
    try:
        assert new.kernel == image.kernel
        assert new.programs == image.programs
        assert new.driver != image.driver
        assert new.initrd != image.initrd
    finally:
        shutil.rmtree(new.driver.parent)
        new.initrd.unlink()


def test_missing_prerequisite_names_package_and_command(monkeypatch):
    real = shutil.which
    monkeypatch.setattr(images.shutil, "which",
                        lambda exe: None if exe == "qemu-system-x86_64" else real(exe))
    with pytest.raises(images.MissingPrerequisite) as err:
        images.require_host_tools()
    assert "apt-get install -y qemu-system-x86" in str(err.value)


def test_cpio_is_newc():
    c = images.Cpio()
    c.file("etc/x", b"abc", 0o600)
    data = c.bytes()
    assert data.startswith(b"070701")
    assert b"etc/x\0" in data and b"TRAILER!!!" in data
    assert len(data) % 4 == 0
