import json

import pytest

from cloneus.io import atomic_write_json, atomic_write_text


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
