"""The mutant list of `fifolab mutants` (harness/mutants.py) stays alive: every mutant still
applies to the code exactly once, names are unique, and every driver mutant compiles -- so a
mutant can only ever be killed by a test, never by a typo.  Running the suite against them is
`fifolab mutants` (too long for every run; the README has the last score)."""

import shutil
import subprocess

import pytest

from harness import mutants
from images import build as images


def test_names_are_unique_and_every_mutant_says_what_it_breaks():
    names = [m.name for m in mutants.MUTANTS]
    assert len(names) == len(set(names))
    assert all(m.breaks for m in mutants.MUTANTS)
    driver = [m for m in mutants.MUTANTS if mutants.is_driver(m)]
    model = [m for m in mutants.MUTANTS if not mutants.is_driver(m)]
    assert len(driver) >= 25 and len(model) >= 4


@pytest.mark.parametrize("m", mutants.MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_once(m, tmp_path):
    (tmp_path / m.file).parent.mkdir(parents=True)
    shutil.copy2(mutants.REPO / m.file, tmp_path / m.file)
    mutants.apply(tmp_path, m)
    assert (tmp_path / m.file).read_text() != (mutants.REPO / m.file).read_text()


def test_a_mutant_that_no_longer_fits_is_an_error(tmp_path):
    file = f"{mutants.DRIVER_DIR}/fifolab_main.c"
    m = mutants.Mutant("gone", file, "no such text anywhere", "x", "nothing")
    (tmp_path / mutants.DRIVER_DIR).mkdir()
    shutil.copy2(mutants.REPO / file, tmp_path / file)
    with pytest.raises(mutants.MutantError, match="occurs 0 times"):
        mutants.apply(tmp_path, m)


@pytest.mark.parametrize("m", [m for m in mutants.MUTANTS if mutants.is_driver(m)],
                         ids=lambda m: m.name)
def test_driver_mutant_compiles(m, tmp_path):
    abi, _ = images.headers_abi()
    src, dst = mutants.REPO / mutants.DRIVER_DIR, tmp_path / mutants.DRIVER_DIR
    dst.mkdir()
    # what the image build compiles: every .c, .h, Kbuild and Makefile of the module
    for f in images._source_files(src, recursive=False):
        shutil.copy2(f, dst / f.name)
    shutil.copytree(src / "include", dst / "include")
    mutants.apply(tmp_path, m)
    res = subprocess.run(["make", "-C", f"/usr/src/linux-headers-{abi}", f"M={dst}", "modules"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
