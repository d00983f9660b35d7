"""`manage.py jobs pause emails`, `jobs resume emails`, `jobs paused`: steer the cluster."""

from __future__ import annotations

import argparse
import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from django_jobs.exceptions import JobsError
from django_jobs.pauses import Target, pause_target, paused, resume_target, target


class Command(BaseCommand):
    help = (
        "Pause or resume queues and job names for every worker on every host, or list what "
        "is paused. Running jobs finish; paused ones wait until resumed."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for verb, text in (
            ("pause", "Stop workers from claiming jobs of these queues or job names."),
            ("resume", "Let workers claim them again (idle workers wake at once)."),
        ):
            sub = commands.add_parser(verb, help=text, description=text)
            sub.add_argument("queues", nargs="*", metavar="QUEUE", help="Queues to " + verb + ".")
            sub.add_argument(
                "--name",
                dest="names",
                action="append",
                default=[],
                metavar="JOB",
                help=f"A job name to {verb}, whatever its queue (repeatable).",
            )
            if verb == "pause":
                sub.add_argument("--reason", default="", help="Shown in the admin and here.")
        commands.add_parser("paused", help="List the paused queues and job names.")

    def handle(self, *args: Any, **options: Any) -> None:
        command = options["command"]
        if command == "paused":
            self._list()
            return
        targets = self._targets(options["queues"], options["names"])
        for what in targets:
            if command == "pause":
                pause_target(what, by=_who(), reason=options["reason"])
                self.stdout.write(f"Paused {what}.")
            elif resume_target(what):
                self.stdout.write(f"Resumed {what}.")
            else:
                self.stdout.write(f"{str(what).capitalize()} was not paused.")

    def _targets(self, queues: list[str], names: list[str]) -> list[Target]:
        if not queues and not names:
            raise CommandError("Name at least one queue, or a job with --name JOB.")
        try:
            # Every value is checked before anything is written.
            return [target(queue=q) for q in queues] + [target(name=n) for n in names]
        except JobsError as exc:
            raise CommandError(str(exc)) from None

    def _list(self) -> None:
        pauses = paused()
        if not pauses:
            self.stdout.write("Nothing is paused.")
            return
        for p in pauses:
            when = timezone.localtime(p.paused_at).strftime("%Y-%m-%d %H:%M:%S %Z")
            line = f"{p.get_kind_display()} {p.value!r}: paused {when}"
            if p.paused_by:
                line += f" by {p.paused_by}"
            if p.reason:
                line += f" ({p.reason})"
            self.stdout.write(line)


def _who() -> str:
    try:
        return f"{getpass.getuser()} (manage.py jobs)"
    except (KeyError, OSError):  # no user name in this environment (e.g. a bare container)
        return "manage.py jobs"
