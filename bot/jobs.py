"""Training and eval jobs: a `python -m cloneus train` (or `eval`) subprocess each, watched through its progress file.

Why a subprocess: a crash or an out-of-memory error in training cannot take the bot down, and the job outlives
the bot. It is started with `start_new_session=True`, so a Ctrl-C aimed at the bot does not reach it, and with
`subprocess.Popen` rather than asyncio's subprocess transport, whose `close()` kills a still-running child when
the bot's loop shuts down.

The progress file (contract 8: `start`, `log`, `eval`, `checkpoint`, then one of `done`, `interrupted`, `error`)
is the source of truth: the manager tails it every `poll_interval_s`, folds the events into a `ProgressState`,
persists that in the store and hands it to a callback (the admin cog edits a Discord message with it). After a
restart `resume()` re-reads the file of every job the store still calls running and watches it again when its
pid is alive; a job whose process died without a final event is marked failed with the last line of its log.
When a training job ends with `done`, its final checkpoint is registered in `models.json` under the job's name;
an eval job (`start_eval`, config `kind: eval`) writes the same contract and its summary is recorded on the
model's entry instead.

Cron schedules (`/admin schedule train`) use apscheduler's `AsyncIOScheduler`; the crontab strings live in the
store so they survive a restart, and the cog re-adds them with the action to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.progress import ProgressState, read_progress
from cloneus.errors import CloneusError, ConfigError
from cloneus.training.rundir import checkpoint_problem

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from bot.registry import ModelRegistry
    from bot.settings import Settings
    from bot.store import Job, Store

logger = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 2.0
CANCEL_WAIT_SECONDS = 60.0
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUNNING = ("starting", "running", "cancelling")

# /admin train option -> `--set` key of the training config.
CONFIG_KEYS = {
    "hours": "dataset.hours_between_sessions",
    "chunk_size": "training.chunk_size",
    "epochs": "training.num_epochs",
    "model_id": "model.model_id",
}


ProgressCallback = Callable[["Job", ProgressState], Awaitable[None]]


def pid_alive(pid: int | None) -> bool:
    """Whether `pid` is still a running training process (reaps it first if it is our own exited child)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # After a reboot the pid may belong to an unrelated process; on Linux its command line tells.
    cmdline = Path(f"/proc/{pid}/cmdline")
    with contextlib.suppress(OSError):
        return b"cloneus" in cmdline.read_bytes()
    return True


def last_log_line(path: Path) -> str | None:
    """The last non-empty line of a job's log: usually the one-line error the CLI printed."""
    with contextlib.suppress(OSError):
        lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        return lines[-1][-500:] if lines else None
    return None


@dataclass
class _Watch:
    job_id: int
    progress_file: Path
    log_file: Path
    proc: subprocess.Popen | None
    on_progress: ProgressCallback | None
    state: ProgressState = field(default_factory=ProgressState)
    offset: int = 0
    task: asyncio.Task | None = None


class JobManager:
    """Starts, watches, cancels and re-attaches training jobs; registers finished checkpoints.

    Args:
        store (`bot.store.Store`): job rows and schedules.
        settings (`bot.settings.Settings`): `config_path`, `users_json`, `db_path` (job files go beside it).
        registry (`bot.registry.ModelRegistry`): where a finished job's checkpoint is registered.
        poll_interval_s (`float`, *optional*, defaults to `POLL_INTERVAL_SECONDS`): how often progress is read;
            also the fastest a progress message is edited.
    """

    def __init__(
        self,
        store: Store,
        settings: Settings,
        registry: ModelRegistry,
        *,
        poll_interval_s: float = POLL_INTERVAL_SECONDS,
    ):
        self.store = store
        self.settings = settings
        self.registry = registry
        self.poll_interval_s = poll_interval_s
        self.jobs_dir = Path(settings.db_path).parent / "jobs"
        self._watches: dict[int, _Watch] = {}
        self._start_lock = asyncio.Lock()
        self._scheduler: AsyncIOScheduler | None = None

    def build_command(self, params: dict[str, Any], progress_file: Path) -> list[str]:
        """The `python -m cloneus train` argv for `params` (see `start_training`)."""
        if params.get("feedback"):
            # Preference tuning of a served checkpoint on this bot's reactions; -c gives its `feedback:` section
            # (without a config file the checkpoint's own applies).
            argv = [sys.executable, "-m", "cloneus", "train", "--feedback", str(self.settings.db_path)]
            argv += ["--from", str(params["source"])]
            if Path(self.settings.config_path).is_file():
                argv += ["-c", str(self.settings.config_path)]
            argv += ["--progress-file", str(progress_file), "--run-name", params["name"]]
            if params.get("max_steps") is not None:
                argv += ["--max-steps", str(params["max_steps"])]
            return argv
        argv = [sys.executable, "-m", "cloneus", "train", "-c", str(self.settings.config_path)]
        argv += ["-d", str(params["chatlog"]), "--progress-file", str(progress_file)]
        argv += ["--run-name", params["name"], "--set", f"dataset.users_json={self.settings.users_json}"]
        for option, key in CONFIG_KEYS.items():
            if params.get(option) is not None:
                argv += ["--set", f"{key}={params[option]}"]
        if params.get("max_steps") is not None:
            argv += ["--max-steps", str(params["max_steps"])]
        return argv

    def _validate(self, params: dict[str, Any]) -> None:
        """Check name, data and config before anything starts, so mistakes come back as one clear line."""
        from cloneus.config import load_config

        if not RUN_NAME.match(params["name"]):
            raise CloneusError(
                f"name {params['name']!r}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        if params.get("feedback"):
            self._validate_feedback(params)
            return
        if not Path(params["chatlog"]).is_file():
            raise CloneusError(f"no chat export at {params['chatlog']}; run /admin export first")
        overrides = [f"{key}={params[opt]}" for opt, key in CONFIG_KEYS.items() if params.get(opt) is not None]
        try:
            load_config(self.settings.config_path, overrides)
        except ConfigError as e:
            raise ConfigError(str(e).replace("\n", "; ")) from None

    def _validate_feedback(self, params: dict[str, Any]) -> None:
        """The source checkpoint is complete and there is enough usable feedback (else how much more is needed)."""
        from cloneus.training.feedback import feedback_config, plan_feedback
        from cloneus.training.rundir import CHECKPOINT_CONFIG

        source = Path(params["source"])
        problem = checkpoint_problem(source)
        if problem is not None:
            raise CloneusError(f"cannot tune {source}: {problem}")
        own = Path(self.settings.config_path)
        cfg = feedback_config(source / CHECKPOINT_CONFIG, own if own.is_file() else None)
        plan = plan_feedback(cfg, self.settings.db_path, source)
        logger.info("feedback job on %s: %s", source, plan)

    async def _apply_opt_outs(self, chatlog: Path) -> None:
        """Write every opted-out member into the user index before training, building it if there is none."""
        from bot.export import apply_opt_outs, build_index
        from cloneus.data.users import UserIndex

        opted_out = await self.store.opted_out_ids()
        users_json = Path(self.settings.users_json)

        def update() -> None:
            if not users_json.exists():
                build_index([chatlog], users_json, config_path=self.settings.config_path, opted_out_ids=opted_out)
                return
            index = UserIndex.load(users_json)
            if apply_opt_outs(index, opted_out):
                index.save(users_json)

        await asyncio.to_thread(update)

    async def start_training(self, params: dict[str, Any], on_progress: ProgressCallback | None = None) -> Job:
        """Validate, then launch a training subprocess and start watching it.

        Args:
            params (`dict`): `chatlog` (export file) and `name` (run name and registered model name) are
                required; `hours`, `chunk_size`, `epochs`, `max_steps`, `model_id` are optional overrides.
                With `feedback: True` the job tunes checkpoint `source` on the reactions in the bot database
                instead (no `chatlog`; `max_steps` still applies);
                `guild_id`, `channel_id`, `message_id` (where the progress message is) go to the job's columns
                for the callback.
            on_progress (`ProgressCallback`, *optional*): awaited with `(job, state)` whenever progress changes
                and once when the job ends.

        Raises:
            `CloneusError`: another job is running, a bad name, a missing export or a bad config value; nothing
                was started.
        """
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}

        async def prepare() -> None:
            await asyncio.to_thread(self._validate, params)
            if not params.get("feedback"):  # the feedback trainer reads the consent table itself
                await self._apply_opt_outs(Path(params["chatlog"]))

        return await self._launch(params, prepare, lambda progress: self.build_command(params, progress), on_progress)

    async def start_eval(self, params: dict[str, Any], on_progress: ProgressCallback | None = None) -> Job:
        """Launch `python -m cloneus eval` on a registered model's checkpoint; its summary is recorded on the entry.

        Args:
            params (`dict`): `name` (a registered model) is required; `max_turns` and `max_replies` are optional
                budgets; `guild_id`, `channel_id`, `message_id` as for `start_training`.

        Raises:
            `CloneusError`: another job is running, or no such model or checkpoint; nothing was started.
        """
        entry = self.registry.get(params["name"])
        if entry is None:
            raise CloneusError(f"unknown model {params['name']!r}; registered: {', '.join(self.registry.names())}")
        if not entry.path.is_dir():
            raise CloneusError(f"model {entry.name!r}: its checkpoint {entry.ckpt} is not a directory")
        params = params | {"kind": "eval", "ckpt": str(entry.path)}

        def command(progress: Path) -> list[str]:
            argv = [sys.executable, "-m", "cloneus", "eval", params["ckpt"], "--progress-file", str(progress)]
            for option in ("max_turns", "max_replies"):
                if params.get(option) is not None:
                    argv += [f"--{option.replace('_', '-')}", str(params[option])]
            return argv

        return await self._launch(params, None, command, on_progress)

    async def _launch(self, params, prepare, command, on_progress: ProgressCallback | None) -> Job:
        """One job at a time: check nothing runs, await `prepare()` (if any), add the row, spawn `command(progress
        file)`, watch."""
        where = {k: params.pop(k) for k in ("guild_id", "channel_id", "message_id") if k in params}
        async with self._start_lock:  # the check and the new row together, or two commands could both pass
            running = await self.store.list_jobs(statuses=list(RUNNING))
            if running:
                # Two jobs at once would share one GPU (or the CPU cores) and likely both run out of memory.
                job = running[0]
                raise CloneusError(f"job {job.id} `{job.name}` is still running; wait or /admin cancel it")
            if prepare is not None:
                await prepare()
            job_id = await self.store.create_job(
                config=params, run_dir=None, pid=None, status="starting", name=params["name"], **where
            )
        job_dir = self.jobs_dir / f"job-{job_id}"
        job_dir.mkdir(parents=True, exist_ok=True)
        progress_file, log_file = job_dir / "progress.jsonl", job_dir / "train.log"
        argv = command(progress_file)
        try:
            proc = await asyncio.to_thread(_spawn, argv, log_file)
        except OSError as e:
            await self.store.update_job(job_id, status="failed", error=f"could not start the job: {e}")
            raise CloneusError(f"could not start the job: {e}") from e
        params = params | {"progress_file": str(progress_file), "log_file": str(log_file)}
        await self.store.update_job(job_id, status="running", pid=proc.pid, config=params)
        logger.info("job %d started (pid %d): %s", job_id, proc.pid, " ".join(argv[1:]))
        self._watch(_Watch(job_id, progress_file, log_file, proc, on_progress))
        return await self.store.get_job(job_id)

    def _watch(self, watch: _Watch) -> None:
        self._watches[watch.job_id] = watch
        watch.task = asyncio.create_task(self._run_watch(watch), name=f"job-{watch.job_id}-watch")

    async def resume(self, on_progress: ProgressCallback | None = None) -> list[Job]:
        """Find the jobs the store calls running (after a restart) and watch them again.

        Idempotent: a job already watched only gets `on_progress` if it had no callback. A job whose process
        is gone is still read to the end, so one that finished while the bot was down is reported as such.

        Returns:
            `list[Job]`: the jobs found running in the store.
        """
        found = await self.store.list_jobs(statuses=list(RUNNING))
        for job in found:
            watch = self._watches.get(job.id)
            if watch is not None:
                watch.on_progress = watch.on_progress or on_progress
                continue
            config = job.config or {}
            job_dir = self.jobs_dir / f"job-{job.id}"
            progress_file = Path(config.get("progress_file", job_dir / "progress.jsonl"))
            log_file = Path(config.get("log_file", job_dir / "train.log"))
            logger.info("re-attaching to job %d (pid %s)", job.id, job.pid)
            self._watch(_Watch(job.id, progress_file, log_file, None, on_progress))
        return found

    def _alive(self, watch: _Watch, pid: int | None) -> bool:
        if watch.proc is not None:
            return watch.proc.poll() is None
        return pid_alive(pid)

    async def _run_watch(self, watch: _Watch) -> None:
        """Tail the progress file until a final event or the process's death, then finish the job."""
        while True:
            job = await self.store.get_job(watch.job_id)
            alive = self._alive(watch, job.pid)
            events, watch.offset = await asyncio.to_thread(read_progress, watch.progress_file, watch.offset)
            for event in events:
                watch.state.apply(event)
            if events and watch.state.final is None:
                await self.store.update_job(watch.job_id, progress=asdict(watch.state), run_dir=watch.state.run_dir)
                await self._notify(watch)
            if watch.state.final is not None or not alive:
                break
            await asyncio.sleep(self.poll_interval_s)
        await self._finish(watch)

    async def _finish(self, watch: _Watch) -> None:
        job = await self.store.get_job(watch.job_id)
        state = watch.state
        if state.final is None:
            code = watch.proc.returncode if watch.proc is not None else None
            detail = last_log_line(watch.log_file) or "no output"
            state.final = "error"
            state.error = f"the job exited (code {code}) without a final event: {detail}"
        status = {"done": "done", "interrupted": "interrupted", "error": "failed"}[state.final]
        if status == "interrupted" and job.status == "cancelling":
            status = "cancelled"
        if state.final == "done" and (job.config or {}).get("kind") == "eval":
            await asyncio.to_thread(self.registry.record_eval, job.name, state.metrics)
        elif state.final == "done" and state.final_checkpoint:
            problem = await asyncio.to_thread(checkpoint_problem, state.final_checkpoint)
            if problem is not None:
                # Only a complete checkpoint is ever registered: the bot would fail to load anything less.
                status, state.error = "failed", f"final checkpoint {state.final_checkpoint} is incomplete ({problem})"
            else:
                state.metrics = await asyncio.to_thread(_read_metrics, state) or state.metrics
                desc = f"/admin train job {job.id}, {state.step} steps"
                if job.config.get("feedback"):
                    desc = f"/admin train feedback job {job.id}, {state.step} steps, tuned {job.config['source']}"
                await asyncio.to_thread(self.registry.register, job.name, desc, state.final_checkpoint, state.metrics)
        await self.store.update_job(
            watch.job_id,
            status=status,
            progress=asdict(state),
            run_dir=state.run_dir,
            checkpoint=state.final_checkpoint,
            error=state.error,
            finished_at=datetime.now(timezone.utc),
        )
        logger.info("job %d %s", watch.job_id, status)
        await self._notify(watch)
        self._watches.pop(watch.job_id, None)

    async def _notify(self, watch: _Watch) -> None:
        if watch.on_progress is None:
            return
        job = await self.store.get_job(watch.job_id)
        try:
            await watch.on_progress(job, watch.state)
        except Exception:
            # A Discord failure must not stop the job from being tracked and registered.
            logger.exception("progress callback for job %d failed", watch.job_id)

    async def cancel(self, job_id: int) -> Job:
        """Send SIGTERM; the trainer saves a checkpoint and exits, and the watch marks the job cancelled.

        Raises:
            `CloneusError`: no such job, or it is not running.
        """
        job = await self.store.get_job(job_id)
        if job is None:
            raise CloneusError(f"no job {job_id}; /admin jobs lists them")
        if job.status not in RUNNING or not job.pid:
            raise CloneusError(f"job {job_id} is {job.status}, not running")
        # Marked first: the watch may see the trainer's `interrupted` event before this coroutine resumes.
        await self.store.update_job(job_id, status="cancelling")
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.pid, signal.SIGTERM)
        logger.info("job %d: sent SIGTERM to pid %d", job_id, job.pid)
        return await self.store.get_job(job_id)

    async def wait(self, job_id: int, timeout: float | None = None) -> Job:
        """Wait until the watch of `job_id` has finished it (for tests and shutdown)."""
        watch = self._watches.get(job_id)
        if watch is not None and watch.task is not None:
            await asyncio.wait_for(asyncio.shield(watch.task), timeout)
        return await self.store.get_job(job_id)

    def schedule(self, key: str, cron: str, action: Callable[[], Awaitable[Any]]) -> None:
        """Run `action` on a crontab schedule (replacing any schedule under `key`).

        Raises:
            `CloneusError`: `cron` is not a 5-field crontab expression.
        """
        from apscheduler.schedulers.asyncio import AsyncIOScheduler
        from apscheduler.triggers.cron import CronTrigger

        try:
            trigger = CronTrigger.from_crontab(cron, timezone="UTC")
        except ValueError as e:
            raise CloneusError(
                f"cron {cron!r}: {e}; expected 5 fields 'minute hour day month weekday' in UTC, e.g. '0 4 * * sun'"
            ) from None
        if self._scheduler is None:
            self._scheduler = AsyncIOScheduler(timezone="UTC")
            self._scheduler.start()
        self._scheduler.add_job(action, trigger, id=key, replace_existing=True, coalesce=True)

    def unschedule(self, key: str) -> None:
        """Remove the schedule under `key`, if any."""
        if self._scheduler is not None and self._scheduler.get_job(key) is not None:
            self._scheduler.remove_job(key)

    def next_run(self, key: str) -> str | None:
        """When the schedule under `key` fires next (ISO time, UTC), or None."""
        job = self._scheduler.get_job(key) if self._scheduler is not None else None
        return job.next_run_time.isoformat(timespec="minutes") if job and job.next_run_time else None

    async def close(self, cancel_running: bool = False) -> None:
        """Stop watching. Running jobs keep going (found again by `resume`) unless `cancel_running`."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if cancel_running:
            for job_id in list(self._watches):
                with contextlib.suppress(CloneusError):
                    await self.cancel(job_id)
            tasks = [w.task for w in self._watches.values() if w.task is not None]
            if tasks:
                await asyncio.wait(tasks, timeout=CANCEL_WAIT_SECONDS)
        for watch in list(self._watches.values()):
            if watch.task is not None:
                watch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch.task
        self._watches.clear()


def _spawn(argv: list[str], log_file: Path) -> subprocess.Popen:
    """Start the trainer in its own session, its output appended to `log_file`."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _read_metrics(state: ProgressState) -> dict[str, Any] | None:
    """`metrics.json` of the run (the final metrics), falling back to the `done` event's."""
    if not state.run_dir:
        return None
    with contextlib.suppress(OSError, json.JSONDecodeError):
        return json.loads((Path(state.run_dir) / "metrics.json").read_text(encoding="utf-8"))
    return None
