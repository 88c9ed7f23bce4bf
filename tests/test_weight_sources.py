"""Pretrained weights by name: resolved to a published file and checksum, downloaded once into
$TYMPAN_CACHE (resumable, verified, atomic), then used offline; a mirror folder or URL stands in
for the network. Served by a real HTTP server on 127.0.0.1 with fabricated files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from tests.test_weights import pann_checkpoint
from tympan.errors import DataError
from tympan.models import Cnn10, sources


@pytest.fixture
def checkpoint(tmp_path) -> tuple[bytes, dict]:
    path = tmp_path / "made.pth"
    state = pann_checkpoint(path)
    return path.read_bytes(), state


def test_a_name_downloads_once_resumes_after_a_cut_and_then_works_offline(serve, checkpoint, tmp_path, monkeypatch):
    body, state = checkpoint
    server, base = serve({"Tiny_mAP=0.1.pth": body}, cut="Tiny_mAP=0.1.pth")
    sha = hashlib.sha256(body).hexdigest()
    monkeypatch.setitem(
        sources.CATALOGUE, "Tiny_mAP=0.1", sources.Published(f"{base}/Tiny_mAP%3D0.1.pth", f"sha256:{sha}")
    )
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TYMPAN_WEIGHTS_MIRROR", raising=False)
    cached = tmp_path / "cache/weights/Tiny_mAP=0.1.pth"

    with pytest.raises(DataError, match="connection closed after .* fetch again to resume"):
        Cnn10(n_outputs=527, pretrained="Tiny_mAP=0.1")
    assert not cached.exists() and cached.with_name(cached.name + ".part").stat().st_size == len(body) // 2

    model = Cnn10(n_outputs=527, pretrained="Tiny_mAP=0.1")  # resumes from the part
    assert server.requests[-1] == ("Tiny_mAP=0.1.pth", f"bytes={len(body) // 2}-")
    assert cached.read_bytes() == body and sorted(p.name for p in cached.parent.iterdir()) == [cached.name]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert model.provenance == sources.Provenance("Tiny_mAP=0.1", sha)

    server.shutdown()  # offline from here: the cached copy serves, verified
    again = Cnn10(n_outputs=527, pretrained="Tiny_mAP=0.1")
    assert torch.equal(again.fc_out.weight, model.fc_out.weight) and len(server.requests) == 2


def test_a_checksum_mismatch_leaves_nothing_in_the_cache(serve, checkpoint, tmp_path, monkeypatch):
    body, _ = checkpoint
    _, base = serve({"Bad.pth": body})
    monkeypatch.setitem(sources.CATALOGUE, "Bad", sources.Published(f"{base}/Bad.pth", "md5:" + "0" * 32))
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TYMPAN_WEIGHTS_MIRROR", raising=False)
    with pytest.raises(DataError, match=r"Bad.pth: md5 is [0-9a-f]{32}, expected 0{32}; removed"):
        Cnn10(pretrained="Bad")
    assert list((tmp_path / "cache/weights").iterdir()) == []


def test_a_mirror_folder_or_url_stands_in_for_the_published_host(serve, checkpoint, tmp_path, monkeypatch):
    """The catalogue's real Zenodo entries, with the file fetched from the mirror: its checksum is the
    published one, so a fabricated file there is refused, naming the checksum (the network is never tried)."""
    body, _ = checkpoint
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "Cnn10_mAP=0.380.pth").write_bytes(body)
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", str(mirror))
    with pytest.raises(
        DataError, match=r"mirror/Cnn10_mAP%3D0.380.pth: md5 is .* expected bfb1f1f9968938fa8ef4012b8471f5f6"
    ):
        Cnn10(pretrained="Cnn10_mAP=0.380")
    # a URL mirror, and an entry whose checksum the fabricated file has
    server, base = serve({"Mine.pth": body})
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", base)
    sha = hashlib.sha256(body).hexdigest()
    monkeypatch.setitem(
        sources.CATALOGUE, "Mine", sources.Published("https://unreachable.invalid/Mine.pth", f"sha256:{sha}")
    )
    assert Cnn10(pretrained="Mine").provenance.sha256 == sha and server.requests == [("Mine.pth", None)]


def test_unknown_names_and_hub_ids_fail_with_what_is_known(tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", str(tmp_path))
    with pytest.raises(DataError, match=r"Cnn14_mAP=0.43: no such weights file, and not a published name \(Cnn10_mAP"):
        Cnn10(pretrained="Cnn14_mAP=0.43")
    with pytest.raises(DataError, match="not in the weights mirror"):
        sources.hub_dir("facebook/wav2vec2-base")
    (tmp_path / "huggingface/facebook/wav2vec2-base").mkdir(parents=True)
    assert sources.hub_dir("facebook/wav2vec2-base") == tmp_path / "huggingface/facebook/wav2vec2-base"
    with pytest.raises(DataError, match="not a hub id"):
        sources.hub_dir("../etc")
    assert (
        sources.is_local("runs/x/w.pth")
        and sources.is_local("w.safetensors")
        and not sources.is_local("Cnn14_mAP=0.431")
    )


def test_torchvision_tags_resolve_to_the_release_and_its_hash_prefix(tmp_path, monkeypatch):
    """torchvision's resnet18 IMAGENET1K_V1 file name carries its sha256's first digits: a mirror file
    that does not have them is refused (the real file is 45 MB and not here)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "resnet18-f37072fd.pth").write_bytes(b"not the weights")
    monkeypatch.setenv("TYMPAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TYMPAN_WEIGHTS_MIRROR", str(mirror))
    with pytest.raises(DataError, match="sha256 is .* expected f37072fd"):
        sources.torchvision_file("resnet18", "IMAGENET1K_V1")
    with pytest.raises(DataError, match="has no weights 'IMAGENET9K'; it has: IMAGENET1K_V1"):
        sources.torchvision_file("resnet18", "IMAGENET9K")
    assert not Path(tmp_path / "cache/weights/resnet18-f37072fd.pth").exists()
