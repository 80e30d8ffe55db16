"""JobManager without Discord: validation, progress tailing, finishing, cancel, resume after a restart, cron.

The real trainer is exercised end to end by `/admin train` in `test_cog_admin.py`. Here the test plays the
trainer's side of the progress-file contract (contract 8) itself: a sleeping Python process stands in for the
training pid (its argv carries "cloneus", which is how `pid_alive` recognises a training process), and the test
appends the JSON lines the trainer would write. That makes every state transition deterministic and fast.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.jobs import JobManager, pid_alive
from bot.progress import ProgressState
from bot.registry import ModelRegistry
from bot.settings import Settings
from bot.store import Store
from cloneus.data.users import User, UserIndex
from cloneus.errors import CloneusError, ConfigError

POLL_S = 0.05


def write_events(path: Path, *events: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")


def write_checkpoint_files(checkpoint: Path) -> Path:
    """The files that make a checkpoint complete for `checkpoint_problem` (their content is not read here)."""
    checkpoint.mkdir(parents=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "cloneus_config.yaml", "users.json"):
        (checkpoint / name).write_text("{}")
    return checkpoint


def stand_in(script: str = "import time; time.sleep(60)") -> subprocess.Popen:
    """A process that lives like a trainer; 'cloneus' in its argv marks it as one for `pid_alive`.

    Returns once the child has exec'd (before that, its command line is still the parent's).
    """
    proc = subprocess.Popen([sys.executable, "-c", script, "cloneus"], start_new_session=True)
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    deadline = time.monotonic() + 5
    while cmdline.exists() and b"cloneus" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def sigterm_writes_interrupted(progress: Path) -> str:
    """A stand-in that, like the trainer, answers SIGTERM with an `interrupted` event and exit code 130."""
    return (
        "import json, signal, sys, time\n"
        "def stop(*_):\n"
        "    line = json.dumps({'event': 'interrupted', 'checkpoint': 'ck-1'})\n"
        f"    open({str(progress)!r}, 'a').write(line + '\\n')\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "time.sleep(60)\n"
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "train_config.yaml"
    config.write_text("model:\n  model_id: builtin:smollm2-135m\n", encoding="utf-8")
    chat_dir = tmp_path / "chat"
    chat_dir.mkdir()
    return Settings(
        token="x",
        guild_ids=[1],
        db_path=tmp_path / "bot.db",
        models_json=tmp_path / "models.json",
        config_path=config,
        chat_dir=chat_dir,
        users_json=tmp_path / "users.json",
    )


@pytest.fixture
async def store(settings: Settings):
    async with await Store.open(settings.db_path) as store:
        yield store


@pytest.fixture
def registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(settings.models_json)


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


async def running_job(store: Store, jobs: JobManager, proc: subprocess.Popen, name: str = "m1") -> tuple[int, Path]:
    """A job row as `start_training` leaves it, pointing at `proc` and a fresh progress file."""
    job_dir = jobs.jobs_dir / "stand-in"
    job_dir.mkdir(parents=True, exist_ok=True)
    progress = job_dir / f"{name}.jsonl"
    config = {"name": name, "chatlog": "chat.json", "progress_file": str(progress), "log_file": str(job_dir / "log")}
    job_id = await store.create_job(config=config, run_dir=None, pid=proc.pid, name=name)
    return job_id, progress


class TestPidAlive:
    def test_running_then_exited(self, procs):
        proc = stand_in("import time; time.sleep(0.5)")
        procs.append(proc)
        assert pid_alive(proc.pid)
        proc.wait()
        assert not pid_alive(proc.pid)

    def test_foreign_process_is_not_a_job(self, procs):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        procs.append(proc)
        assert not pid_alive(proc.pid)
        assert not pid_alive(None)


class TestStartValidation:
    async def test_bad_name_missing_export_and_bad_value_start_nothing(self, store, settings, registry, tmp_path):
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        chatlog = settings.chat_dir / "1-2.json"
        chatlog.write_text("{}", encoding="utf-8")
        with pytest.raises(CloneusError, match="name 'bad name'"):
            await jobs.start_training({"name": "bad name", "chatlog": chatlog})
        with pytest.raises(CloneusError, match="run /admin export first"):
            await jobs.start_training({"name": "ok", "chatlog": settings.chat_dir / "missing.json"})
        with pytest.raises(ConfigError, match="training.chunk_size"):
            await jobs.start_training({"name": "ok", "chatlog": chatlog, "chunk_size": -5})
        assert await store.list_jobs() == []

    def test_command_carries_options_as_config_overrides(self, store, settings, registry, tmp_path):
        jobs = JobManager(store, settings, registry)
        argv = jobs.build_command(
            {"name": "m", "chatlog": "c.json", "hours": 2.5, "max_steps": 3, "epochs": None}, tmp_path / "p.jsonl"
        )
        assert argv[:4] == [sys.executable, "-m", "cloneus", "train"]
        assert "dataset.hours_between_sessions=2.5" in argv and "training.num_epochs=None" not in " ".join(argv)
        assert argv[argv.index("--max-steps") + 1] == "3" and argv[argv.index("--run-name") + 1] == "m"
        assert argv[argv.index("--progress-file") + 1] == str(tmp_path / "p.jsonl")

    async def test_opted_out_members_are_written_into_the_index_before_launch(
        self, store, settings, registry, tmp_path
    ):
        users = [
            User(id="11", username="alice", display_name="Alice", message_count=5, share=0.5),
            User(id="22", username="bob", display_name="Bob", message_count=5, share=0.5),
        ]
        UserIndex(users=users).save(settings.users_json)
        await store.set_opt_out(11, True)
        chatlog = settings.chat_dir / "1-2.json"
        chatlog.write_text("{}", encoding="utf-8")
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job = await jobs.start_training({"name": "consent", "chatlog": chatlog, "max_steps": 1})
        await jobs.close(cancel_running=True)
        index = UserIndex.load(settings.users_json)
        assert index.get("alice").opted_out and not index.get("bob").opted_out
        assert job.pid is not None and job.config["chatlog"] == str(chatlog)

    async def test_one_job_at_a_time(self, store, settings, registry, procs):
        proc = stand_in()
        procs.append(proc)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job_id, _ = await running_job(store, jobs, proc)
        chatlog = settings.chat_dir / "1-2.json"
        chatlog.write_text("{}", encoding="utf-8")
        with pytest.raises(CloneusError, match=f"job {job_id} `m1` is still running"):
            await jobs.start_training({"name": "second", "chatlog": chatlog})
        assert len(await store.list_jobs()) == 1


class TestWatch:
    async def test_progress_is_reported_and_done_registers_the_checkpoint(self, store, settings, registry, procs):
        proc = stand_in()
        procs.append(proc)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job_id, progress = await running_job(store, jobs, proc)
        seen: list[tuple[str, ProgressState]] = []

        async def on_progress(job, state):
            seen.append((job.status, ProgressState(**vars(state))))

        await jobs.resume(on_progress)
        run_dir = Path(settings.db_path).parent / "runs" / "m1"
        write_events(progress, {"event": "start", "run_dir": str(run_dir), "total": 4})
        write_events(progress, {"event": "log", "step": 2, "total": 4, "loss": 3.0})
        await asyncio.wait_for(_until(lambda: any(s.step == 2 for _, s in seen)), 10)
        assert (await store.get_job(job_id)).progress["step"] == 2

        write_checkpoint_files(run_dir / "checkpoint-4")
        (run_dir / "metrics.json").write_text(json.dumps({"eval_loss": 1.5, "eval_perplexity": 4.48}))
        write_events(progress, {"event": "done", "checkpoint": str(run_dir / "checkpoint-4"), "metrics": {}})
        job = await jobs.wait(job_id, timeout=10)
        assert job.status == "done" and job.checkpoint == str(run_dir / "checkpoint-4")
        assert seen[-1][0] == "done"
        entry = ModelRegistry(settings.models_json).get("m1")
        assert entry.ckpt == str(run_dir / "checkpoint-4") and entry.metrics["eval_perplexity"] == 4.48

    async def test_done_with_an_incomplete_checkpoint_fails_and_registers_nothing(
        self, store, settings, registry, procs
    ):
        proc = stand_in()
        procs.append(proc)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job_id, progress = await running_job(store, jobs, proc)
        await jobs.resume()
        checkpoint = write_checkpoint_files(Path(settings.db_path).parent / "runs" / "m1" / "checkpoint-4")
        (checkpoint / "users.json").unlink()
        write_events(progress, {"event": "done", "checkpoint": str(checkpoint), "metrics": {}})
        job = await jobs.wait(job_id, timeout=10)
        assert job.status == "failed" and "checkpoint-4 is incomplete (no users.json)" in job.error
        assert ModelRegistry(settings.models_json).get("m1") is None

    async def test_process_dying_without_final_event_fails_with_its_last_log_line(
        self, store, settings, registry, procs
    ):
        proc = stand_in("import time; time.sleep(0.2)")
        procs.append(proc)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job_id, progress = await running_job(store, jobs, proc)
        Path((await store.get_job(job_id)).config["log_file"]).write_text("loading\nerror: out of memory\n")
        await jobs.resume()
        job = await jobs.wait(job_id, timeout=10)
        assert job.status == "failed" and "error: out of memory" in job.error
        assert ModelRegistry(settings.models_json).get("m1") is None

    async def test_cancel_sends_sigterm_and_the_job_ends_cancelled(self, store, settings, registry, procs, tmp_path):
        progress = tmp_path / "cancel.jsonl"
        proc = stand_in(sigterm_writes_interrupted(progress))
        procs.append(proc)
        await asyncio.sleep(0.5)  # let the stand-in install its handler
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        config = {"name": "c", "progress_file": str(progress)}
        job_id = await store.create_job(config=config, run_dir=None, pid=proc.pid, name="c")
        await jobs.resume()
        assert (await jobs.cancel(job_id)).status == "cancelling"
        job = await jobs.wait(job_id, timeout=10)
        assert job.status == "cancelled" and job.checkpoint == "ck-1"
        with pytest.raises(CloneusError, match="not running"):
            await jobs.cancel(job_id)
        with pytest.raises(CloneusError, match="no job 999"):
            await jobs.cancel(999)

    async def test_shutdown_with_cancel_running_waits_for_the_checkpoint(self, store, settings, registry, procs):
        progress = settings.db_path.parent / "shutdown.jsonl"
        proc = stand_in(sigterm_writes_interrupted(progress))
        procs.append(proc)
        await asyncio.sleep(0.5)  # let the stand-in install its handler
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        config = {"name": "s", "progress_file": str(progress)}
        job_id = await store.create_job(config=config, run_dir=None, pid=proc.pid, name="s")
        await jobs.resume()
        await jobs.close(cancel_running=True)
        proc.wait(timeout=10)  # its exit code was already reaped by the manager's liveness check
        job = await store.get_job(job_id)
        assert job.status == "cancelled" and job.checkpoint == "ck-1"

    async def test_restart_finds_the_running_job_again(self, store, settings, registry, procs):
        proc = stand_in()
        procs.append(proc)
        first = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job_id, progress = await running_job(store, first, proc)
        await first.resume()
        await first.close(cancel_running=False)
        assert proc.poll() is None and (await store.get_job(job_id)).status == "running"

        second = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        found = await second.resume()
        assert [j.id for j in found] == [job_id]
        write_events(progress, {"event": "error", "message": "CUDA out of memory"})
        job = await second.wait(job_id, timeout=10)
        assert job.status == "failed" and job.error == "CUDA out of memory"


class TestSchedule:
    async def test_cron_validation_and_next_run(self, store, settings, registry):
        jobs = JobManager(store, settings, registry)

        async def action():
            return None

        with pytest.raises(CloneusError, match="expected 5 fields"):
            jobs.schedule("g", "every sunday", action)
        jobs.schedule("g", "0 4 * * sun", action)
        assert jobs.next_run("g").endswith("04:00+00:00")
        jobs.unschedule("g")
        assert jobs.next_run("g") is None
        await jobs.close()


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(POLL_S)


class TestEvalJobs:
    async def test_unknown_model_and_missing_checkpoint_start_nothing(self, store, settings, registry, tmp_path):
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        with pytest.raises(CloneusError, match="unknown model 'nope'"):
            await jobs.start_eval({"name": "nope"})
        registry.register("gone", "", tmp_path / "missing-checkpoint")
        with pytest.raises(CloneusError, match="is not a directory"):
            await jobs.start_eval({"name": "gone"})
        assert await store.list_jobs() == []

    async def test_a_failing_eval_ends_failed_with_its_error_and_records_nothing(
        self, store, settings, registry, tmp_path
    ):
        empty = tmp_path / "checkpoint-1"
        empty.mkdir()
        registry.register("m1", "", empty)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        job = await jobs.start_eval({"name": "m1", "max_turns": 5})
        assert job.config["kind"] == "eval" and job.config["ckpt"] == str(empty)
        job = await jobs.wait(job.id, timeout=120)
        assert job.status == "failed" and job.error
        assert ModelRegistry(settings.models_json).get("m1").eval is None

    async def test_done_records_the_summary_on_the_model_entry(self, store, settings, registry, procs, tmp_path):
        registry.register("m1", "trained", tmp_path / "checkpoint-4", {"eval_loss": 1.0})
        proc = stand_in()
        procs.append(proc)
        jobs = JobManager(store, settings, registry, poll_interval_s=POLL_S)
        progress = tmp_path / "eval.jsonl"
        config = {"kind": "eval", "name": "m1", "ckpt": str(tmp_path / "checkpoint-4"), "progress_file": str(progress)}
        job_id = await store.create_job(
            config=config | {"log_file": str(tmp_path / "log")}, run_dir=None, pid=proc.pid, name="m1"
        )
        await jobs.resume()
        summary = {"perplexity": 20.0, "speaker_top1": 0.4, "attribution": 0.3}
        write_events(progress, {"event": "start", "total": 2}, {"event": "log", "step": 2, "total": 2})
        write_events(progress, {"event": "done", "checkpoint": config["ckpt"], "metrics": summary})
        job = await jobs.wait(job_id, timeout=10)
        assert job.status == "done"
        entry = ModelRegistry(settings.models_json).get("m1")
        assert entry.eval == summary and entry.desc == "trained" and entry.metrics == {"eval_loss": 1.0}
