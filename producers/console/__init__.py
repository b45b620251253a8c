"""The operator's console at ``/ui``, served by ``igsend api``: overview, dead letters, accounts, scheduled
messages, status callbacks and one job, in plain HTML forms.

Every page reads and acts through the functions the CLI and the HTTP API use (:mod:`igsend.core.dlq`,
:mod:`igsend.core.account_state`, :mod:`igsend.core.records`, :class:`producers.jobs.Job`); nothing here decides a
rule of its own. With Redis groups (``IGSEND_GROUPS``) every page covers every group (:mod:`.across`), and what acts
on one job or account goes to the group holding it (:mod:`igsend.core.routing`).

Login with a key of ``IGSEND_API_KEYS`` that has the ``operate`` scope; the session then remembers which key (its
SHA-256 prefix, never the key). Every change is a POST with a CSRF token, answered by a redirect
(post/redirect/get). Message text is shown only on a detail page, on request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import redis
from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from werkzeug.datastructures import MultiDict

from igsend.core import account_state, activity, callbacks, dlq, presence, records, routing, series
from igsend.core.errors import CancelRefused, ReplayRefused, UnknownAccount
from igsend.core.store import DELAYED_KEY, get_redis, job_key, memory_share
from producers.api_keys import OPERATE, ApiKey, find_key
from producers.console import across, charts, security
from producers.jobs import Job, JobNotFound, get_job

console = Blueprint("console", __name__, url_prefix="/ui", template_folder="templates", static_folder="static")

PAGE_SIZE = 50
#: Seconds a bulk replay may run within one request (gunicorn's worker timeout is 30 s); what is left is counted
#: and offered again.
BULK_BUDGET = 20.0
#: Failed callback events listed per endpoint (newest first); `igsend callbacks replay` replays every one.
CALLBACK_FAILED_SHOWN = 50
_EXTENSION = "igsend_console"


def init_console(app: Flask, keys: list[ApiKey], *, throttle: Callable[[ApiKey], None],
                 login_throttle: Callable[[str], int], exempt: list[object],
                 links: dict[str, str] | None = None) -> None:
    """Serve the console on ``app``: ``keys`` log in, ``throttle`` applies a key's request rate,
    ``login_throttle`` says how long a client address must wait before another login, ``exempt`` are the
    blueprints CSRF does not cover (the JSON API), ``links`` the Flower and Grafana addresses to show."""
    security.protect(app, exempt)
    app.extensions[_EXTENSION] = {"keys": keys, "throttle": throttle, "login_throttle": login_throttle,
                                  "links": links or {}}
    app.register_blueprint(console)


def _config() -> dict[str, Any]:
    return dict(current_app.extensions[_EXTENSION])


def _session_key() -> ApiKey | None:
    ident = session.get("key")
    return next((key for key in _config()["keys"] if key.ident == ident and key.allows(OPERATE)), None)


@console.before_request
def _require_login() -> ResponseReturnValue | None:
    if request.endpoint in ("console.login", "console.static"):
        return None
    key = _session_key()  # a key taken out of IGSEND_API_KEYS (or its operate scope) ends its sessions
    if key is None:
        session.clear()
        return redirect(url_for("console.login", next=request.full_path if request.method == "GET" else None))
    _config()["throttle"](key)
    return None


console.after_request(security.headers)


@console.app_template_filter("when")
def _when(value: Any) -> str:
    """Unix seconds as UTC date and time; ages as well, for a person reading a list."""
    if value in (None, ""):
        return "-"
    seconds = float(value)
    ago = time.time() - seconds
    span = f"{abs(ago):.0f} s" if abs(ago) < 120 else f"{abs(ago) / 60:.0f} min" if abs(ago) < 7200 else \
        f"{abs(ago) / 3600:.0f} h" if abs(ago) < 172800 else f"{abs(ago) / 86400:.0f} d"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds)) + (f" ({span} ago)" if ago >= 0
                                                                           else f" (in {span})")


@console.app_template_filter("pretty")
def _pretty(value: Any) -> str:
    """A message document as indented JSON text (autoescaped by the template like any other text)."""
    return json.dumps(value, indent=2, ensure_ascii=False) if not isinstance(value, str) else value


@console.app_context_processor
def _globals() -> dict[str, Any]:
    return {"links": _config()["links"] if _EXTENSION in current_app.extensions else {},
            "logged_in": "key" in session}


# --- login -------------------------------------------------------------------------------------------------------

@console.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    error = None
    if request.method == "POST":
        wait = _config()["login_throttle"](request.remote_addr or "")
        if wait:
            error = f"Too many login attempts from this address: try again in {wait} s."
            return render_template("login.html", error=error), 429, {"Retry-After": str(wait)}
        supplied = request.form.get("api_key", "").strip().encode("utf-8", "replace")
        key = find_key(supplied, _config()["keys"])
        if key is None:
            error = "That is not a key of IGSEND_API_KEYS."
        elif not key.allows(OPERATE):
            error = "That key lacks the scope 'operate', which the console needs (KEY:operate in IGSEND_API_KEYS)."
        else:
            _config()["throttle"](key)
            session.clear()  # a new session for a new login
            session["key"] = key.ident
            session.permanent = True
            target = request.args.get("next") or ""
            # only a path of the console: never an address elsewhere (an open redirect)
            return redirect(target if target.startswith("/ui") and not target.startswith("//") else
                            url_for("console.overview"))
    return render_template("login.html", error=error), 401 if error else 200


@console.route("/logout", methods=["POST"])
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("console.login"))


# --- overview ----------------------------------------------------------------------------------------------------

@console.errorhandler(across.GroupDown)
def _group_down(exc: across.GroupDown) -> ResponseReturnValue:
    return render_template("down.html", why=str(exc)), 503


@console.route("")
@console.route("/")
def overview() -> ResponseReturnValue:
    parts = across.each_group(_overview_of)
    accounts = []
    for part in parts:
        if part.value is not None:
            accounts += [{**row, "group": part.group} for row in part.value["accounts"]]
        else:  # its accounts as the groups file names them: their state is unknown while their Redis is down
            accounts += [{"account": name, "group": part.group, "state": "down", "why": "its group's Redis is down",
                          "counts": {}, "held": "-", "workers": "-"}
                         for name in (routing.groups()[part.group].accounts if part.group else ())]
    span = request.args.get("range", "hour")
    span = span if span in charts.RANGES else "hour"
    chart_account = request.args.get("account", "").strip()
    if len(chart_account) > 100 or not chart_account.isprintable():
        chart_account = ""
    known = sorted({str(a["account"]) for a in accounts} | ({chart_account} if chart_account else set()))
    readings = [p.value for p in across.each_group(
        lambda client: series.read(client, chart_account or series.EVERY_ACCOUNT, minutes=charts.RANGES[span]))
        if p.value is not None]
    drawn = charts.charts(charts.combine(readings), label=chart_account or "every account") if readings else []
    return render_template("overview.html", accounts=accounts, parts=parts, grouped=across.grouped(),
                           exact=all(p.value["activity"].exact for p in parts if p.value is not None),
                           columns=activity.COLUMNS, charts=drawn, span=span, chart_account=chart_account,
                           chart_accounts=known, ranges=charts.RANGES)


def _overview_of(client: redis.Redis) -> dict[str, Any]:
    """One Redis's share of the overview: its accounts with their state and counts, workers, memory, dead."""
    rows = account_state.overview(client=client)
    now_doing = activity.read(client=client)
    names = sorted({row["account"] for row in rows} | set(now_doing.accounts))
    known = {row["account"]: row for row in rows}
    accounts = []
    for name in names:
        row = known.get(name) or {"account": name, "health": "healthy", "workers": 0, "held": 0}
        accounts.append({**row, "state": _state(row), "why": account_state.describe(row),
                         "counts": now_doing.accounts.get(name, dict.fromkeys(activity.COLUMNS, 0)),
                         "lanes": now_doing.lanes.get(name, {})})
    memory = client.info("memory")
    return {"accounts": accounts, "activity": now_doing, "workers": presence.read(client).alive,
            "dead": dlq.size(client=client), "memory": memory.get("used_memory_human"),
            "memory_share": memory_share(client)}


def _state(row: dict[str, Any]) -> str:
    """healthy, paused, broken or held: the word the overview colours."""
    if row.get("health") == "broken":
        return "broken"
    if row.get("paused_until"):
        return "paused"
    return "held" if row.get("held") else "healthy"


# --- dead letters ------------------------------------------------------------------------------------------------

AGES = {"": None, "5m": 300, "1h": 3600, "1d": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
#: Entries a content filter may read for one page, over every group it goes through (dlq.page's own limit).
SCAN_LIMIT = 5000


def _filter(values: MultiDict[str, str]) -> tuple[dlq.Filter, dict[str, str], list[str]]:
    """The filter of a request's fields (GET parameters, or a bulk form's hidden fields); bad fields are named and
    left out."""
    problems = []
    code_text = values.get("code", "").strip()
    code: int | None = None
    if code_text:
        try:
            code = int(code_text)
        except ValueError:
            problems.append(f"code: must be a Graph error code, a whole number (got {code_text!r})")
    age = values.get("age", "")
    if age not in AGES:
        problems.append(f"age: must be one of {', '.join(a for a in AGES if a)} (got {age!r})")
        age = ""
    group = values.get("group", "").strip()
    known = routing.groups()
    if group and group not in known:
        problems.append(f"group: no group {group!r} in IGSEND_GROUPS" +
                        (f" (groups: {', '.join(known)})" if known else " (it is not set: there is one Redis)"))
        group = ""
    fields = {"account": values.get("account", "").strip(), "reason": values.get("reason", "").strip(),
              "code": code_text if code is not None else "", "age": age, "group": group}
    flt = dlq.Filter(account=fields["account"] or None, reason=fields["reason"] or None, code=code,
                     older_than=AGES[age])
    return flt, fields, problems


def _start(values: MultiDict[str, str]) -> int:
    try:
        return max(0, int(values.get("start", "0")))
    except ValueError:
        return 0


@console.route("/dead-letters")
def dead_letters() -> ResponseReturnValue:
    flt, fields, problems = _filter(request.args)
    at = request.args.get("start", "")

    def read(client: redis.Redis, start: int, size: int, budget: int) -> tuple[list[dict[str, Any]], int | None, int]:
        found = dlq.page(flt, start=start, size=size, scan_limit=budget, client=client)
        return found.entries, found.next_start, found.scanned

    page = across.chain(read, at=at, size=PAGE_SIZE, budget=SCAN_LIMIT, only=fields["group"] or None)
    sizes = across.each_group(lambda client: dlq.size(client=client))
    for name, why in page.down.items():
        problems.append(f"group {name}: {why}")
    query: dict[str, Any] = {k: v for k, v in fields.items() if v}
    rows = [{**entry, "group": group, "reason_class": dlq.reason_class(entry)} for group, entry in page.items]
    covered = [part for part in sizes if not fields["group"] or part.group == fields["group"]]
    return render_template("dead_letters.html", rows=rows, fields=fields, problems=problems, at=at,
                           ages=[a for a in AGES if a], filtered=bool(query.keys() - {"group"}),
                           grouped=across.grouped(), sizes=sizes, scanned=page.scanned,
                           total=sum(part.value or 0 for part in covered),
                           next_url=None if page.next_cursor is None else
                           url_for("console.dead_letters", **query, start=page.next_cursor),
                           first_url=url_for("console.dead_letters", **query) if at else None)


@console.route("/dead-letters/<path:job_id>")
def dead_letter(job_id: str) -> ResponseReturnValue:
    with across.for_job(job_id) as group:
        entry = dlq.show(job_id)
        holds = entry is not None and dlq.holds_conversation(job_id)
        traceparent = get_redis().hget(job_key(job_id), "traceparent") if entry is not None else None
    if entry is None:
        return render_template("missing.html", what=f"dead letter {job_id}"), 404
    return render_template("dead_letter.html", entry=entry, reason_class=dlq.reason_class(entry),
                           group=group.name if group else None,
                           show_text=request.args.get("show") == "text", holds=holds,
                           trace_url=_trace_url(str(traceparent) if traceparent else None))


def _trace_url(traceparent: str | None) -> str | None:
    """The job's trace in the operator's tracing UI (IGSEND_UI_TRACE_URL, a template with ``{trace_id}``), when
    both are known."""
    template = os.environ.get("IGSEND_UI_TRACE_URL", "").strip()
    parts = (traceparent or "").split("-")
    if not template or "{trace_id}" not in template or len(parts) != 4 or len(parts[1]) != 32 \
            or not set(parts[1]) <= set("0123456789abcdef"):
        return None
    return template.replace("{trace_id}", parts[1])


@console.route("/dead-letters/<path:job_id>/replay", methods=["POST"])
def replay_one(job_id: str) -> ResponseReturnValue:
    try:
        with across.for_job(job_id):  # the group its id names: its DLQ, its queue, its workers
            found = dlq.replay(job_id)
    except ReplayRefused as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.dead_letter", job_id=job_id))
    if not found:
        flash(f"no dead-letter entry {job_id}", "error")
        return redirect(url_for("console.dead_letters"))
    flash(f"replayed 1 dead letter: job {job_id} is queued again", "ok")
    return redirect(url_for("console.job", job_id=job_id))


def _targets() -> tuple[dict[Any, list[str]], dict[str, str], str]:
    """The ids a bulk form names, by group: the ticked ``job_id`` boxes (each in the group its id names), or
    (``scope=all``) every entry its filter matches in each group it covers. Returns them, the filter's fields, and
    a description for the confirmation. A group whose Redis is down is left out, and said so."""
    flt, fields, _ = _filter(request.form)
    if request.form.get("scope") == "all":
        described = ", ".join(f"{k} {v}" for k, v in fields.items() if v) or "no filter: every entry"
        parts = across.each_group(lambda client: list(dlq.matching_ids(flt, client=client)),
                                  only=fields["group"] or None)
        for part in parts:
            if part.down:
                flash(f"group {part.group}: {part.down}", "error")
        groups = {group.name if group else None: group for group in routing.every_group()}
        return ({groups[part.group]: part.value for part in parts if part.value},
                fields, f"every dead letter that matches ({described})")
    ids = list(dict.fromkeys(i for i in request.form.getlist("job_id") if i))
    return across.job_groups(ids), fields, "the selected dead letters"


def _bulk(action: str) -> ResponseReturnValue:
    by_group, fields, described = _targets()
    count = sum(len(ids) for ids in by_group.values())
    query: dict[str, Any] = {k: v for k, v in fields.items() if v}
    back = url_for("console.dead_letters", **query)
    if not count:
        flash(f"nothing to {action}: select dead letters, or choose all that match", "error")
        return redirect(back)
    if request.form.get("confirm") != "yes":  # the confirmation step: nothing changes yet
        return render_template("confirm.html", action=action, count=count, described=described,
                               ids=[i for ids in by_group.values() for i in ids]
                               if request.form.get("scope") != "all" else [], fields=fields,
                               scope=request.form.get("scope", "selected"),
                               groups={g.name: len(ids) for g, ids in by_group.items() if g} if len(by_group) > 1
                               else {})
    done = 0
    left = 0
    refused: dict[str, str] = {}
    deadline = time.monotonic() + BULK_BUDGET
    for group, ids in by_group.items():  # each group's entries in its own Redis, as `igsend dlq` does
        try:
            with across.reachable(group):
                if action == "purge":
                    done += dlq.purge_ids(ids)
                    continue
                outcome = dlq.replay_many(ids, budget=max(0.0, deadline - time.monotonic()))
        except across.GroupDown as exc:
            flash(f"{exc}: nothing there was {action}d", "error")
            continue
        done += len(outcome.replayed)
        refused.update(outcome.refused)
        left += outcome.left
    flash(f"{'purged' if action == 'purge' else 'replayed'} {done} dead letters", "ok")
    for job_id, why in list(refused.items())[:10]:
        flash(f"{job_id}: {why}", "error")
    if left:
        flash(f"{left} not replayed yet (time budget of {BULK_BUDGET:g} s spent): replay again to go on", "error")
    return redirect(back)


@console.route("/dead-letters/replay", methods=["POST"])
def replay_many() -> ResponseReturnValue:
    return _bulk("replay")


@console.route("/dead-letters/purge", methods=["POST"])
def purge() -> ResponseReturnValue:
    return _bulk("purge")


# --- accounts ----------------------------------------------------------------------------------------------------

@console.route("/accounts")
def accounts() -> ResponseReturnValue:
    parts = across.each_group(lambda client: account_state.overview(client=client))
    return render_template("accounts.html", grouped=across.grouped(), parts=parts, accounts=[
        {**row, "group": part.group, "state": _state(row), "why": account_state.describe(row),
         "token_text": account_state.describe_token(row["token"])} for part in parts for row in part.value or []])


@console.route("/accounts/<name>/heal", methods=["POST"])
def heal(name: str) -> ResponseReturnValue:
    try:
        group = routing.group_of_account(name)  # with IGSEND_GROUPS: the account's group, as `igsend accounts heal`
    except UnknownAccount as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.accounts"))
    with across.reachable(group):
        released = account_state.mark_healthy(name)
    flash(f"account {name} marked healthy; {released} held message{'s' if released != 1 else ''} released", "ok")
    return redirect(url_for("console.accounts"))


@console.route("/accounts/release", methods=["POST"])
def release() -> ResponseReturnValue:
    """Let the ordered conversation a dead message holds go on without it (``igsend dlq release``)."""
    job_id = request.form.get("job_id", "").strip()
    try:
        with across.for_job(job_id):
            head = dlq.release(job_id)
    except LookupError as exc:
        flash(str(exc), "error")
    else:
        flash(f"released the conversation of job {job_id}: "
              + (f"job {head} goes next" if head else "no message waits in it"), "ok")
    return redirect(request.form.get("back", "") if request.form.get("back", "").startswith("/ui/")
                    else url_for("console.accounts"))


# --- status callbacks --------------------------------------------------------------------------------------------

@console.route("/callbacks")
def callbacks_page() -> ResponseReturnValue:
    """Each endpoint of IGSEND_CALLBACKS_FILE (as this API process reads it): state, counters, lag, last error,
    and the failed events kept for a replay (``igsend callbacks list``)."""
    try:
        endpoints = callbacks.load()
    except callbacks.CallbacksFileError as exc:
        return render_template("callbacks.html", problem=str(exc), rows=[], parts=[], grouped=False)
    if not endpoints:
        return render_template("callbacks.html", problem=callbacks.setting_hint(), rows=[], parts=[],
                               grouped=False)

    def read(client: redis.Redis) -> list[dict[str, Any]]:
        return [{**callbacks.state(client, name), "endpoint": endpoint,
                 "failed_events": callbacks.failed_events(client, name, limit=CALLBACK_FAILED_SHOWN)}
                for name, endpoint in endpoints.items()]

    parts = across.each_group(read)
    rows = [{**row, "group": part.group} for part in parts for row in part.value or []]
    return render_template("callbacks.html", problem=None, rows=rows, parts=parts, grouped=across.grouped(),
                           shown=CALLBACK_FAILED_SHOWN)


@console.route("/callbacks/<name>/replay", methods=["POST"])
def callbacks_replay(name: str) -> ResponseReturnValue:
    """The endpoint's failed events back to its queue, in every group (``igsend callbacks replay NAME``)."""
    try:
        known = callbacks.load()
    except callbacks.CallbacksFileError as exc:
        flash(str(exc), "error")
        return redirect(url_for("console.callbacks_page"))
    if name not in known:
        flash(f"no endpoint {name!r} in {callbacks.SETTING}", "error")
        return redirect(url_for("console.callbacks_page"))
    queued = 0
    for group in routing.every_group():
        with across.reachable(group):
            queued += callbacks.replay(get_redis(patient=False), name)
    flash(f"{name}: {queued} failed event{'s' if queued != 1 else ''} queued again; the endpoint is enabled", "ok")
    return redirect(url_for("console.callbacks_page"))


# --- scheduled and jobs ------------------------------------------------------------------------------------------

@console.route("/scheduled")
def scheduled() -> ResponseReturnValue:
    at = request.args.get("start", "")

    def read(client: redis.Redis, start: int, size: int, _budget: int) -> tuple[list[dict[str, Any]], int | None, int]:
        jobs, total = records.waiting(client, start=start, count=size)
        return jobs, start + len(jobs) if start + len(jobs) < total else None, len(jobs)

    page = across.chain(read, at=at, size=PAGE_SIZE, budget=PAGE_SIZE)
    totals = across.each_group(lambda client: int(client.zcard(DELAYED_KEY)))
    return render_template("scheduled.html", jobs=[{**job, "group": group} for group, job in page.items],
                           total=sum(part.value or 0 for part in totals), at=at, grouped=across.grouped(),
                           down={**page.down, **{part.group or "redis": part.down for part in totals if part.down}},
                           cancellable=records.CANCELLABLE,
                           next_url=url_for("console.scheduled", start=page.next_cursor)
                           if page.next_cursor is not None else None)


@console.route("/jobs/<path:job_id>/cancel", methods=["POST"])
def cancel(job_id: str) -> ResponseReturnValue:
    try:
        with across.for_job(job_id):  # the group holding it (Job.cancel routes too; this fails fast when it is down)
            Job(job_id).cancel(reason="cancelled in the console")
    except JobNotFound as exc:
        flash(str(exc), "error")
    except CancelRefused as exc:
        flash(str(exc), "error")
    else:
        flash(f"cancelled job {job_id}: it will never be sent", "ok")
    back = request.form.get("back", "")
    return redirect(back if back.startswith("/ui/") else url_for("console.job", job_id=job_id))


@console.route("/jobs")
def find_job() -> ResponseReturnValue:
    """The search box of every page: open a job by its id."""
    job_id = request.args.get("id", "").strip()
    if not job_id:
        return redirect(url_for("console.overview"))
    return redirect(url_for("console.job", job_id=job_id))


@console.route("/jobs/<path:job_id>")
def job(job_id: str) -> ResponseReturnValue:
    with across.for_job(job_id) as group:  # the group its id names (routing.for_job), checked to answer first
        try:
            info = get_job(job_id).info()
        except JobNotFound:
            return render_template("missing.html", what=f"job {job_id}"), 404
        dead = dlq.show(job_id) is not None
    return render_template("job.html", job=info, show_text=request.args.get("show") == "text",
                           group=group.name if group else None,
                           dead=dead, cancellable=info.get("status") in records.CANCELLABLE,
                           show_url=url_for("console.job", job_id=job_id) + "?" + urlencode({"show": "text"}))
