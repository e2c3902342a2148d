"""Checkpoints: a faithful round trip, atomic writes, and clear errors for bad files."""
import errno
import os

import numpy as np
import pytest

from lvae_np.training import checkpoint, fileio
from lvae_np.training.checkpoint import CheckpointError

rng = np.random.default_rng(0)


def _contents():
    params = {"up1.W1": rng.normal(size=(3, 2)).astype(np.float32), "p0.b": np.zeros(2)}
    state = {"up1.mean1": rng.normal(size=2)}
    opt = {"t": 7, "m": {k: v + 1 for k, v in params.items()},
           "v": {k: v + 2 for k, v in params.items()}}
    meta = {"epoch": 3, "batch": 0, "config": {"latent": [4, 2]},
            "rng_state": np.random.default_rng(5).bit_generator.state}
    return params, state, opt, meta


def test_round_trip_is_exact(tmp_path):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta,
                    extra={"n": np.array(5)})
    got = checkpoint.load(path)
    for k in params:
        np.testing.assert_array_equal(got["params"][k], params[k])
        assert got["params"][k].dtype == params[k].dtype
        np.testing.assert_array_equal(got["opt_state"]["m"][k], opt["m"][k])
    np.testing.assert_array_equal(got["state"]["up1.mean1"], state["up1.mean1"])
    assert got["opt_state"]["t"] == 7 and got["meta"]["epoch"] == 3
    assert got["meta"]["rng_state"] == meta["rng_state"]  # 128-bit integers survive JSON
    assert int(got["extra"]["n"]) == 5


def test_no_pickle_inside(tmp_path):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    with np.load(path, allow_pickle=False) as archive:  # would raise on object arrays
        assert all(archive[k].dtype != object for k in archive.files)


def test_a_failed_write_leaves_the_old_checkpoint_intact(tmp_path):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    before = path.read_bytes()

    def explode(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(path, explode)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(b"not a zip at all"), "not a readable checkpoint"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable"),
    (lambda p: p.unlink(), "no checkpoint at"),
])
def test_bad_files_give_one_line_errors(tmp_path, damage, match):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    damage(path)
    for load in (checkpoint.load, checkpoint.load_meta):
        with pytest.raises(CheckpointError, match=match) as err:
            load(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_a_foreign_npz_is_rejected(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    for load in (checkpoint.load, checkpoint.load_meta):
        with pytest.raises(CheckpointError, match="not a lvae_np checkpoint"):
            load(path)


def test_load_meta_reads_the_meta_record_alone(tmp_path):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    got = checkpoint.load_meta(path)
    assert got == checkpoint.load(path)["meta"]
    assert got["epoch"] == 3 and got["adam_t"] == 7 and got["config"] == {"latent": [4, 2]}


@pytest.mark.parametrize("record,match", [
    ("{not json", "corrupt meta record"),
    ("[1, 2]", "not a JSON object"),
    ('{"format_version": 99}', "format version 99"),
])
def test_a_bad_meta_record_is_one_line(tmp_path, record, match):
    path = tmp_path / "ck.npz"
    np.savez(path, meta=np.array(record), **{"param/w": np.ones(2)})
    for load in (checkpoint.load, checkpoint.load_meta):
        with pytest.raises(CheckpointError, match=match) as err:
            load(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    path = tmp_path / "note.txt"
    fileio.atomic_write(path, lambda f: f.write(b"hello"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_several_files_are_written_all_or_none(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    fileio.atomic_write_many([(a, lambda f: f.write(b"old a")), (b, lambda f: f.write(b"old b"))])

    def full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write(2) on a full disk

    with pytest.raises(OSError) as err:
        fileio.atomic_write_many([(a, lambda f: f.write(b"new a")), (b, full)])
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(b)  # not the temporary
    assert (a.read_bytes(), b.read_bytes()) == (b"old a", b"old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]


def test_an_interrupt_inside_a_writer_is_not_hidden_by_its_clean_up(tmp_path):
    def writer_whose_clean_up_fails(f):
        try:
            raise KeyboardInterrupt  # a signal arrives mid-write
        finally:
            raise ValueError("cannot close while a handle is open")

    with pytest.raises(KeyboardInterrupt):
        fileio.atomic_write(tmp_path / "x", writer_whose_clean_up_fails)
    assert list(tmp_path.iterdir()) == []
    # an interrupt the caller was already handling (Ctrl-C, then a save) is not this write's
    def full(f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left"):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            fileio.atomic_write(tmp_path / "x", full)


def test_stale_temporaries_of_the_named_files_only_are_removed(tmp_path):
    for name in (".checkpoint.npz.a1b2.tmp", ".metrics.csv.zz.tmp", ".other.x.tmp",
                 "checkpoint.npz", ".checkpoint.npz.keep"):
        (tmp_path / name).write_bytes(b"12345")
    removed = fileio.remove_stale_temporaries(tmp_path, ["checkpoint.npz", "metrics.csv"])
    assert sorted((p.name, size) for p, size in removed) == \
        [(".checkpoint.npz.a1b2.tmp", 5), (".metrics.csv.zz.tmp", 5)]
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        [".checkpoint.npz.keep", ".other.x.tmp", "checkpoint.npz"]


@pytest.mark.parametrize("meta,match", [
    ({"batch": 0}, "no 'epoch'"),
    ({"epoch": -1}, "malformed 'epoch'"),
    ({"epoch": "3"}, "malformed 'epoch'"),
    ({"epoch": True}, "malformed 'epoch'"),
    ({"epoch": 1, "batch": 1.5}, "malformed 'batch'"),
    ({"epoch": 1, "epoch_seconds": "x"}, "malformed 'epoch_seconds'"),
    ({"epoch": 1, "rng_state": [1]}, "malformed 'rng_state'"),
])
def test_a_malformed_position_is_refused_on_load(tmp_path, meta, match):
    params, state, opt, _ = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    for load in (checkpoint.load, checkpoint.load_meta):
        with pytest.raises(CheckpointError, match=match) as err:
            load(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_arrays_are_checked_against_the_model(tmp_path):
    params, state, opt, meta = _contents()
    path = tmp_path / "ck.npz"
    checkpoint.save(path, params=params, state=state, opt_state=opt, meta=meta)
    ckpt = checkpoint.load(path)
    checkpoint.check_arrays(path, ckpt, params, state)  # its own model: fine
    for want_params, want_state, match in [
        ({**params, "up1.W1": np.zeros((3, 4))}, state, r"up1.W1 is float32 \(3, 2\), the "
                                                         r"model's is \(3, 4\)"),
        ({"p0.b": params["p0.b"]}, state, r"parameter names differ \(0 missing, 1 unknown"),
        (params, {}, "batch-norm statistic names differ"),
    ]:
        with pytest.raises(CheckpointError, match=match):
            checkpoint.check_arrays(path, ckpt, want_params, want_state)
