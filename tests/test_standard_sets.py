"""The standard sets (deepstdp.data.standard) read from files written here in their official
formats at tiny sizes, and the one resumable, checked download (deepstdp.data.datasets)."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import numpy as np
import pytest

from deepstdp.data import datasets as data
from deepstdp.data import standard
from deepstdp.data.standard import Remote, Source
from deepstdp.runtime.util import DeepSTDPError, SettingError

RNG = np.random.default_rng(0)


def _pickle(path: Path, obj: dict, protocol: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _cifar_rows(n: int) -> np.ndarray:
    return RNG.integers(0, 256, (n, 3072), dtype=np.uint8)


@pytest.fixture
def cifar10(tmp_path: Path) -> Path:
    """cifar-10-batches-py with 2 images a train batch, 3 test images; bytes keys."""
    root = tmp_path / "cifar-10-batches-py"
    names = [f"c{i}".encode() for i in range(10)]
    _pickle(root / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    for i in range(1, 6):
        _pickle(root / f"data_batch_{i}", {b"data": _cifar_rows(2), b"labels": [i, i + 1],
                                           b"batch_label": b"x", b"filenames": [b"a", b"b"]})
    _pickle(root / "test_batch", {b"data": _cifar_rows(3), b"labels": [0, 9, 5]}, protocol=4)
    return root


def test_cifar10_shapes_labels_names_and_channel_order(cifar10: Path) -> None:
    train = data.load_dataset("cifar10", "train", data_root=cifar10.parent)  # the parent
    assert train.images.shape == (10, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
    assert train.classes == [f"c{i}" for i in range(10)] and train.name == "cifar10/train"
    rows = pickle.loads((cifar10 / "data_batch_1").read_bytes(), encoding="bytes")[b"data"]
    # Channel-major rows: the first 1024 bytes are the red plane, row by row.
    assert np.array_equal(train.images[0, ..., 0], rows[0, :1024].reshape(32, 32))
    assert np.array_equal(train.images[1, 3, 5], rows[1, [3 * 32 + 5 + c * 1024 for c in
                                                          range(3)]])
    val = data.load_dataset("cifar10", "val", data_root=cifar10)  # the folder itself
    assert val.images.shape == (3, 32, 32, 3) and val.labels.tolist() == [0, 9, 5]
    assert val.labelled and val.labelled_mask.all()


@pytest.fixture
def cifar100(tmp_path: Path) -> Path:
    root = tmp_path / "cifar-100-python"
    _pickle(root / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                            b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    for split, n in (("train", 6), ("test", 4)):
        _pickle(root / split, {b"data": _cifar_rows(n), b"fine_labels": list(range(n)),
                               b"coarse_labels": [i % 20 + 10 for i in range(n)]})
    return root


def test_cifar100_fine_and_coarse(cifar100: Path) -> None:
    fine = data.load_dataset("cifar100", "train", data_root=cifar100, classes="100")
    assert fine.images.shape == (6, 32, 32, 3) and fine.n_classes == 100
    assert fine.labels.tolist() == list(range(6)) and fine.classes[3] == "f3"
    coarse = data.load_dataset("cifar100-20", "val", data_root=cifar100.parent)
    assert coarse.n_classes == 20 and coarse.labels.tolist() == [10, 11, 12, 13]
    assert coarse.classes[0] == "s0" and coarse.name == "cifar100-20/val"
    with pytest.raises(SettingError, match="always has its 20 classes"):
        data.load_dataset("cifar100-20", "val", data_root=cifar100, classes="5")


def _stl_x(images: np.ndarray) -> bytes:
    """(N, 96, 96, 3) as STL-10 stores it: per image per channel, column-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 2, 1)).tobytes()


@pytest.fixture
def stl10(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "stl10_binary"
    root.mkdir()
    (root / "class_names.txt").write_text("".join(f"k{i}\n" for i in range(10)))
    arrays = {s: RNG.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)
              for s, n in (("train", 3), ("test", 2), ("unlabeled", 4))}
    for s, images in arrays.items():
        (root / f"{s}_X.bin").write_bytes(_stl_x(images))
    (root / "train_y.bin").write_bytes(bytes([1, 10, 4]))
    (root / "test_y.bin").write_bytes(bytes([2, 3]))
    return root, arrays


def test_stl10_column_major_labels_and_unlabelled_train_split(stl10) -> None:
    root, arrays = stl10
    train = data.load_dataset("stl10", "train", data_root=root.parent)
    assert train.images.shape == (3, 96, 96, 3) and np.array_equal(train.images,
                                                                   arrays["train"])
    assert train.labels.tolist() == [0, 9, 3] and train.classes[9] == "k9"
    val = data.load_dataset("stl10-unlabelled", "val", data_root=root)
    assert np.array_equal(val.images, arrays["test"]) and val.labels.tolist() == [1, 2]
    mixed = data.load_dataset("stl10-unlabelled", "train", data_root=root)
    assert len(mixed) == 7 and mixed.labels.tolist() == [-1] * 4 + [0, 9, 3]
    assert np.array_equal(mixed.images[:4], arrays["unlabeled"])
    assert mixed.labelled_mask.tolist() == [False] * 4 + [True] * 3 and mixed.labelled


def _idx(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture(params=["mnist", "fashion-mnist"])
def idx_set(request, tmp_path: Path) -> tuple[str, Path, dict]:
    """The four idx files, gzipped for mnist and plain for fashion-mnist (both exist)."""
    name = request.param
    root = tmp_path / name
    root.mkdir()
    arrays = {"train": (RNG.integers(0, 256, (5, 28, 28)), np.array([0, 1, 2, 9, 4])),
              "t10k": (RNG.integers(0, 256, (2, 28, 28)), np.array([7, 3]))}
    for stem, (x, y) in arrays.items():
        for kind, array, magic in (("images-idx3", x, 2051), ("labels-idx1", y, 2049)):
            raw = _idx(array, magic)
            if name == "mnist":
                (root / f"{stem}-{kind}-ubyte.gz").write_bytes(gzip.compress(raw))
            else:
                (root / f"{stem}-{kind}-ubyte").write_bytes(raw)
    return name, root, arrays


def test_mnist_and_fashion_mnist_idx_files(idx_set) -> None:
    name, root, arrays = idx_set
    train = data.load_dataset(name, "train", data_root=root.parent)
    assert train.images.shape == (5, 28, 28, 1) and train.images.dtype == np.uint8
    assert np.array_equal(train.images[..., 0], arrays["train"][0])
    assert train.labels.tolist() == [0, 1, 2, 9, 4] and train.n_classes == 10
    val = data.load_dataset(name, "val", data_root=root)
    assert val.labels.tolist() == [7, 3] and val.images.flags.writeable
    assert (train.classes[0] == "0") == (name == "mnist")


def _truncate(path: Path, keep: int = -10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize("case", ["cifar-pickle", "cifar-meta", "cifar-data", "stl-x", "stl-y",
                                  "mnist-gz", "mnist-idx", "mnist-magic"])
def test_a_truncated_or_corrupt_file_is_one_line_naming_it(case, cifar10, stl10, tmp_path,
                                                          monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPSTDP_CACHE", str(cache))
    root = {"cifar": cifar10, "stl": stl10[0]}.get(case.split("-")[0], tmp_path / "mn")
    name = {"cifar": "cifar10", "stl": "stl10"}.get(case.split("-")[0], "mnist")
    if name == "mnist":
        root.mkdir()
        for stem, n in (("train", 3), ("t10k", 2)):
            (root / f"{stem}-images-idx3-ubyte.gz").write_bytes(
                gzip.compress(_idx(np.zeros((n, 28, 28)), 2051)))
            (root / f"{stem}-labels-idx1-ubyte.gz").write_bytes(
                gzip.compress(_idx(np.zeros(n), 2049)))
    bad = {"cifar-pickle": root / "data_batch_3", "cifar-meta": root / "batches.meta",
           "cifar-data": root / "data_batch_2", "stl-x": root / "train_X.bin",
           "stl-y": root / "train_y.bin", "mnist-gz": root / "train-images-idx3-ubyte.gz",
           "mnist-idx": root / "train-images-idx3-ubyte.gz",
           "mnist-magic": root / "train-labels-idx1-ubyte.gz"}[case]
    if case == "cifar-data":  # a whole pickle of the wrong shape
        _pickle(bad, {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    elif case == "mnist-idx":  # a whole gzip of a truncated idx
        bad.write_bytes(gzip.compress(_idx(np.zeros((3, 28, 28)), 2051)[:-5]))
    elif case == "mnist-magic":
        bad.write_bytes(gzip.compress(_idx(np.zeros(3), 2051)))
    else:
        _truncate(bad)
    with pytest.raises(DeepSTDPError) as e:
        data.load_dataset(name, "train", data_root=root)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    assert not cache.exists()  # nothing written


def test_a_pickle_naming_code_is_refused(cifar10: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    _pickle(cifar10 / "test_batch", {b"data": Evil(), b"labels": []})
    with pytest.raises(DeepSTDPError, match=r"names \w+\.print"):
        data.load_dataset("cifar10", "val", data_root=cifar10)


def test_missing_folder_and_files(tmp_path: Path, cifar10: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DeepSTDPError, match="no batches.meta in"):
        data.load_dataset("cifar10", "train", data_root=tmp_path / "empty")
    (cifar10 / "data_batch_4").unlink()
    with pytest.raises(DeepSTDPError, match="missing file .*data_batch_4"):
        data.load_dataset("cifar10", "train", data_root=cifar10)
    with pytest.raises(SettingError, match="always has its 10 classes"):
        data.load_dataset("mnist", "train", data_root=tmp_path, classes="3")
    assert standard.files_of("cifar100-20") is standard.SOURCES["cifar100"]


# --------------------------------------------------------------------------- download


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the payloads of `files`, honouring `Range: bytes=N-`; cuts a response short
    after `cut` bytes when set (a dropped connection)."""

    files: dict[str, bytes] = {}
    cut: int | None = None
    ranges: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = self.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        type(self).ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        if start >= len(body) and asked:
            self.send_error(416)
            return
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if self.cut is not None:
            chunk = chunk[:self.cut]
        self.wfile.write(chunk)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.files, _RangeHandler.cut, _RangeHandler.ranges = {}, None, []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    thread.join()


def _gz_source(url: str, payloads: dict[str, bytes]) -> Source:
    _RangeHandler.files = payloads
    return Source("mnist", "t10k-labels-idx1-ubyte.gz",
                  tuple(Remote(url + f, hashlib.md5(b).hexdigest()) for f, b in payloads.items()))


def test_download_resumes_a_partial_file_with_a_range_request(server, tmp_path: Path) -> None:
    payloads = {"train-images-idx3-ubyte.gz": bytes(range(256)) * 40,
                "t10k-labels-idx1-ubyte.gz": b"labels" * 10}
    source = _gz_source(server, payloads)
    dest = tmp_path / "dl"
    _RangeHandler.cut = 1000  # the connection drops after 1,000 bytes
    with pytest.raises(DeepSTDPError, match="run the command again to continue"):
        data.download("mnist", dest, False, source=source)
    part = dest / ".mnist-train-images-idx3-ubyte.gz.part"
    assert part.stat().st_size == 1000 and not (dest / "mnist").exists()
    _RangeHandler.cut = None
    got = data.download("mnist", dest, False, source=source)
    assert _RangeHandler.ranges[-2:] == ["bytes=1000-", None]
    assert got == dest / "mnist"
    for name, body in payloads.items():
        assert (got / name).read_bytes() == body
    assert sorted(p.name for p in dest.iterdir()) == ["mnist"]  # no part files left


def test_download_refuses_a_checksum_mismatch_and_drops_the_file(server, tmp_path) -> None:
    source = _gz_source(server, {"t10k-labels-idx1-ubyte.gz": b"abc"})
    source = Source(source.folder, source.marker, (Remote(source.files[0].url, "0" * 32),))
    dest = tmp_path / "dl"
    with pytest.raises(DeepSTDPError, match="has MD5 .*, expected 0{32}"):
        data.download("mnist", dest, False, source=source)
    assert list(dest.iterdir()) == []


def test_download_unpacks_a_tar_gz(server, tmp_path: Path) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/batches.meta")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    _RangeHandler.files = {"c.tar.gz": buffer.getvalue()}
    source = Source("cifar-10-batches-py", "batches.meta",
                    (Remote(server + "c.tar.gz", hashlib.md5(buffer.getvalue()).hexdigest()),))
    got = data.download("cifar10", tmp_path, False, source=source)
    assert (got / "batches.meta").read_bytes() == b"abc"
    assert data.download("cifar10", tmp_path, False) == got  # present: nothing fetched
    with pytest.raises(DeepSTDPError, match="unknown download"):
        data.download("digits", tmp_path, False)


def test_download_command_takes_a_name(tmp_path, monkeypatch, capsys) -> None:
    import urllib.error
    import urllib.request

    from deepstdp.cli import main

    def refuse(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert main(["download", "cifar10", "--data-root", str(tmp_path), "--quiet"]) == 2
    assert "cifar-10-python.tar.gz: no network" in capsys.readouterr().err
    assert main(["download", "nope", "--data-root", str(tmp_path), "--quiet"]) == 2
    assert "unknown download 'nope'" in capsys.readouterr().err
