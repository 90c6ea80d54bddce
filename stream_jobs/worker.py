"""Run the stream jobs as a Faust worker in this process (``citystream jobs``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import faust

from citystream.settings import Settings
from stream_jobs import metrics
from stream_jobs.app import create_app

logger = logging.getLogger(__name__)


async def ensure_internal_topics(settings: Settings, names: dict[str, bool]) -> None:
    """Create the app's own topics (name -> compacted) before the first rebalance needs them."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from citystream.kafka_client import Principal, client_kwargs

    k = settings.kafka
    admin = AIOKafkaAdminClient(**client_kwargs(settings, Principal.JOBS))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name,
                k.partitions,
                k.replication_factor,
                topic_configs={"cleanup.policy": "compact"} if compacted else {},
            )
            for name, compacted in names.items()
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
            logger.info("created %s", ", ".join(t.name for t in missing))
    finally:
        await admin.close()


def run(settings: Settings, loglevel: str = "INFO") -> int:
    """Start the worker and block until it is stopped (SIGINT / SIGTERM); the exit code."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if settings.jobs.nice:
        os.nice(settings.jobs.nice)
    jobs = create_app(settings)
    jobs.app.conf.datadir.parent.mkdir(parents=True, exist_ok=True)
    topics = {jobs.topics.series.get_topic_name(): False, jobs.topics.signals.get_topic_name(): False}
    topics.update({t.changelog_topic.get_topic_name(): True for t in jobs.tables})
    asyncio.run(ensure_internal_topics(settings, topics))
    metrics.serve(settings, jobs.stats)
    asyncio.set_event_loop(asyncio.new_event_loop())
    logger.info(
        "stream jobs %s on %s (partitions %d, grace %.0f s)",
        jobs.app.conf.id,
        settings.kafka.bootstrap,
        settings.kafka.partitions,
        settings.jobs.grace_s,
    )
    worker = faust.Worker(
        jobs.app,
        loglevel=loglevel,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
