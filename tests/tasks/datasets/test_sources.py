"""Checking dataset files against their checksums, and downloading from a local HTTP server:
mirrors, checksum mismatches, archives unpacked without letting a member out of the folder."""

from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import pytest

from tasks import datasets
from tasks.datasets import sources
from tasks.datasets.fetch import DownloadError
from tasks.datasets.sources import Expect, Remote, Source
from tests.conftest import need_fashion_mnist
from tests.tasks.datasets.serving import Served
from tests.tasks.datasets.writers import CIFAR10, write_cifar_binary, write_idx, write_tar_gz

STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def idx_source(root: Path, urls: str = "") -> Source:
    """A source whose checksums are those of the idx files written under ``root``."""
    gz = {s: (root / f"{s}.gz").read_bytes() for s in STEMS}
    remotes = tuple(
        Remote(f"{s}.gz", (f"{urls}/{s}.gz",), md5(b), content_md5=md5(gzip.decompress(b)))
        for s, b in gz.items()
    )
    checks = {f"{s}.gz": Expect(md5(b), md5(gzip.decompress(b))) for s, b in gz.items()}
    checks |= {s: Expect(md5(gzip.decompress(b))) for s, b in gz.items()}
    return Source(remotes, tuple(f"{s}.gz" for s in STEMS), checks)


def cifar_source(url: str, archive: bytes, per_batch: int = 4, n_test: int = 3) -> Source:
    records = {f: per_batch for f in CIFAR10.train} | {CIFAR10.test: n_test}
    return Source(
        (Remote("cifar-10-binary.tar.gz", (url,), md5(archive), extract=True),),
        tuple(f"cifar-10-batches-bin/{f}" for f in records),
        {f: Expect(records=n, record_bytes=3073) for f, n in records.items()},
    )


def cifar_archive(tmp_path: Path) -> bytes:
    write_cifar_binary(tmp_path / "made")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    shutil.rmtree(tmp_path / "made")
    return buf.getvalue()


def test_verify_passes_written_files_then_finds_a_changed_byte(tmp_path: Path) -> None:
    write_idx(tmp_path)
    source = idx_source(tmp_path)
    rows = sources.verify("mnist", tmp_path, source=source)
    assert [r.file for r in rows] == [f"{s}.gz" for s in STEMS]
    assert all(r.ok for r in rows)

    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[9] ^= 1
    labels.write_bytes(gzip.compress(bytes(raw)))
    bad = {r.file: r for r in sources.verify("mnist", tmp_path, source=source)}
    assert not bad["t10k-labels-idx1-ubyte.gz"].ok
    assert "decompressed md5" in bad["t10k-labels-idx1-ubyte.gz"].found
    assert sum(r.ok for r in bad.values()) == 3


def test_a_recompressed_gz_passes_by_its_content_and_a_raw_file_by_its_own(tmp_path: Path) -> None:
    write_idx(tmp_path)
    source = idx_source(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    content = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(content, compresslevel=1, mtime=12345))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(
        gzip.decompress((tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes())
    )
    rows = {r.file: r for r in sources.verify("mnist", tmp_path, source=source)}
    assert all(r.ok for r in rows.values()), rows
    assert "re-compressed" in rows["train-images-idx3-ubyte.gz"].found
    assert "t10k-images-idx3-ubyte" in rows
    assert "t10k-images-idx3-ubyte.gz" in rows


def test_verify_names_missing_files(tmp_path: Path) -> None:
    rows = sources.verify("cifar10", tmp_path)
    assert [r.file for r in rows][0] == "cifar-10-batches-bin/data_batch_1.bin"
    assert {r.found for r in rows} == {"missing"}
    assert not any(r.ok for r in rows)
    assert "no published checksum exists" in rows[0].expected
    svhn = sources.verify("svhn", tmp_path)
    assert [(r.file, r.expected) for r in svhn] == [
        ("train_32x32.mat", "md5 e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "md5 eb5a983be6a315427106f1b164d9cef3"),
    ]


def test_cifar_binary_files_are_checked_by_record_count(tmp_path: Path) -> None:
    write_cifar_binary(tmp_path)
    source = cifar_source("http://unused", b"")
    rows = sources.verify("cifar10", tmp_path, source=source)
    assert len(rows) == 6
    assert all(r.ok for r in rows)
    assert rows[0].found == "4 records"
    assert sources.verify("cifar10", tmp_path / "cifar-10-batches-bin", source=source) != []
    # the real table: 10 000 records per file, so these small files do not pass
    real = sources.verify("cifar10", tmp_path)
    assert not any(r.ok for r in real)
    assert real[0].expected.startswith("10000 records of 3073")
    batch = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-1])
    rows = {r.file: r for r in sources.verify("cifar10", tmp_path, source=source)}
    assert "not a whole number of records" in rows["cifar-10-batches-bin/test_batch.bin"].found


def test_the_real_fashion_mnist_matches_the_published_data() -> None:
    """Debian re-compressed the gz files, so their own MD5s differ from the published ones;
    their decompressed bytes match the published data."""
    folder = need_fashion_mnist()
    rows = sources.verify("fashion_mnist", folder)
    assert [r.file for r in rows] == [f"{s}.gz" for s in STEMS]
    assert all(r.ok for r in rows), rows
    assert rows[0].expected == "md5 8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert "f4a8712d7a061bf5bd6d2ca38dc4d50a" in rows[0].found


def test_download_fetches_checks_and_unpacks_an_archive(tmp_path: Path, served: Served) -> None:
    archive = cifar_archive(tmp_path)
    (served.folder / "c.tar.gz").write_bytes(archive)
    source = cifar_source(f"{served.url}/c.tar.gz", archive)
    root = tmp_path / "data"
    seen: list[tuple[str, int, int | None]] = []
    assert sources.download("cifar10", root, lambda *a: seen.append(a), source=source) == root
    assert sorted(p.name for p in (root / "cifar-10-batches-bin").iterdir()) == sorted(
        [*CIFAR10.train, CIFAR10.test, "batches.meta.txt"]
    )
    assert not (root / "cifar-10-binary.tar.gz").exists()  # removed once unpacked
    assert seen[-1] == ("cifar-10-binary.tar.gz", len(archive), len(archive))
    data = datasets.load("cifar10", datasets.params_of("cifar10", {"root": str(root)}))
    assert data.n_train == 20
    sources.download("cifar10", root, source=source)
    assert served.requests == ["/c.tar.gz"]  # the files check out: nothing fetched again


def test_the_next_mirror_is_tried_and_a_wrong_checksum_is_refused(
    tmp_path: Path, served: Served
) -> None:
    write_idx(served.folder / "m")
    good = idx_source(served.folder / "m", f"{served.url}/m")
    remotes = tuple(
        Remote(
            r.file, (f"{served.url}/nowhere/{r.file}", *r.urls), r.md5, content_md5=r.content_md5
        )
        for r in good.remotes
    )
    root = tmp_path / "data"
    sources.download("mnist", root, source=Source(remotes, good.files, good.checks))
    assert sorted(p.name for p in root.iterdir()) == sorted(f"{s}.gz" for s in STEMS)

    wrong = Remote("x.gz", (f"{served.url}/m/{STEMS[0]}.gz",), "0" * 32)
    with pytest.raises(
        DownloadError, match=rf"/m/{STEMS[0]}.gz: md5 [0-9a-f]{{32}}, expected 0{{32}}"
    ):
        sources.download("mnist", tmp_path / "w", source=Source((wrong,), ("x.gz",), {}))
    assert list((tmp_path / "w").iterdir()) == []  # no partial file left behind
    missing = Remote("y.gz", (f"{served.url}/none.gz",), "0" * 32)
    with pytest.raises(DownloadError, match="404"):
        sources.download("mnist", tmp_path / "w", source=Source((missing,), ("y.gz",), {}))


@pytest.mark.parametrize(
    ("member", "why"),
    [
        ("../escaped.bin", "a '..' component"),
        ("cifar-10-batches-bin/../../escaped.bin", "a '..' component"),
        ("ABSOLUTE", "an absolute path"),
    ],
)
def test_an_archive_with_a_member_escaping_the_folder_is_refused(
    tmp_path: Path, served: Served, member: str, why: str
) -> None:
    member = str(tmp_path / "escaped.bin") if member == "ABSOLUTE" else member
    archive = write_tar_gz(
        served.folder / "bad.tar.gz", {"cifar-10-batches-bin/ok.bin": b"x", member: b"evil"}
    ).read_bytes()
    root = tmp_path / "deep" / "data"
    source = cifar_source(f"{served.url}/bad.tar.gz", archive)
    with pytest.raises(DownloadError, match=f"refused, members would escape .*has {why}"):
        sources.download("cifar10", root, source=source)
    assert not (tmp_path / "deep" / "escaped.bin").exists()
    assert not (tmp_path / "escaped.bin").exists()
    assert not (root / "cifar-10-batches-bin").exists()  # nothing unpacked at all


def test_an_archive_with_a_link_is_refused(tmp_path: Path, served: Served) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (served.folder / "link.tar.gz").write_bytes(buf.getvalue())
    source = cifar_source(f"{served.url}/link.tar.gz", buf.getvalue())
    with pytest.raises(DownloadError, match="has a link or special file"):
        sources.download("cifar10", tmp_path / "data", source=source)


def test_a_mirror_serves_the_real_fashion_mnist_files(
    tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``$ADVGRID_DATA_MIRROR`` with the real table: the published checksums, Debian's
    re-compressed copy accepted by the MD5 of its content."""
    folder = need_fashion_mnist()
    (served.folder / "fashion_mnist").symlink_to(folder)
    monkeypatch.setenv(sources.ENV_MIRROR, served.url)
    root = sources.download("fashion_mnist", tmp_path / "fm")
    assert sorted(served.requests) == sorted(f"/fashion_mnist/{s}.gz" for s in STEMS)
    assert all(r.ok for r in sources.verify("fashion_mnist", root))


def test_datasets_without_a_source_say_so(tmp_path: Path) -> None:
    from tasks.errors import InputError, UnknownComponentError

    with pytest.raises(InputError, match="'imagefolder' has no published files"):
        sources.verify("imagefolder", tmp_path)
    with pytest.raises(InputError, match="'digits' is generated, not read from files"):
        sources.folder_of("digits")
    with pytest.raises(UnknownComponentError, match="did you mean 'cifar10'"):
        sources.download("cifar1", tmp_path)
