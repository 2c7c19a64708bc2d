"""The driver stays clean for a kernel reviewer: `checkpatch.pl --strict` finds nothing in any
of its files, and a build with sparse (C=1) and the extra warnings (W=1) warns about nothing.
No VM; about 10 s.

checkpatch.pl comes from the debug kernel's tree in the cache (``--kernel debug`` unpacks it)
or, failing that, from Debian's linux-source-6.1 tarball (three files, unpacked once into the
cache); sparse is Debian's ``sparse`` package (scripts/setup.sh installs both).  No check is
ignored: none of checkpatch's checks is wrong for this out-of-tree module as it stands.
"""

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from images import build as images
from images import debug

SRC = images.DRIVER_SRC
# checkpatch.pl reads these two from its own directory
CHECKPATCH_FILES = ("checkpatch.pl", "spelling.txt", "const_structs.checkpatch")


def _driver_files() -> list[Path]:
    """Every file of the module, as the image build sees it, and the uapi header."""
    return sorted(images._source_files(SRC, recursive=False)) + [images.UAPI_HEADER]


@pytest.fixture(scope="module")
def checkpatch() -> Path:
    found = sorted(images.cache_dir().glob("kernel-debug/*/linux/scripts/checkpatch.pl"))
    if found:
        return found[-1]
    tarball = debug.SOURCE_TARBALL
    if not tarball.exists():
        pytest.skip("no checkpatch.pl: neither the debug kernel's tree "
                    f"({images.cache_dir()}/kernel-debug) nor {tarball} "
                    "(apt-get install linux-source-6.1; ./scripts/test installs it)")
    st = tarball.stat()
    dest = images.cache_dir() / "checkpatch" / f"{st.st_size}-{st.st_mtime_ns}"
    script = dest / "linux-source-6.1" / "scripts" / "checkpatch.pl"
    if not script.exists():
        # unpacked beside, then renamed: a concurrent run never sees half a file
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent))
        subprocess.run(["tar", "-xJf", str(tarball), "-C", str(tmp),
                        *(f"linux-source-6.1/scripts/{f}" for f in CHECKPATCH_FILES)],
                       check=True, capture_output=True)
        try:
            tmp.rename(dest)
        except OSError:         # another run was first
            shutil.rmtree(tmp)
    return script


def test_checkpatch_strict_is_clean(checkpatch):
    files = _driver_files()
    res = subprocess.run(["perl", str(checkpatch), "--strict", "--no-tree", "--no-summary",
                          "--terse", "--show-types", "-f", *map(str, files)],
                         capture_output=True, text=True, cwd=SRC, check=False)
    report = (res.stdout + res.stderr).strip()
    assert res.returncode == 0 and not report, f"checkpatch.pl --strict:\n{report}"


def test_sparse_and_w1_build_is_clean(tmp_path):
    if not shutil.which("sparse"):
        pytest.skip("sparse is not installed (apt-get install sparse; ./scripts/test installs it)")
    abi, _ = images.headers_abi()
    kdir = Path(f"/usr/src/linux-headers-{abi}")
    if not kdir.is_dir():
        pytest.skip(f"no kernel headers at {kdir} (apt-get install linux-headers-amd64)")
    dst = tmp_path / "guest_driver"
    dst.mkdir()
    for f in images._source_files(SRC, recursive=False):
        shutil.copy2(f, dst / f.name)
    shutil.copytree(SRC / "include", dst / "include")
    sources = {p.name for p in dst.glob("*.c")}
    res = subprocess.run(["make", "-C", str(kdir), f"M={dst}", "C=1", "W=1", "modules"],
                         capture_output=True, text=True, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    # "CHECK file.c" shows that sparse ran on every source
    checked = set(re.findall(r"^\s+CHECK\s+\S*/(\w+\.c)$", out, re.MULTILINE))
    assert checked == sources, out[-4000:]
    warnings = [ln for ln in out.splitlines()
                if re.search(r"\b(warning|error)\b", ln, re.IGNORECASE) and "Skipping BTF" not in ln]
    assert not warnings, "\n".join(warnings)
