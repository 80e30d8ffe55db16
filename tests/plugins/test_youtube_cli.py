"""`python -m cloneus youtube export|import|stats|check` through the real dispatcher."""

from __future__ import annotations

import json
import socket

from cloneus.cli import main
from cloneus.plugins.youtube.cache import VideoCache

from .conftest import video_id


def fake_getaddrinfo(*args, **kwargs):
    """Name resolution fails as on a machine without network, before the conftest guard is reached."""
    raise socket.gaierror(-2, "Name or service not known")


def seed(db) -> None:
    cache = VideoCache(db)
    cache.store_lookup({video_id(1): ("One", "Chan")}, [video_id(2)])
    cache.store_search("one", video_id(1))
    cache.close()


class TestYoutubeCli:
    def test_export_then_import_elsewhere(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        seed(tmp_path / "bot.db")
        assert main(["youtube", "export", "cache.jsonl", "--db", "bot.db"]) == 0
        assert "1 videos, 1 invalid ids, 1 searches" in capsys.readouterr().out
        assert main(["youtube", "import", "cache.jsonl", "--db", "train.db"]) == 0
        assert "1 videos, 1 invalid ids, 1 searches added" in capsys.readouterr().out
        assert main(["youtube", "import", "cache.jsonl", "--db", "train.db"]) == 0
        assert "0 videos, 0 invalid ids, 0 searches added" in capsys.readouterr().out
        cache = VideoCache(tmp_path / "train.db")
        assert cache.videos([video_id(1)]) == {video_id(1): ("One", "Chan")}
        cache.close()

    def test_db_path_comes_from_the_config(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        seed(tmp_path / "from_config.db")
        (tmp_path / "c.yaml").write_text("model: {model_id: x}\nyoutube: {db_path: from_config.db}\n")
        assert main(["youtube", "stats", "-c", "c.yaml", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert (stats["videos"], stats["invalid"], stats["searches"], stats["units_used"]) == (1, 1, 1, 0)

    def test_stats_table(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        assert main(["youtube", "stats", "--db", "x.db"]) == 0
        out = capsys.readouterr().out
        assert "daily_quota  10000" in out and "videos       0" in out

    def test_bad_import_file_is_a_one_line_error(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        (tmp_path / "bad.jsonl").write_text('{"type": "video"}\n')
        assert main(["youtube", "import", "bad.jsonl", "--db", "x.db"]) == 2
        assert "bad.jsonl, line 1, field 'id'" in capsys.readouterr().err

    def test_check_without_key(self, tmp_path, monkeypatch, capsys):
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("YOUTUBE_API_KEY", raising=False)
        assert main(["youtube", "check", "--db", "x.db"]) == 1
        assert "YOUTUBE_API_KEY is not set" in capsys.readouterr().out

    def test_check_reads_the_key_from_dotenv(self, tmp_path, monkeypatch, capsys):
        """The key is found in ./.env; the check then fails offline (network guard), as a one-line message."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("YOUTUBE_API_KEY", raising=False)
        (tmp_path / ".env").write_text("YOUTUBE_API_KEY=from-dotenv-secret\n")
        monkeypatch.setattr("socket.getaddrinfo", fake_getaddrinfo)
        assert main(["youtube", "check", "--db", "x.db"]) == 1
        out = capsys.readouterr().out
        assert "YouTube key not checked: network error" in out and "from-dotenv-secret" not in out
