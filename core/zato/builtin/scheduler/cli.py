""" `zato scheduler list | execute | history`: the jobs of a running server, through its admin API. """

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from .jobs import API, OUTCOME

# ################################################################################################
# The command line


@click.group("scheduler")
def scheduler_command() -> None:
    """ Scheduler jobs of a running server. """


def _api(base_dir: str, method: str, path: str) -> Any:
    from zato.cli.admin_client import admin_request, describe_error, server_paths
    status, _, body = admin_request(server_paths(base_dir), method, path)
    if status >= 300:
        raise click.ClickException(describe_error(status, body))
    return json.loads(body)


@scheduler_command.command("list")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_command(base_dir: str, as_json: bool) -> None:
    """ Every job of the server running in BASE_DIR: schedule, next run, last outcome. """
    data = _api(base_dir, "GET", f"{API}/jobs")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    import shutil
    from rich.console import Console
    from rich.table import Table
    lease = data.get("lease") or {}
    table = Table(title=f"Scheduler jobs (scheduling: {lease.get('holder', 'nobody')})")
    table.add_column("name", no_wrap=True)
    for column in ("active", "service", "schedule", "next run", "runs", "last run"):
        table.add_column(column, overflow="fold")
    problems = []
    for job in data["jobs"]:
        last = job.get("last_run") or {}
        last_text = f"{last['outcome']} {_short_time(last.get('started') or last.get('requested'))}" if last else "-"
        if job["error"]:
            problems.append(f"{job['name']}: {job['error']}")
        schedule = job["schedule"] or "[red]invalid (below)[/]"
        runs = f"{job['runs']}/{job['repeats']}" if job.get("repeats") else str(job["runs"])
        table.add_row(job["name"], "yes" if job["is_active"] else "no", str(job["service"]), schedule,
                      _short_time(job.get("next_due_local")), runs, last_text)
    console = Console(highlight=False, width=shutil.get_terminal_size((160, 24)).columns)
    console.print(table)
    for problem in problems:
        console.print(f"[red]not scheduled[/] {problem}")


def _short_time(iso: str | None) -> str:
    """ 2026-05-01T09:00:00.123+02:00 as 2026-05-01 09:00:00+02:00. """
    if not iso:
        return "-"
    moment = datetime.fromisoformat(iso).replace(microsecond=0)
    return moment.isoformat(sep=" ")


@scheduler_command.command("execute")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--wait", "wait_seconds", default=0.0, show_default=True,
              help="Seconds to wait for the run's outcome (0: return once it is requested).")
def execute_command(base_dir: str, name: str, wait_seconds: float) -> None:
    """ Run the job NAME of the server running in BASE_DIR now, whatever its type. """
    import time
    from urllib.parse import quote
    path = f"{API}/jobs/{quote(name, safe='')}"
    reply = _api(base_dir, "POST", f"{path}/execute")
    click.echo(f"job {name!r}: run requested, cid {reply['cid']}")
    if reply.get("note"):
        click.echo(f"note: {reply['note']}", err=True)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        runs = [run for run in _api(base_dir, "GET", f"{path}/history?limit=50")["runs"] if run["cid"] == reply["cid"]]
        if runs and runs[0]["outcome"] not in (OUTCOME.PENDING, OUTCOME.RUNNING):
            run = runs[0]
            click.echo(f"outcome: {run['outcome']} in {run['duration_ms']} ms" + (f": {run['error']}" if run["error"]
                                                                                  else ""))
            if run["outcome"] != OUTCOME.OK:
                raise SystemExit(1)
            return
        time.sleep(0.1)
    if wait_seconds:
        raise click.ClickException(f"no outcome within {wait_seconds} s; see `zato scheduler history {base_dir} "
                                   f"{name}`")


@scheduler_command.command("history")
@click.argument("base_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--limit", default=20, show_default=True)
def history_command(base_dir: str, name: str, limit: int) -> None:
    """ The last runs of job NAME of the server running in BASE_DIR. """
    from urllib.parse import quote
    data = _api(base_dir, "GET", f"{API}/jobs/{quote(name, safe='')}/history?limit={limit}")
    for run in data["runs"]:
        click.echo(f"{run['started'] or run['requested']}  {run['kind']:9}  {run['outcome']:9}  "
                   f"{run['duration_ms'] if run['duration_ms'] is not None else '-':>10} ms  cid {run['cid']}"
                   + (f"  {run['error']}" if run["error"] else ""))
