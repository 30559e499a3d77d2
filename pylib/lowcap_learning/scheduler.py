"""`lowcap-learning scheduler`: the hourly jobs at :08, :09 and :10 (design §14), with APScheduler.

Each firing runs `jobs.run_job` for the hour slot of its fire time: the slot row's INSERT decides who
runs it, so any number of schedulers (or a cron `run --slot current`) run each job once per hour. Every
firing opens a fresh connection (a session connection: advisory locks need one, so not a transaction
pooler) and retries the connect with backoff, so a database restart costs no slot. The clock is
injectable: `run_between` drives the same cron triggers and `fire` on a simulated clock (tests, demo).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from lowcap_learning import jobs as jobs_module
from lowcap_learning import logs
from lowcap_learning.db import connect

Clock = Callable[[], datetime]


def hour_slot(moment: datetime) -> datetime:
    """The start of the hour containing moment (UTC)."""
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


class HourlyScheduler:
    def __init__(
        self,
        url: str | None,
        names: list[str] | None = None,
        *,
        clock: Clock | None = None,
        registry: dict[str, jobs_module.Job] | None = None,
        runner=None,
        retries: int = 5,
        backoff: float = 2.0,
        export_logs: bool = True,
        log_file: str | None = None,
        simulated_as_of: bool = False,
    ) -> None:
        self.url = url
        self.registry = registry or jobs_module.JOBS
        self.names = names or sorted(self.registry, key=lambda n: self.registry[n].minute)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.runner = runner
        self.retries = retries
        self.backoff = backoff
        self.export_logs = export_logs
        self.log_file = log_file
        self.simulated_as_of = simulated_as_of  # pass the fire time as as_of (simulated time)
        self.results: deque[jobs_module.JobRun] = deque(maxlen=1000)  # the latest runs of this process

    def trigger(self, name: str) -> CronTrigger:
        return CronTrigger(minute=self.registry[name].minute, timezone=UTC)

    def fire(self, name: str, now: datetime | None = None) -> jobs_module.JobRun | None:
        """Run job `name` for the hour slot of `now` unless someone already has; reconnects on loss."""
        now = now or self.clock()
        slot = hour_slot(now)
        as_of = now if self.simulated_as_of else None
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                run = jobs_module.run_job(
                    self.url, name, as_of=as_of, slot_start=slot, registry=self.registry, runner=self.runner
                )
                break
            except psycopg.OperationalError as err:
                logs.get_logger(self.log_file).log(
                    logging.ERROR if attempt == self.retries else logging.WARNING,
                    "SCHEDULER: Database unreachable | job=%s | slot=%s | attempt=%d | error=%s",
                    name, slot.isoformat(), attempt + 1, str(err).strip().splitlines()[0] if str(err) else err,
                )
                if attempt == self.retries:
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 60.0)
        self.results.append(run)
        if self.export_logs:
            try:
                with connect(self.url, autocommit=True) as conn:
                    logs.export(conn, self.log_file)
            except psycopg.OperationalError:
                pass  # the next firing (or `logs follow`) exports them
        return run

    def run_between(self, start: datetime, end: datetime, sleep: Callable[[datetime], None] | None = None) -> None:
        """Fire every job at each cron time in (start, end], in time order, on a simulated clock."""
        due: list[tuple[datetime, str]] = []
        for name in self.names:
            trig = self.trigger(name)
            t = trig.get_next_fire_time(None, start + timedelta(microseconds=1))
            while t is not None and t <= end:
                due.append((t, name))
                t = trig.get_next_fire_time(t, t + timedelta(microseconds=1))
        for t, name in sorted(due):
            if sleep:
                sleep(t)
            self.fire(name, t)

    def build(self) -> BlockingScheduler:
        sched = BlockingScheduler(timezone=UTC)
        for name in self.names:
            sched.add_job(
                self.fire,
                self.trigger(name),
                args=[name],
                id=name,
                name=name,
                coalesce=True,
                misfire_grace_time=600,
                max_instances=1,
            )
        return sched

    def start(self) -> None:  # pragma: no cover - blocks until interrupted
        self.build().start()

