"""checkpoint.py: atomic writes keep the old file on failure and leave no temporary file; dt_fast.json round-trips."""

from __future__ import annotations

import pytest

from dt_fast import checkpoint
from dt_fast.checkpoint import Metadata, atomic_write, read_metadata, write_metadata
from dt_fast.data import BUNDLED, bundled_path, load_dataset


def test_atomic_write_replaces_the_file_and_leaves_nothing_else(tmp_path) -> None:
    target = tmp_path / "out.txt"
    checkpoint.write_text(target, "one")
    checkpoint.write_text(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("enforce fail")])
def test_failed_write_keeps_the_old_file_and_says_so(tmp_path, error) -> None:
    target = tmp_path / "state.pt"
    target.write_text("old")
    with pytest.raises(OSError, match=r"state.pt: could not write the file .*; the previous state.pt is unchanged"):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise error
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
    with pytest.raises(OSError, match="new.pt: could not write the file .*; nothing was written"):
        with atomic_write(tmp_path / "new.pt"):
            raise error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_interrupted_write_removes_the_temporary_file(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"abc")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_metadata_round_trip_and_plain_checkpoint(tmp_path) -> None:
    meta = Metadata(
        state_mean=[0.5, 1.0],
        state_std=(2.0, 3.0),
        scale=1000,
        context_len=20,
        target_return=3600,
        env_id="Hopper-v4",
        dataset={"best_return": 3100.0},
    )
    write_metadata(tmp_path, meta)
    assert read_metadata(tmp_path) == meta and meta.best_return == 3100.0
    (tmp_path / "plain").mkdir()
    assert read_metadata(tmp_path / "plain") is None
    with pytest.raises(ValueError, match=r"state_mean has 2 values but state_std has 1"):
        Metadata(state_mean=[0.0, 1.0], state_std=[1.0], scale=1.0, context_len=1, target_return=0.0)
    (tmp_path / checkpoint.METADATA_NAME).write_text('{"format_version": 1, "state_mean": [0.0]}')
    with pytest.raises(ValueError, match=r"dt_fast.json: missing keys \['context_len', 'scale', 'state_std'"):
        read_metadata(tmp_path)


def test_bundled_dataset_loads_by_name() -> None:
    data = load_dataset("hopper-medium-v4")
    assert data.env_id == "Hopper-v4" and data.num_episodes == 150
    assert bundled_path("hopper-medium-v4").is_file() and set(BUNDLED) == {"hopper-medium-v4"}
    with pytest.raises(ValueError, match="no bundled dataset named 'hopper-expert'; bundled: hopper-medium-v4"):
        bundled_path("hopper-expert")


def test_check_output_refuses_what_it_would_replace_or_cannot_write(tmp_path) -> None:
    """The one rule for outputs: nothing existing is replaced unasked, no directory is created, checked up front."""
    from dt_fast.checkpoint import check_output

    new = tmp_path / "new.hdf5"
    assert check_output(new, overwrite=False, kind="--out") == new and not new.exists()
    old = tmp_path / "old.hdf5"
    old.write_text("kept")
    with pytest.raises(FileExistsError, match=f"--out {old} already exists; pass --overwrite to replace it"):
        check_output(old, overwrite=False, kind="--out")
    assert check_output(old, overwrite=True, kind="--out") == old and old.read_text() == "kept"
    with pytest.raises(
        FileNotFoundError, match=f"--video {tmp_path}/missing/v.mp4: the directory {tmp_path}/missing does not exist"
    ):
        check_output(tmp_path / "missing" / "v.mp4", overwrite=True, kind="--video")
    assert not (tmp_path / "missing").exists()
    with pytest.raises(PermissionError, match="--plot .*old.hdf5/p.png: cannot write there .*old.hdf5 is not a dir"):
        check_output(old / "p.png", overwrite=False, kind="--plot")
    with pytest.raises(ValueError, match=f"--out {tmp_path} is a directory, expected a file"):
        check_output(tmp_path, overwrite=True, kind="--out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.hdf5"]  # the checks wrote nothing


def test_check_output_for_a_directory_output(tmp_path) -> None:
    """Outputs that are directories (a run) follow the same rule."""
    from dt_fast.checkpoint import check_output

    assert check_output(tmp_path / "run", overwrite=False, kind="--out", directory=True) == tmp_path / "run"
    (tmp_path / "run").mkdir()
    with pytest.raises(FileExistsError, match="--out .*run already exists; pass --overwrite"):
        check_output(tmp_path / "run", overwrite=False, kind="--out", directory=True)
    check_output(tmp_path / "run", overwrite=True, kind="--out", directory=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="--out .*file is a file, expected a directory"):
        check_output(tmp_path / "file", overwrite=True, kind="--out", directory=True)
