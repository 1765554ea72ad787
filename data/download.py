"""Download, verify and safely extract CUB-200-2011.

`python -m data.download [--url URL] [--dest DIR] [--md5 HEX]` fetches the official tarball with a progress
bar, resumes a partial download (`.part` file; HTTP Range requests, or skipping ahead for `file://` URLs),
checks its MD5, and extracts it under DEST, refusing any member that would land outside DEST (absolute
paths, `..`, links pointing outside, device files). A DEST that already holds the dataset is left alone.
"""

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

from cli import InputError

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CHUNK = 1 << 20


class UnsafeArchiveError(InputError, ValueError):
    """A tar member that would be written outside the destination folder."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, target: Path, *, timeout: float = 60.0) -> Path:
    """Download `url` to `target`, resuming from `target.part` if a partial download is there."""
    part = target.with_name(target.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url)
    if done and url.startswith(("http://", "https://")):
        request.add_header("Range", f"bytes={done}-")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        status = getattr(response, "status", None)
        length = response.headers.get("Content-Length")
        if status == 206:  # the server resumes for us
            total = done + int(length) if length else None
        else:  # a full body (a server without Range support, or a file:// URL): skip what we have
            total = int(length) if length else None
            skipped = 0
            while skipped < done:
                block = response.read(min(CHUNK, done - skipped))
                if not block:
                    break
                skipped += len(block)
            done = skipped
        with (
            open(part, "r+b" if done else "wb") as f,
            tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=target.name) as bar,
        ):
            f.seek(done)
            f.truncate()
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    os.replace(part, target)
    return target


# CUB-200-2011's tarball holds about 12,000 files and 1.2 GB: the caps leave room and stop a tar bomb.
MAX_MEMBERS = 100_000
MAX_TOTAL_BYTES = 8 << 30


def _check_member(member: tarfile.TarInfo, links: set[str]) -> None:
    """Refuse a member that could write outside the destination: an absolute or `..` path, a path through a
    link the archive itself declares (a link chain), a link whose target leaves the destination, a device."""
    name = member.name
    parts = Path(name).parts
    if os.path.isabs(name) or ".." in parts:
        raise UnsafeArchiveError(f"refusing to extract {name!r}: it would land outside the destination")
    for i in range(1, len(parts)):
        if "/".join(parts[:i]) in links:
            raise UnsafeArchiveError(
                f"refusing to extract {name!r}: its path goes through the link {'/'.join(parts[:i])!r}"
            )
    if member.issym() or member.islnk():
        base = Path(*parts[:-1]) if member.issym() else Path()
        target = os.path.normpath(base / member.linkname)
        if os.path.isabs(member.linkname) or target == ".." or target.startswith("../"):
            raise UnsafeArchiveError(f"refusing to extract {name!r}: link to {member.linkname!r} points outside")
        if member.issym():
            links.add("/".join(parts))
    if member.isdev() or member.isfifo():
        raise UnsafeArchiveError(f"refusing to extract {name!r}: device files and FIFOs are not allowed")


def safe_extract(archive: Path, dest: Path, *, required: str | None = None) -> None:
    """Extract `archive` into `dest` after checking every member (paths, links, count and total size).

    Everything is extracted into a temporary folder inside `dest` and moved into place only when all of it
    succeeded: a refused or failing archive leaves nothing behind, as does one without the member `required`."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        _extract_checked(archive, dest, required)
    except (tarfile.TarError, EOFError, OSError) as e:  # not a tarball, truncated, bad gzip data, a full disk
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if isinstance(e, tarfile.ReadError):
            first_line = "not a tar or .tgz archive, or a truncated one"
        raise UnsafeArchiveError(f"{archive}: cannot extract it ({first_line}); nothing extracted") from None


def _extract_checked(archive: Path, dest: Path, required: str | None) -> None:
    with tarfile.open(archive) as tar:
        members: list[tarfile.TarInfo] = []
        links: set[str] = set()
        total = 0
        for member in tar:
            members.append(member)
            if len(members) > MAX_MEMBERS:
                raise UnsafeArchiveError(f"{archive}: more than {MAX_MEMBERS:,} members (a tar bomb?)")
            total += max(member.size, 0)
            if total > MAX_TOTAL_BYTES:
                raise UnsafeArchiveError(f"{archive}: more than {MAX_TOTAL_BYTES:,} bytes uncompressed (a tar bomb?)")
            _check_member(member, links)
        if required is not None and required not in {m.name.removeprefix("./") for m in members}:
            raise UnsafeArchiveError(f"{archive} has no {required}: not the archive expected, nothing extracted")
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
        try:
            tar.extractall(staging, members=members, filter="data")
            for entry in staging.iterdir():
                if (dest / entry.name).exists():
                    raise UnsafeArchiveError(f"refusing to extract over the existing {dest / entry.name}")
            for entry in staging.iterdir():
                os.replace(entry, dest / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def download_cub(url: str = CUB_URL, dest: str | Path = "data", md5: str | None = CUB_MD5) -> Path:
    """Make sure `dest/CUB_200_2011` holds the dataset; return that folder."""
    dest = Path(dest)
    root = dest / "CUB_200_2011"
    if (root / "images.txt").is_file():
        print(f"{root} already holds CUB-200-2011: nothing to do")
        return root
    dest.mkdir(parents=True, exist_ok=True)
    if "://" not in url:
        raise ValueError(f"--url {url}: not a URL (a local file is file:///absolute/path)")
    archive = dest / Path(urllib.request.url2pathname(url.split("?")[0])).name
    downloaded = not archive.exists()
    if downloaded:
        fetch(url, archive)
    if md5:
        actual = md5sum(archive)
        if actual != md5.lower():
            bad = archive.with_name(archive.name + ".bad")
            os.replace(archive, bad)
            raise ValueError(
                f"{archive}: MD5 {actual} does not match the expected {md5}; moved to {bad}, download again"
            )
    try:
        safe_extract(archive, dest, required="CUB_200_2011/images.txt")
    except UnsafeArchiveError:
        if downloaded:  # a refused download is not kept (a file the user put there is theirs)
            archive.unlink(missing_ok=True)
        raise
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Download and extract CUB-200-2011.")
    parser.add_argument("--url", default=CUB_URL, help=f"tarball URL (default: {CUB_URL})")
    parser.add_argument("--dest", default="data", help="folder to put CUB_200_2011/ in (default: data)")
    parser.add_argument("--md5", default=CUB_MD5, help=f"expected MD5, '' to skip the check (default: {CUB_MD5})")
    args = parser.parse_args(argv)
    print(download_cub(args.url, args.dest, args.md5 or None))


def cli() -> None:
    try:
        main()
    except (UnsafeArchiveError, tarfile.TarError, EOFError, OSError, ValueError) as e:
        # Refusals, a truncated or non-gzip file, a checksum mismatch, a bad URL, a full disk: one line each.
        sys.exit(f"data.download: error: {e}")


if __name__ == "__main__":
    cli()
