import json
import os
import subprocess
import sys

import pytest

from cloneus.io import atomic_write_json, atomic_write_text, remove_orphaned_temp_dirs


class TestAtomicWrite:
    def test_writes_and_replaces(self, tmp_path):
        path = tmp_path / "sub" / "f.txt"
        atomic_write_text(path, "one")
        atomic_write_text(path, "two")
        assert path.read_text() == "two"
        assert [p.name for p in path.parent.iterdir()] == ["f.txt"]

    def test_failed_serialisation_leaves_old_file(self, tmp_path):
        path = tmp_path / "users.json"
        atomic_write_json(path, {"ok": 1})

        class Boom:
            def __str__(self):
                raise RuntimeError("cannot serialise")

        with pytest.raises(RuntimeError):
            atomic_write_json(path, {"bad": Boom()})
        assert json.loads(path.read_text()) == {"ok": 1}
        assert [p.name for p in tmp_path.iterdir()] == ["users.json"]


class TestOrphanedTempDirs:
    def test_only_folders_of_dead_writers_are_removed(self, tmp_path):
        dead_pid = int(
            subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout
        )
        dead = tmp_path / f".tmp-entry-{dead_pid}"
        live = tmp_path / f".tmp-entry-{os.getppid()}"
        mine = tmp_path / f".tmp-entry-{os.getpid()}"
        unnamed = tmp_path / ".tmp-no-pid-here"
        for folder in (dead, live, mine, unnamed):
            (folder / "part").mkdir(parents=True)
        (tmp_path / f".tmp-file-{dead_pid}").write_text("a file, not a writer's folder")
        remove_orphaned_temp_dirs(tmp_path)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, mine.name, unnamed.name, f".tmp-file-{dead_pid}"]
        )
