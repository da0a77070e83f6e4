"""tg-parser worker: execute the runs queued through the API, until stopped."""

from __future__ import annotations

from pathlib import Path

import click

from tg_parser.cli.context import AppContext, pass_app
from tg_parser.cli.signals import stop_on_signals


@click.command("worker")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out"),
    show_default=True,
    help="Where a run's export step writes, unless the run says otherwise.",
)
@click.option("--once", is_flag=True, help="Execute what is queued now, then exit.")
@pass_app
def command(app: AppContext, out_dir: Path, once: bool) -> None:
    """Execute queued runs (POST /api/v1/runs) one at a time, until Ctrl-C or SIGTERM.

    \b
    Any number of workers, on any number of hosts, share the queue on PostgreSQL; each run is
    executed once. A run whose worker died is marked failed once its lease (RUN_LEASE_SECONDS)
    lapses. Finished runs post their signed webhook. Idle workers look for work every
    WORKER_POLL_SECONDS. A stop ends the pause at once, or the running run after its current step.
    Old journal rows are pruned when PRUNE_AUTO_HOURS (24) have passed since the last prune (see
    'tg-parser db prune'; PRUNE_AUTO_HOURS=0 turns that off).

    \b
    Examples:
      tg-parser worker
      tg-parser worker --once --out /srv/kb
    """
    from tg_parser.pipeline.queue import QueueWorker

    worker = QueueWorker(app.database(), app.settings, out_dir=out_dir)
    click.echo(f"Worker {worker.worker_id} waiting for runs (Ctrl-C to stop).", err=True)
    with stop_on_signals(worker.stop, "\nStopping after the current step (Ctrl-C again to quit now)…\n"):
        if once:
            executed = worker.drain()
            click.echo(f"Executed {executed} run(s).", err=True)
        else:
            worker.run_forever()
    click.echo("Stopped." if worker.stop.is_set() else "Done.", err=True)
