"""``abacus-release``: the CI/CD gate. Start a guarded release from a pipeline, wait for it, and
exit with what happened, so the pipeline's next stage runs only when the change shipped.

    abacus-release start --url U --token T --project P --flag F --environment E --variation V
                         [--baseline B] [--kind canary|blue_green] [--steps 1,5,25,50,100]
                         [--step-minutes N] [--step-units N] [--metric key[:role[:margin]] ...]
                         [--no-auto-rollback] [--wait] [--timeout SECONDS] [--poll SECONDS]
    abacus-release status|wait|rollback --url U --token T --project P --id R

Exit codes: 0 completed (``status``, ``rollback`` and ``start`` without ``--wait``: done as
asked), 1 rolled back or failed (the change did not ship), 2 usage or server error (the server's
message is printed), 3 timeout (the release goes on). ``ABACUS_URL``, ``ABACUS_TOKEN`` and
``ABACUS_PROJECT`` stand in for the options. docs/releases.md "The CI/CD gate".

Standard library only (argparse, urllib, json, time) and no Django: it runs on a CI machine
that has only this file's package, and talks to abacus over its REST API. One module on purpose,
though it passes 500 lines: a CI machine may copy this file alone and run ``python cli.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TextIO, TypeVar

EXIT_COMPLETED, EXIT_NOT_SHIPPED, EXIT_ERROR, EXIT_TIMEOUT = 0, 1, 2, 3
FINAL = {"completed": EXIT_COMPLETED, "rolled_back": EXIT_NOT_SHIPPED, "failed": EXIT_NOT_SHIPPED}
DEFAULT_PERCENTS = {"canary": "1,5,25,50,100", "blue_green": "100"}
HEARTBEAT_SECONDS = 60.0
HTTP_TIMEOUT_SECONDS = 30.0
# While waiting, a server that is briefly away (restarts, 502/503/504, 429) is retried this many
# times in a row before the gate gives up with exit 2; the first request is never retried.
MAX_TRANSIENT_ERRORS = 5
TRANSIENT_STATUSES = {429, 502, 503, 504}
USER_AGENT = "abacus-release/1"
Number = TypeVar("Number", int, float)


class GateError(Exception):
    """A usage or server error: printed, exit 2."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


# -- HTTP ---------------------------------------------------------------------------------------


def _explain(body: bytes) -> str:
    """The server's message: DRF's ``detail`` (and ``field``), or each field's errors."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        text = body.decode("utf-8", "replace").strip()
        return text[:500] or "(no message)"
    if isinstance(data, dict):
        if "detail" in data:
            field = data.get("field")
            return f"{field}: {data['detail']}" if field else str(data["detail"])
        parts = []
        for field, errors in data.items():
            if isinstance(errors, list):
                errors = " ".join(str(e) for e in errors)
            parts.append(f"{field}: {errors}")
        return "; ".join(parts) or "(no message)"
    return str(data)[:500]


class Client:
    """The abacus REST API with a person's token (``Token``) or a service key (``Bearer``)."""

    def __init__(self, url: str, token: str, project: str, timeout: float = HTTP_TIMEOUT_SECONDS):
        base = url.rstrip("/")
        base = base.removesuffix("/api/v1")
        self.site = base
        self.api = f"{base}/api/v1/projects/{urllib.parse.quote(project, safe='')}"
        self.project = project
        scheme = "Bearer" if token.startswith("abk_") else "Token"
        self.headers = {
            "Authorization": f"{scheme} {token}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        self.timeout = timeout

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            message = _explain(exc.read())
            raise GateError(
                f"HTTP {exc.code} from {method} {self.api + path}: {message}",
                transient=exc.code in TRANSIENT_STATUSES,
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GateError(f"cannot reach {self.site}: {reason}", transient=True) from None
        try:
            return json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError):
            raise GateError(f"{method} {self.api + path} answered something not JSON") from None

    def release(self, release_id: int) -> dict[str, Any]:
        return self.request("GET", f"/releases/{release_id}/")

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/releases/", body)

    def move(self, release_id: int, action: str, reason: str = "") -> dict[str, Any]:
        body = {"reason": reason} if reason else {}
        return self.request("POST", f"/releases/{release_id}/{action}", body)

    def page(self, release_id: int) -> str:
        return f"{self.site}/p/{urllib.parse.quote(self.project, safe='')}/releases/{release_id}/"


# -- words --------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%SZ")


def _pct(value: Any) -> str:
    return f"{value:g}%" if isinstance(value, int | float) else "?"


def summary(release: dict[str, Any]) -> str:
    """One line: which release, where it stands, and the latest decision."""
    steps = release.get("steps") or []
    head = (
        f"release {release.get('id')} of {release.get('flag')} in {release.get('environment')} "
        f"({release.get('baseline_variation')} -> {release.get('variation')}): "
        f"{release.get('status')}"
    )
    if release.get("status") in ("running", "paused", "scheduled") and steps:
        head += f", step {int(release.get('step', 0)) + 1}/{len(steps)} at "
        head += _pct(release.get("percent"))
    return head + _decision_words(release)


def _decision_words(release: dict[str, Any]) -> str:
    decision = release.get("decision") or {}
    if not decision.get("action"):
        return ""
    words = f"; decision {decision['action']}"
    reasons = decision.get("reasons") or []
    if reasons:
        words += f": {reasons[0]}"
    waits = decision.get("waits_for") or []
    if waits:
        words += f" (waits for: {'; '.join(str(w) for w in waits)})"
    return words


def _final_reason(release: dict[str, Any]) -> str:
    transitions = release.get("transitions") or []
    if transitions and transitions[-1].get("reason"):
        last = transitions[-1]
        return f"{last['reason']} (by {last.get('actor')})"
    reasons = (release.get("decision") or {}).get("reasons") or []
    return reasons[0] if reasons else ""


def _state(release: dict[str, Any]) -> tuple:
    decision = release.get("decision") or {}
    reasons = decision.get("reasons") or []
    return (
        release.get("status"),
        release.get("step"),
        release.get("percent"),
        decision.get("action"),
        reasons[0] if reasons else None,
        tuple(str(w) for w in decision.get("waits_for") or []),
    )


def describe_end(release: dict[str, Any]) -> str:
    status = release.get("status")
    why = _final_reason(release)
    if status == "completed":
        return (
            f"release {release.get('id')} completed: {release.get('flag')} serves "
            f"{release.get('variation')} to everyone in {release.get('environment')}."
        )
    if status == "rolled_back":
        return (
            f"release {release.get('id')} rolled back: {release.get('flag')} serves "
            f"{release.get('baseline_variation')} again in {release.get('environment')}. {why}"
        ).rstrip()
    return f"release {release.get('id')} failed: {why}".rstrip()


# -- waiting ------------------------------------------------------------------------------------


def wait_for(
    client: Client,
    release_id: int,
    *,
    timeout: float | None,
    poll: float,
    out: TextIO,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll the release until it is completed (0), rolled back or failed (1), or ``timeout``
    seconds pass (3). Prints a line whenever status, step, decision, first reason or what it
    waits for changes, and a heartbeat when nothing has for a minute."""
    started = clock()
    deadline = started + timeout if timeout else None
    last_state: tuple | None = None
    last_line = started
    errors = 0
    first = True
    while True:
        try:
            release = client.release(release_id)
            errors = 0
        except GateError as exc:
            errors += 1
            if first or not exc.transient or errors > MAX_TRANSIENT_ERRORS:
                raise
            _say(out, f"warning: {exc} (retrying, {errors}/{MAX_TRANSIENT_ERRORS})")
            release = None
        first = False
        now = clock()
        if release is not None:
            state = _state(release)
            if state != last_state:
                _say(out, summary(release))
                last_state, last_line = state, now
            elif now - last_line >= HEARTBEAT_SECONDS:
                minutes = (now - started) / 60.0
                _say(out, f"still {release.get('status')} at {_pct(release.get('percent'))} "
                          f"({minutes:.0f} min waited)")  # fmt: skip
                last_line = now
            if release.get("status") in FINAL:
                _say(out, describe_end(release))
                return FINAL[release["status"]]
        if deadline is not None and now >= deadline:
            _say(
                out,
                f"timed out after {timeout:g} s: release {release_id} goes on (roll it back "
                f"with: abacus-release rollback --id {release_id})",
            )
            return EXIT_TIMEOUT
        pause = poll if deadline is None else max(0.0, min(poll, deadline - now))
        sleep(pause)


def _say(out: TextIO, line: str) -> None:
    print(f"[{_now()}] {line}", file=out, flush=True)


# -- commands -----------------------------------------------------------------------------------


def parse_metric(text: str) -> dict[str, Any]:
    """``key[:role[:margin]]`` -> ``{"metric", "role"?, "non_inferiority_margin"?}``."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"{text!r}: use key[:role[:margin]]")
    metric: dict[str, Any] = {"metric": parts[0]}
    if len(parts) >= 2 and parts[1]:
        metric["role"] = parts[1]
    if len(parts) == 3 and parts[2]:
        try:
            metric["non_inferiority_margin"] = float(parts[2])
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: the margin is a number") from None
    return metric


def parse_percents(text: str) -> list[float]:
    try:
        percents = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: percents separated by commas") from None
    if not percents:
        raise argparse.ArgumentTypeError("give at least one percent")
    return percents


def _zero_or_more(text: str, parse: Callable[[str], Number], what: str) -> Number:
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def non_negative(text: str) -> float:
    return _zero_or_more(text, float, "a number")


def whole(text: str) -> int:
    return _zero_or_more(text, int, "a whole number")


def positive(text: str) -> float:
    value = non_negative(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def release_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {
        "flag": args.flag,
        "environment": args.environment,
        "variation": args.variation,
        "kind": args.kind,
    }
    if args.baseline:
        body["baseline_variation"] = args.baseline
    if args.steps is not None or args.step_minutes is not None or args.step_units is not None:
        percents = args.steps or parse_percents(DEFAULT_PERCENTS[args.kind])
        body["steps"] = [
            {
                "percent": p,
                "min_minutes": args.step_minutes if args.step_minutes is not None else 10,
                "min_units": args.step_units if args.step_units is not None else 200,
            }
            for p in percents
        ]
    if args.metric:
        body["metrics"] = args.metric
    if args.no_auto_rollback:
        body["auto_rollback"] = False
    if args.alpha is not None:
        body["alpha"] = args.alpha
    if args.description:
        body["description"] = args.description
    return body


def cmd_start(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    release = client.create(release_body(args))
    if not args.wait:
        print(release["id"], file=out, flush=True)
        return EXIT_COMPLETED
    steps = ", ".join(_pct(s.get("percent")) for s in release.get("steps") or [])
    _say(out, f"started release {release['id']} ({steps}): {client.page(release['id'])}")
    return wait_for(client, release["id"], timeout=args.timeout, poll=args.poll, out=out)


def cmd_wait(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    return wait_for(client, args.id, timeout=args.timeout, poll=args.poll, out=out)


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    release = client.release(args.id)
    if args.json:
        print(json.dumps(release, indent=2, sort_keys=True), file=out, flush=True)
    else:
        print(summary(release), file=out)
        if release.get("status") in FINAL:
            print(describe_end(release), file=out)
        print(client.page(args.id), file=out, flush=True)
    return EXIT_COMPLETED


def cmd_rollback(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    release = client.move(args.id, "rollback", args.reason or "")
    print(describe_end(release), file=out, flush=True)
    return EXIT_COMPLETED


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; this one also says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("ABACUS_URL"),
        help="abacus's address, e.g. https://abacus.example.com (ABACUS_URL)",
    )
    common.add_argument(
        "--token",
        default=os.environ.get("ABACUS_TOKEN"),
        help="an API key with the release scope (abk_...) or a person's token "
        "(ABACUS_TOKEN; prefer the variable: options show in process lists)",
    )
    common.add_argument("--project", default=os.environ.get("ABACUS_PROJECT"),
                        help="project slug (ABACUS_PROJECT)")  # fmt: skip
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--timeout",
        type=positive,
        default=None,
        help="give up after this many seconds (exit 3); default: no limit",
    )
    waiting.add_argument("--poll", type=positive, default=10.0,
                         help="seconds between polls (default 10)")  # fmt: skip

    parser = _Parser(
        prog="abacus-release",
        description="Start, watch and roll back guarded releases from a CI/CD pipeline.",
        epilog="Exit codes: 0 completed, 1 rolled back or failed, 2 usage or server error, "
        "3 timeout. docs/releases.md explains each command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=_Parser)  # fmt: skip
    start = commands.add_parser("start", parents=[common, waiting], help="start a release")
    start.add_argument("--flag", required=True, help="flag key")
    start.add_argument("--environment", required=True, help="environment key")
    start.add_argument("--variation", required=True, help="the new variation's key")
    start.add_argument("--baseline", help="baseline variation (default: what is served now)")
    start.add_argument("--kind", choices=("canary", "blue_green"), default="canary")
    start.add_argument(
        "--steps",
        type=parse_percents,
        default=None,
        help="percents, e.g. 1,5,25,50,100 (default: the server's)",
    )
    start.add_argument(
        "--step-minutes",
        type=non_negative,
        default=None,
        help="minimum minutes per step (default 10 when steps are given)",
    )
    start.add_argument(
        "--step-units",
        type=whole,
        default=None,
        help="minimum units per side per step (default 200 when steps are given)",
    )
    start.add_argument(
        "--metric",
        type=parse_metric,
        action="append",
        default=[],
        metavar="KEY[:ROLE[:MARGIN]]",
        help="a metric to watch (role guardrail or primary; margin e.g. 0.02); repeat for more",
    )
    start.add_argument(
        "--no-auto-rollback",
        action="store_true",
        help="on harm, hold for a person instead of rolling back",
    )
    start.add_argument("--alpha", type=positive, default=None, help="default 0.05")
    start.add_argument("--description", default="", help="why, e.g. the commit or the ticket")
    start.add_argument("--wait", action="store_true",
                       help="wait for the end and exit with it (0, 1 or 3)")  # fmt: skip
    for name, helptext in (
        ("status", "print a release (--json for all of it)"),
        ("wait", "wait for a release to end; exit 0 completed, 1 rolled back or failed, 3 timeout"),
        ("rollback", "roll a release back now"),
    ):
        sub = commands.add_parser(
            name, parents=[common, waiting] if name == "wait" else [common], help=helptext
        )
        sub.add_argument("--id", type=int, required=True, help="the release id")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="the release as JSON")
        if name == "rollback":
            sub.add_argument("--reason", default="", help="why, for the release's history")
    return parser


COMMANDS = {"start": cmd_start, "status": cmd_status, "wait": cmd_wait, "rollback": cmd_rollback}


def run(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, variable in (("url", "ABACUS_URL"), ("token", "ABACUS_TOKEN"),
                           ("project", "ABACUS_PROJECT")):  # fmt: skip
        if not getattr(args, name):
            parser.error(f"--{name} (or {variable}) is required")
    if not args.url.startswith(("http://", "https://")):
        parser.error(f"--url must start with http:// or https:// (got {args.url!r})")
    out = out or sys.stdout
    client = Client(args.url, args.token, args.project)
    try:
        return COMMANDS[args.command](client, args, out)
    except GateError as exc:
        print(f"abacus-release: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("abacus-release: interrupted (the release goes on)", file=sys.stderr, flush=True)
        return 130


def main() -> NoReturn:
    sys.exit(run())


if __name__ == "__main__":
    main()
