"""Data loading: file formats, lookup order, checksums, downloads and the datasets."""
import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy
import pytest

from lvae_np import data
from lvae_np.data import DataError, files, formats, omniglot

REPO_MNIST = Path(__file__).resolve().parents[1] / "data" / "mnist"
TRAIN, TEST = data.MNIST_FILES["train"], data.MNIST_FILES["test"]
NORB_TRAIN, NORB_TEST = data.NORB_FILES["train"], data.NORB_FILES["test"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own empty cache and no LVAE_NP_DATA from the environment."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv(data.ENV_VAR, raising=False)


@pytest.fixture
def shared_data():
    """The development machines' shared data folder, reached only through arguments."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"no shared data folder at {path}")
    return path


@pytest.fixture
def no_repo_data(monkeypatch):
    monkeypatch.setattr(files, "repo_data_dir", lambda: None)


@pytest.fixture(scope="module")
def mnist():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(data.ENV_VAR, raising=False)
        return data.load_dataset("mnist", progress=False, download=False)


# ----------------------------------------------------------------------------- writers

def idx_bytes(array):
    codes = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
    code = codes[array.dtype.str.lstrip("|")]
    return (bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
            + array.tobytes())


def norb_bytes(array):
    magic = {"u1": 507333717, "<i4": 507333716}[array.dtype.str.lstrip("|")]
    dims = list(array.shape) + [1] * (3 - array.ndim)
    return struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims) + array.tobytes()


def write(path, content, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content, compresslevel=1) if gz else content)
    return path


def sha256(content):
    return hashlib.sha256(content).hexdigest()


def fake_mnist(folder, monkeypatch, n=(5, 3), seed=0, gz=True):
    """Small MNIST-format image files in ``folder``, registered as the genuine ones."""
    rng = numpy.random.default_rng(seed)
    for name, count in zip((TRAIN, TEST), n):
        content = idx_bytes(rng.integers(0, 256, (count, 28, 28), dtype=numpy.uint8))
        monkeypatch.setitem(data.CHECKSUMS, name, sha256(content))
        write(folder / (name + (".gz" if gz else "")), content, gz)


def one_line(exc_info):
    message = str(exc_info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- MNIST

def test_mnist_from_the_repository(mnist):
    assert mnist.train.shape == (60000, 784) and mnist.test.shape == (10000, 784)
    assert mnist.train.dtype == mnist.test.dtype == numpy.float32
    assert mnist.train.min() == 0 and mnist.train.max() == 1
    assert ((mnist.train > 0) & (mnist.train < 1)).any()  # grey levels, binarised per epoch later
    assert set(numpy.unique(mnist.test)) == {0.0, 1.0}
    assert 0.1 < mnist.test.mean() < 0.16
    assert mnist.valid is None and mnist.likelihood == "bernoulli" and mnist.dynamic_binarization
    assert mnist.image_shape == (28, 28) and str(REPO_MNIST) in mnist.variant


def test_mnist_test_set_binarised_identically_every_time(mnist):
    again = data.load_dataset("mnist", progress=False, download=False, seed=5)
    numpy.testing.assert_array_equal(again.test, mnist.test)
    numpy.testing.assert_array_equal(again.train, mnist.train)


# ----------------------------------------------------------------------------- lookup order

def test_lookup_order(tmp_path, monkeypatch):
    given, env = tmp_path / "given", tmp_path / "env"
    cache = data.cache_dir()
    for folder in (given / "mnist", env / "mnist", cache / "mnist"):
        fake_mnist(folder, monkeypatch)
    monkeypatch.setenv(data.ENV_VAR, str(env))
    find = lambda d=None: data.find_file(TRAIN, "mnist", d)  # noqa: E731
    assert find(given) == given / "mnist" / (TRAIN + ".gz")
    assert find() == env / "mnist" / (TRAIN + ".gz")
    monkeypatch.delenv(data.ENV_VAR)
    assert find() == REPO_MNIST / (TRAIN + ".gz")
    monkeypatch.setattr(files, "repo_data_dir", lambda: None)
    assert find() == cache / "mnist" / (TRAIN + ".gz")


def test_dataset_subfolder_then_folder_itself(tmp_path, monkeypatch):
    fake_mnist(tmp_path, monkeypatch, n=(4, 2), gz=False)
    assert data.find_file(TRAIN, "mnist", tmp_path) == tmp_path / TRAIN
    fake_mnist(tmp_path / "mnist", monkeypatch, n=(6, 2))
    assert data.find_file(TRAIN, "mnist", tmp_path) == tmp_path / "mnist" / (TRAIN + ".gz")
    ds = data.load_dataset("mnist", tmp_path, progress=False)
    assert ds.train.shape == (6, 784) and str(tmp_path / "mnist") in ds.variant


def test_data_dir_that_does_not_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist") as exc:
        data.load_dataset("mnist", tmp_path / "nowhere")
    assert "nowhere" in one_line(exc)


def test_cache_dir(monkeypatch, tmp_path):
    assert data.cache_dir() == tmp_path / "xdg-cache" / "lvae_np"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.cache_dir() == tmp_path / "home" / ".cache" / "lvae_np"


# ----------------------------------------------------------------------------- checksums

@pytest.mark.parametrize("gz", [True, False])
def test_altered_mnist_file_is_refused(tmp_path, gz):
    content = bytearray(gzip.decompress((REPO_MNIST / (TEST + ".gz")).read_bytes()))
    content[5000] ^= 0x01  # one pixel of one image
    bad = write(tmp_path / "mnist" / (TEST + (".gz" if gz else "")), bytes(content), gz)
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", tmp_path, progress=False)
    message = one_line(exc)
    assert str(bad) in message and data.CHECKSUMS[TEST] in message


def test_truncated_gzip_names_file_and_expected_hash(tmp_path):
    raw = (REPO_MNIST / (TEST + ".gz")).read_bytes()
    bad = write(tmp_path / (TEST + ".gz"), raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated") as exc:
        data.load_dataset("mnist", tmp_path, progress=False)
    assert str(bad) in one_line(exc) and data.CHECKSUMS[TEST] in one_line(exc)


# ----------------------------------------------------------------------------- IDX reader

@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_plain_and_gzipped(tmp_path, dtype):
    array = (numpy.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype)
    content = idx_bytes(array)
    for path in (write(tmp_path / "plain", content),
                 write(tmp_path / "zipped.gz", content, gz=True),
                 write(tmp_path / "zipped-without-suffix", content, gz=True)):
        got = data.read_idx(path)
        numpy.testing.assert_array_equal(got, array)
        assert got.dtype == numpy.dtype(dtype).newbyteorder("=")


@pytest.mark.parametrize("cut", [1, 100, 2000])
def test_read_idx_truncated(tmp_path, cut):
    content = idx_bytes(numpy.zeros((3, 28, 28), numpy.uint8))
    for gz in (False, True):
        path = write(tmp_path / f"cut{gz}", content[:-cut], gz)
        with pytest.raises(DataError, match="truncated") as exc:
            data.read_idx(path)
        assert str(path) in one_line(exc)


def test_read_idx_bad_headers(tmp_path):
    good = idx_bytes(numpy.zeros((2, 2), numpy.uint8))
    for name, content, pattern in (("magic", b"\x01" + good[1:], "not an IDX"),
                                   ("code", good[:2] + b"\x07" + good[3:], "bad IDX header"),
                                   ("ndim", good[:3] + b"\x00" + good[4:], "bad IDX header"),
                                   ("long", good + b"\x00", "truncated or corrupt"),
                                   ("empty", b"", "not an IDX")):
        path = write(tmp_path / name, content)
        with pytest.raises(DataError, match=pattern) as exc:
            data.read_idx(path)
        assert str(path) in one_line(exc)


def test_gzip_that_is_not_gzip(tmp_path):
    path = write(tmp_path / "x.gz", b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt gzip") as exc:
        data.read_idx(path)
    assert str(path) in one_line(exc)


# ----------------------------------------------------------------------------- downloads

@pytest.fixture
def mirrors(tmp_path, monkeypatch, no_repo_data):
    """Two local mirrors (file:// URLs) of fake MNIST .gz files; the second holds them."""
    first, second = tmp_path / "mirror1", tmp_path / "mirror2"
    first.mkdir()
    fake_mnist(second, monkeypatch, n=(7, 4))
    monkeypatch.setitem(data.MIRRORS, "mnist", (first.as_uri() + "/", second.as_uri() + "/"))
    return first, second


def cache_listing():
    folder = data.cache_dir() / "mnist"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_download_first_mirror_missing_second_serves(mirrors, capsys):
    ds = data.load_dataset("mnist", progress=True)
    assert ds.train.shape == (7, 784) and ds.test.shape == (4, 784)
    assert cache_listing() == sorted([TRAIN + ".gz", TEST + ".gz"])
    assert str(data.cache_dir()) in ds.variant
    lines = capsys.readouterr().err.strip().splitlines()  # not a terminal: no progress bars
    assert len(lines) == 2 and all(line.startswith("lvae_np: downloading") for line in lines)
    data.load_dataset("mnist", download=False)  # now found in the cache


def test_download_skips_a_mirror_with_a_bad_file(mirrors):
    first, second = mirrors
    for name in (TRAIN, TEST):
        content = bytearray(gzip.decompress((second / (name + ".gz")).read_bytes()))
        content[-1] ^= 0xFF
        write(first / (name + ".gz"), bytes(content), gz=True)
    assert data.load_dataset("mnist", progress=False).train.shape == (7, 784)
    assert cache_listing() == sorted([TRAIN + ".gz", TEST + ".gz"])


def test_download_all_mirrors_bad(mirrors):
    first, second = mirrors
    (second / (TRAIN + ".gz")).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07"))
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", progress=False)
    message = one_line(exc)
    assert first.as_uri() in message and second.as_uri() in message
    assert data.CHECKSUMS[TRAIN] in message and "--data-dir" in message
    assert cache_listing() == []


class FailingResponse:
    """A response that delivers some bytes, then fails the way ``error`` says."""

    def __init__(self, error, length=10_000):
        self.headers, self.sent, self.error = {"Content-Length": str(length)}, False, error

    def read(self, size):
        if not self.sent:
            self.sent = True
            return b"\x1f\x8b" + b"\0" * 998
        if self.error is None:
            return b""  # the connection closed early
        raise self.error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("error", [ConnectionResetError("reset by peer"), None])
def test_failed_download_leaves_no_partial_file(mirrors, monkeypatch, error):
    monkeypatch.setattr(files, "open_url", lambda url: FailingResponse(error))
    with pytest.raises(DataError, match="could not download") as exc:
        data.load_dataset("mnist", progress=False)
    assert ("reset by peer" if error else "incomplete download") in one_line(exc)
    assert cache_listing() == []


def test_interrupted_download_leaves_no_partial_file(mirrors, monkeypatch):
    monkeypatch.setattr(files, "open_url", lambda url: FailingResponse(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        data.load_dataset("mnist", progress=False)
    assert cache_listing() == []


def test_missing_with_download_off(no_repo_data):
    with pytest.raises(DataError) as exc:
        data.load_dataset("mnist", download=False)
    message = one_line(exc)
    for words in (TRAIN, "downloading is off", "--data-dir", data.ENV_VAR, str(data.cache_dir())):
        assert words in message


# ----------------------------------------------------------------------------- NORB

@pytest.mark.parametrize("dtype", ["u1", "<i4"])
@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("shape", [(3, 2, 4, 5), (6,), (2, 3)])
def test_read_norb(tmp_path, dtype, gz, shape):
    array = numpy.arange(numpy.prod(shape)).reshape(shape).astype(dtype)
    path = write(tmp_path / "m.mat", norb_bytes(array), gz)
    got = data.read_norb(path)
    assert got.dtype == numpy.dtype(dtype) and got.shape == shape
    numpy.testing.assert_array_equal(got, array)


def test_read_norb_bad_files(tmp_path):
    good = norb_bytes(numpy.zeros((2, 2, 3, 3), numpy.uint8))
    for name, content, pattern in (("short", good[:-1], "truncated or corrupt"),
                                   ("header", good[:12], "header cut short"),
                                   ("magic", struct.pack("<i", 12) + good[4:], "not a smallNORB")):
        path = write(tmp_path / name, content)
        with pytest.raises(DataError, match=pattern) as exc:
            data.read_norb(path)
        assert str(path) in one_line(exc)


def fake_norb(folder, monkeypatch, n=6, gz=True):
    rng = numpy.random.default_rng(1)
    pairs = {}
    for name in (NORB_TRAIN, NORB_TEST):
        pairs[name] = rng.integers(0, 256, (n, 2, 96, 96), dtype=numpy.uint8)
        pairs[name][:, 1] = 255  # the right camera's images must not be used
        raw = gzip.compress(norb_bytes(pairs[name]))
        if gz:
            monkeypatch.setitem(data.CHECKSUMS, name + ".gz", sha256(raw))
        write(folder / (name + ".gz" if gz else name), raw if gz else gzip.decompress(raw))
    return pairs


@pytest.mark.parametrize("gz", [True, False])
def test_norb_pipeline(tmp_path, monkeypatch, gz):
    pairs = fake_norb(tmp_path / "norb", monkeypatch, gz=gz)
    ds = data.load_dataset("norb", tmp_path, progress=False)
    assert ds.train.shape == ds.test.shape == (6, 1024) and ds.train.dtype == numpy.float32
    assert 0 <= ds.train.min() and ds.train.max() <= 1
    assert ds.likelihood == "gaussian" and not ds.dynamic_binarization
    assert ds.image_shape == (32, 32)
    means = pairs[NORB_TRAIN][:, 0].reshape(6, 32, 3, 32, 3).mean(axis=(2, 4))
    noise = ds.train * 256 - numpy.rint(means).reshape(6, 1024)  # grey level + U(0, 1)
    assert noise.min() >= 0 and noise.max() <= 1 and 0.4 < noise.mean() < 0.6
    other = data.load_dataset("norb", tmp_path, seed=1, progress=False)
    numpy.testing.assert_array_equal(other.test, ds.test)  # test noise has its own fixed seed
    assert not numpy.array_equal(other.train, ds.train)


def test_norb_checksum_of_the_gz_file(tmp_path, monkeypatch):
    fake_norb(tmp_path / "norb", monkeypatch)
    monkeypatch.setitem(data.CHECKSUMS, NORB_TRAIN + ".gz", "0" * 64)
    with pytest.raises(DataError) as exc:
        data.load_dataset("norb", tmp_path, progress=False)
    assert NORB_TRAIN in one_line(exc) and "expected sha256 " + "0" * 64 in one_line(exc)


def test_norb_has_the_canonical_mirror(no_repo_data, monkeypatch):
    urls = []
    monkeypatch.setattr(files, "open_url", lambda url: urls.append(url) or FailingResponse(None))
    with pytest.raises(DataError):
        data.load_dataset("norb", progress=False)
    assert urls == ["https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/" + NORB_TRAIN + ".gz"]


# ----------------------------------------------------------------------------- OMNIGLOT

def fake_omniglot(folder, monkeypatch, characters=(3, 2)):
    rng = numpy.random.default_rng(2)
    for name, count in zip(data.OMNIGLOT_ARRAYS, characters):
        images = rng.random((count, 20, 105, 105)) < 0.9  # True is white background
        images[0, 0] = True  # a blank page: no ink
        monkeypatch.setitem(data.OMNIGLOT_IMAGES_SHA256, name, sha256(images.tobytes()))
        folder.mkdir(parents=True, exist_ok=True)
        numpy.savez_compressed(folder / name, images=images, labels=numpy.zeros((count, 20)))


def test_omniglot_from_small_arrays(tmp_path, monkeypatch):
    fake_omniglot(tmp_path / "omniglot", monkeypatch)
    ds = data.load_dataset("omniglot", tmp_path, progress=False)
    assert ds.train.shape == (5 * 15, 784) and ds.test.shape == (5 * 5, 784)
    assert ds.train[0].max() == 0 and 0.05 < ds.train[1:].mean() < 0.15  # ink = 1 - image
    assert "not Burda" in ds.variant and "15/5" in ds.variant
    assert (data.cache_dir() / "omniglot" / data.OMNIGLOT_CACHE).is_file()


@pytest.mark.parametrize("damage", ["other images", "no content hash", "truncated"])
def test_an_omniglot_cache_that_fails_its_checks_is_rebuilt(tmp_path, monkeypatch, damage):
    fake_omniglot(tmp_path / "omniglot", monkeypatch)
    good = data.load_dataset("omniglot", tmp_path, progress=False)
    cache = data.cache_dir() / "omniglot" / data.OMNIGLOT_CACHE
    with numpy.load(cache) as npz:
        parts = {k: npz[k] for k in npz.files}
    if damage == "other images":      # same shapes and sources, a stale content hash
        parts["train"] = numpy.zeros_like(parts["train"])
        numpy.savez(cache, **parts)
    elif damage == "no content hash":
        numpy.savez(cache, **{k: v for k, v in parts.items() if k != "content"})
    else:
        cache.write_bytes(cache.read_bytes()[:100])
    with pytest.warns(UserWarning, match="is not usable .*: rebuilding it"):
        again = data.load_dataset("omniglot", tmp_path, progress=False)
    numpy.testing.assert_array_equal(again.train, good.train)
    train, test, why = omniglot.read_cache(cache, parts["sources"].item())
    assert why is None and train.shape == good.train.shape   # rebuilt, and now it passes


def test_omniglot_array_checksum(tmp_path, monkeypatch):
    fake_omniglot(tmp_path / "omniglot", monkeypatch)
    monkeypatch.setitem(data.OMNIGLOT_IMAGES_SHA256, "images_evaluation.npz", "1" * 64)
    with pytest.raises(DataError) as exc:
        data.load_dataset("omniglot", tmp_path, progress=False)
    assert "images_evaluation.npz" in one_line(exc) and "1" * 64 in one_line(exc)
    assert not (data.cache_dir() / "omniglot" / data.OMNIGLOT_CACHE).exists()


def test_omniglot_missing(tmp_path):
    with pytest.raises(DataError) as exc:
        data.load_dataset("omniglot", tmp_path)
    message = one_line(exc)
    for words in ("chardata.mat", "images_background.npz", "--data-dir", data.ENV_VAR,
                  "no download"):
        assert words in message


def test_nan_in_cached_arrays(monkeypatch):
    """A cache that passes its integrity checks (unknown arrays: 15/5 split, content hash)."""
    for name in data.OMNIGLOT_ARRAYS:
        monkeypatch.setitem(data.OMNIGLOT_IMAGES_SHA256, name, sha256(name.encode()))
    train = numpy.full((6, 784), 0.5, numpy.float32)
    train[2, 3] = numpy.nan
    test = train[:2] * 0
    sources = ",".join(data.OMNIGLOT_IMAGES_SHA256[n] for n in data.OMNIGLOT_ARRAYS)
    cache = data.cache_dir() / "omniglot" / data.OMNIGLOT_CACHE
    cache.parent.mkdir(parents=True)
    numpy.savez(cache, train=train, test=test, sources=numpy.array(sources),
                content=numpy.array(omniglot.cache_digest(train, test, sources)))
    with pytest.raises(DataError, match="NaN") as exc:
        data.load_dataset("omniglot")
    assert str(cache) in one_line(exc)


@pytest.mark.slow
def test_omniglot_from_the_real_arrays(shared_data, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(shared_data))
    ds = data.load_dataset("omniglot", progress=False)
    assert ds.train.shape == ((964 + 659) * 15, 784) == (24345, 784)
    assert ds.test.shape == ((964 + 659) * 5, 784) == (8115, 784)
    assert ds.train.dtype == numpy.float32 and 0 <= ds.train.min() and ds.train.max() <= 1
    assert ds.train.mean() < 0.5 and ds.test.mean() < 0.5  # ink is the minority
    assert set(numpy.unique(ds.test)) == {0.0, 1.0} and ds.image_shape == (28, 28)

    def no_rebuild(*args):
        raise AssertionError("the cached arrays were not reused")

    monkeypatch.setattr(omniglot, "build_omniglot", no_rebuild)
    again = data.load_dataset("omniglot", progress=False)
    assert "cached in" in again.variant
    numpy.testing.assert_array_equal(again.train, ds.train)


# Burda et al.'s chardata.mat: MATLAB v5 files written here by the format's rules.

def mat_element(kind, payload, small_ok=True):
    if small_ok and len(payload) <= 4:
        return struct.pack("<HH", kind, len(payload)) + payload.ljust(4, b"\0")
    return struct.pack("<II", kind, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def mat_matrix(name, array, mat_class=6, stored=("<f8", 9)):
    body = (mat_element(6, struct.pack("<II", mat_class, 0))
            + mat_element(5, struct.pack(f"<{array.ndim}i", *array.shape))
            + mat_element(1, name.encode())
            + mat_element(stored[1], array.astype(stored[0]).tobytes(order="F"), small_ok=False))
    return struct.pack("<II", 14, len(body)) + body


def write_mat(path, arrays, compress):
    out = b"MATLAB 5.0 MAT-file, written for a test".ljust(116) + b"\0" * 8 + b"\x00\x01IM"
    for element in arrays:
        if compress:
            packed = zlib.compress(element)
            element = struct.pack("<II", 15, len(packed)) + packed
        out += element
    return write(path, out)


def burda_like(n_train=4, n_test=3):
    rng = numpy.random.default_rng(3)
    images = rng.random((n_train + n_test, 28, 28))
    images[0, 0, 1] = 1.0  # an asymmetric mark: transposition would move it
    columns = numpy.stack([img.T.ravel() for img in images], axis=1)  # 784 x N, as Burda stores it
    return images.reshape(-1, 784), columns[:, :n_train], columns[:, n_train:]


@pytest.mark.parametrize("compress", [False, True])
def test_chardata_mat(tmp_path, monkeypatch, compress):
    images, train, test = burda_like()
    fake_omniglot(tmp_path / "omniglot", monkeypatch)  # chardata.mat must win over these
    path = write_mat(tmp_path / "omniglot" / "chardata.mat", [
        mat_matrix("data", train),  # a 4-character name: a small data element
        mat_matrix("note", numpy.array([[104, 105]]), mat_class=4, stored=("<u2", 4)),  # skipped
        mat_matrix("target", numpy.eye(2), stored=("u1", 2)),  # doubles stored as uint8
        mat_matrix("testdata", test)], compress)
    content = path.read_bytes()
    monkeypatch.setitem(data.GIT_BLOB_SHA1, "chardata.mat",
                        hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest())
    ds = data.load_dataset("omniglot", tmp_path, progress=False)
    assert "chardata.mat" in ds.variant and "not Burda" not in ds.variant
    numpy.testing.assert_allclose(ds.train, images[:4], rtol=1e-6)
    assert ds.test.shape == (3, 784)
    assert formats.parse_mat(content, "x")["target"].dtype == numpy.float64


def test_chardata_mat_checksum(tmp_path):
    _, train, test = burda_like()
    path = write_mat(tmp_path / "chardata.mat", [mat_matrix("data", train)], compress=True)
    with pytest.raises(DataError) as exc:
        data.load_dataset("omniglot", tmp_path)
    assert str(path) in one_line(exc) and data.GIT_BLOB_SHA1["chardata.mat"] in one_line(exc)


def test_nan_in_chardata(tmp_path, monkeypatch):
    _, train, test = burda_like()
    train[10, 1] = numpy.nan
    path = write_mat(tmp_path / "chardata.mat",
                     [mat_matrix("data", train), mat_matrix("testdata", test)], compress=True)
    monkeypatch.delitem(data.GIT_BLOB_SHA1, "chardata.mat")
    with pytest.raises(DataError, match="NaN or inf") as exc:
        data.load_dataset("omniglot", tmp_path)
    assert str(path) in one_line(exc)


# ----------------------------------------------------------------------------- pieces

def test_binarize_is_bernoulli():
    p = numpy.linspace(0, 1, 11, dtype=numpy.float32)
    draws = data.binarize(numpy.tile(p, (20000, 1)), numpy.random.default_rng(0))
    assert draws.dtype == numpy.float32 and set(numpy.unique(draws)) <= {0.0, 1.0}
    se = numpy.sqrt(p * (1 - p) / 20000)
    assert numpy.all(numpy.abs(draws.mean(axis=0) - p) <= 5 * se + 1e-12)
    assert draws[:, 0].max() == 0 and draws[:, -1].min() == 1


@pytest.mark.parametrize("n_in, n_out", [(105, 28), (96, 32), (10, 3), (7, 7)])
def test_area_resize_matrix(n_in, n_out):
    a = data.area_resize_matrix(n_in, n_out)
    assert a.shape == (n_out, n_in) and a.min() >= 0
    numpy.testing.assert_allclose(a.sum(axis=1), 1, rtol=1e-12)
    numpy.testing.assert_allclose(a.sum(axis=0), n_out / n_in, rtol=1e-12)  # every pixel counts
    const = numpy.full((2, n_in, n_in), 0.3)
    numpy.testing.assert_allclose(data.resize_images(const, n_out), 0.3, rtol=1e-6)


def test_block_resize_is_exact():
    images = numpy.random.default_rng(0).integers(0, 256, (5, 96, 96)).astype(numpy.uint8)
    numpy.testing.assert_allclose(data.resize_images(images, 32, chunk=2),
                                  images.reshape(5, 32, 3, 32, 3).mean(axis=(2, 4)), rtol=1e-6)


def test_synthetic_and_validation_split():
    ds = data.load_dataset("synthetic", seed=3)
    assert ds.train.shape == (1000, 64) and ds.test.shape == (200, 64) and ds.image_shape == (8, 8)
    assert 0 <= ds.train.min() and ds.train.max() <= 1 and set(numpy.unique(ds.test)) <= {0, 1}
    split = data.load_dataset("synthetic", seed=3, validation=100)
    assert split.train.shape == (900, 64) and split.valid.shape == (100, 64)
    assert set(numpy.unique(split.valid)) <= {0.0, 1.0}
    rows = {r.tobytes() for r in ds.train}
    assert {r.tobytes() for r in split.train} < rows
    again = data.load_dataset("synthetic", seed=3, validation=100)
    numpy.testing.assert_array_equal(again.valid, split.valid)
    numpy.testing.assert_array_equal(again.test, ds.test)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load_dataset("cifar")
    with pytest.raises(ValueError, match="validation"):
        data.load_dataset("synthetic", validation=1000)


def test_data_error_is_one_line():
    assert str(DataError("a\nb\r\nc")) == "a b c"


def test_repo_ships_mnist():
    for name in (TRAIN, TEST, "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        path = REPO_MNIST / (name + ".gz")
        assert sha256(gzip.decompress(path.read_bytes())) == data.CHECKSUMS[name]
    assert files.repo_data_dir() == REPO_MNIST.parent
