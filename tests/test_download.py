"""Download, resume, MD5 and safe extraction, on a tarball the test builds and serves from a file:// URL."""

import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from data.download import UnsafeArchiveError, download_cub, fetch, safe_extract


def build_tarball(tmp_path: Path) -> tuple[Path, str]:
    src = tmp_path / "src" / "CUB_200_2011"
    (src / "images" / "001.A").mkdir(parents=True)
    (src / "images.txt").write_text("1 001.A/a.jpg\n")
    (src / "images" / "001.A" / "a.jpg").write_bytes(bytes(range(256)) * 4000)  # ~1 MB, several chunks
    archive = tmp_path / "serve" / "CUB_200_2011.tgz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="CUB_200_2011")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


def test_download_verify_extract_and_noop(tmp_path, capsys):
    archive, md5 = build_tarball(tmp_path)
    dest = tmp_path / "data"
    root = download_cub(archive.as_uri(), dest, md5)
    assert (root / "images.txt").read_text() == "1 001.A/a.jpg\n"
    assert (root / "images" / "001.A" / "a.jpg").stat().st_size == 1_024_000
    archive.unlink()  # a second call must not need the source
    assert download_cub(archive.as_uri(), dest, md5) == root
    assert "nothing to do" in capsys.readouterr().out


def test_resume_partial_download(tmp_path):
    archive, md5 = build_tarball(tmp_path)
    data = archive.read_bytes()
    target = tmp_path / "dl" / archive.name
    target.parent.mkdir()
    (target.parent / (archive.name + ".part")).write_bytes(data[: len(data) // 3])
    fetch(archive.as_uri(), target)
    assert hashlib.md5(target.read_bytes()).hexdigest() == md5
    assert not (target.parent / (archive.name + ".part")).exists()


def test_md5_mismatch_is_an_error(tmp_path):
    archive, _ = build_tarball(tmp_path)
    with pytest.raises(ValueError, match="does not match the expected 0+"):
        download_cub(archive.as_uri(), tmp_path / "data", "0" * 32)
    assert not (tmp_path / "data" / "CUB_200_2011").exists()


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, payload: bytes = b"x") -> Path:
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        if member.isreg():
            member.size = len(payload)
            tar.addfile(member, io.BytesIO(payload))
        else:
            tar.addfile(member)
    return path


@pytest.mark.parametrize(
    "name, kind, link",
    [
        ("../escape.txt", tarfile.REGTYPE, ""),
        ("/tmp/absolute.txt", tarfile.REGTYPE, ""),
        ("CUB_200_2011/../../escape.txt", tarfile.REGTYPE, ""),
        ("CUB_200_2011/link", tarfile.SYMTYPE, "../../outside"),
        ("CUB_200_2011/abslink", tarfile.SYMTYPE, "/etc/passwd"),
        ("CUB_200_2011/hard", tarfile.LNKTYPE, "../outside"),
    ],
)
def test_unsafe_members_refused_by_name(tmp_path, name, kind, link):
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    archive = _tar_with(tmp_path, member)
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=re.escape(repr(name))):
        safe_extract(archive, dest)
    assert not (tmp_path / "escape.txt").exists()


def test_safe_links_inside_are_allowed(tmp_path):
    member = tarfile.TarInfo("CUB_200_2011/inner")
    member.type, member.linkname = tarfile.SYMTYPE, "images.txt"
    archive = _tar_with(tmp_path, member)
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "CUB_200_2011" / "inner").is_symlink()
