"""The admin's Klein application: server-rendered pages, C{/RPC2} and C{/metrics}.

Pages work without JavaScript: every action is a small POST form carrying a CSRF token, answered
with a 303 redirect back to the page (with a one-line message).  Basic-auth credentials are sent
by browsers on cross-site requests too, so every POST checks the token (in the body, an HMAC of
the user's name and password hash under a per-process secret) and that the Origin, else the
Referer, when sent, is this site: scheme, host and port (C{Origin: null} is refused).
"""

from __future__ import annotations

import hmac
import re
import secrets
import time as _time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.xmlrpc import Fault

import salvusctl
from salvusctl.admin import shapes
from salvusctl.admin.auth import currentUser
from salvusctl.admin.charts import lineChart
from salvusctl.admin.extensions import IAlertSource
from salvusctl.admin.faults import Faults, rpcFault
from salvusctl.admin.html import button, esc, layout, table, url
from salvusctl.admin.logstream import LogStream, RawLogStream
from salvusctl.admin.metrics import CONTENT_TYPE, renderMetrics
from salvusctl.admin.rpc import RPCRoot
from salvusctl.admin.salvusrpc import HOST_STATES
from salvusctl.admin.state import AdminState

__all__ = ["AdminPages"]

log = Logger()

_LOCAL_PATH = re.compile(r"^/[A-Za-z0-9%:_.~-][A-Za-z0-9/%:_.~-]*$")


def _uptime(seconds: float) -> str:
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    text = "%d:%02d:%02d" % (rest // 3600, rest // 60 % 60, rest % 60)
    return f"{days}d {text}" if days else text


def _bytes(n: Any) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _utc(t: Any) -> str:
    if not t:
        return "-"
    return _time.strftime("%Y-%m-%d %H:%M:%S", _time.gmtime(float(t)))


def _domId(*parts: Any) -> str:
    """An element id from names (C{host-www-web-127-0-0-1-8000}): unique per service and group."""
    return "-".join(re.sub(r"[^A-Za-z0-9_]+", "-", str(p)) for p in parts)


def _backupSummary(statuses: list[dict[str, Any]]) -> str:
    """One card line: the running set's progress, else the newest last run's outcome."""
    for status in statuses:
        if status.get("state") == "running":
            return f"{status.get('backup')} {status.get('phase', '')} {status.get('percent', 0)}%"
    lasts = [s["last"] for s in statuses if s.get("last")]
    if not lasts:
        return "no run yet"
    last = max(lasts, key=lambda r: float(r.get("ended") or 0))
    return f"last {last.get('outcome')} {_utc(last.get('ended'))}"


def _arg(request: Any, name: str) -> str:
    values = request.args.get(name.encode(), [])
    try:
        return values[0].decode("utf-8") if values else ""
    except UnicodeDecodeError:
        return ""


def _bodyToken(request: Any) -> str:
    """The CSRF token from the form body or the C{X-CSRF-Token} header, never the query string
    (a URL ends up in logs, histories and Referer headers)."""
    header = request.getHeader(b"x-csrf-token")
    if header:
        return header.decode("latin-1")
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"application/x-www-form-urlencoded" or request.content is None:
        return ""
    request.content.seek(0)
    fields = parse_qs(request.content.read(64 * 1024).decode("latin-1"))
    request.content.seek(0)
    values = fields.get("csrf", [])
    return values[0] if values else ""


class _Refused(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


class AdminPages:
    """Routes over one host's services (the state is injected; Klein is a class attribute)."""

    app = Klein()

    def __init__(self, state: AdminState):
        self.state = state
        self.rpc = RPCRoot(state)
        self.supervisorRPC = self.rpc.namespaces["supervisor"]
        self.salvusRPC = self.rpc.namespaces["salvus"]
        self._secret = secrets.token_bytes(32)

    def resource(self):
        return self.app.resource()

    # -- helpers ---------------------------------------------------------------------------------

    def csrfToken(self, user: Any) -> str:
        """The token a user's forms carry: an HMAC of the user's name and password hash under a
        per-process secret, so it is useless to another user or site and changes with the
        password (and with every restart of the host)."""
        return hmac.new(self._secret, f"csrf:{user.name}:{user.hash}".encode(), "sha256").hexdigest()

    def _page(self, request, title: str, body: str, here: str) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        options = self.state.options
        message = _arg(request, "msg")
        return layout(
            title,
            body,
            host=self.state.host_name,
            user=currentUser(request),
            refresh=options.refresh,
            project_url=options.project_url,
            here=here,
            site_title=options.title,
            flash=message or None,
            error=_arg(request, "err") == "1",
        )

    def _checkPost(self, request) -> Any:
        """The acting user, after the role, CSRF token and Origin checks; raises L{_Refused}."""
        user = currentUser(request)
        if user is None or not user.canOperate:
            raise _Refused(403, "this needs the operator role")
        token = _bodyToken(request)
        if not token or not hmac.compare_digest(token, self.csrfToken(user)):
            raise _Refused(403, "missing or stale form token: reload the page and try again")
        scheme = "https" if request.isSecure() else "http"
        own = f"{scheme}://{(request.getHeader(b'host') or b'').decode('latin-1').lower()}"
        origin = request.getHeader(b"origin")
        if origin is not None:
            if origin.decode("latin-1").lower().rstrip("/") != own:
                raise _Refused(403, "cross-site form refused (Origin is not this site)")
        else:
            referer = request.getHeader(b"referer")
            if referer is not None:
                parts = urlsplit(referer.decode("latin-1"))
                if f"{parts.scheme}://{parts.netloc}".lower() != own:
                    raise _Refused(403, "cross-site form refused (Referer is not this site)")
        return user

    def _refused(self, request, refused: _Refused) -> bytes:
        request.setResponseCode(refused.code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (str(refused) + "\n").encode()

    def _redirect(self, request, to: str, message: str, error: bool = False) -> bytes:
        query = {"msg": message}
        if error:
            query["err"] = "1"
        request.setResponseCode(303)
        request.setHeader(b"location", f"{to}?{urlencode(query)}".encode())
        return b""

    def _canAct(self, request) -> bool:
        user = currentUser(request)
        return bool(user and user.canOperate)

    def _missing(self, component: str) -> str:
        return f"<p class=flash>This host runs no {esc(component)}.</p>"

    # -- RPC and metrics -------------------------------------------------------------------------

    @app.route("/RPC2", branch=False)
    def rpc2(self, request):
        return self.rpc

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE)
        return renderMetrics(self.state)

    # -- supervisorctl's `tail -f` ----------------------------------------------------------------

    @app.route("/logtail/<name>", methods=["GET"])
    def logtailStdout(self, request, name):
        return self.logtail(request, name, "stdout")

    @app.route("/logtail/<name>/<stream>", methods=["GET"])
    def logtail(self, request, name, stream):
        """Stream an instance's output as it grows (what C{supervisorctl tail -f} reads).

        Starts with the last 1600 bytes of the log (one seek), then the supervisor pushes each new
        line until the client goes away: nothing is polled or read again.
        """
        if stream not in ("stdout", "stderr"):
            request.setResponseCode(404)
            return b"no such stream\n"
        try:
            instance = self.supervisorRPC.instanceFor(name)
        except Fault as f:
            request.setResponseCode(404)
            return (f.faultString + "\n").encode()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        sup = self.supervisorRPC._sup()

        def start(first: bytes):
            # Klein finishes the response when this Deferred fires: only once the client has gone.
            # Raw: the first bytes come from the log file, and so must the rest (as supervisord).
            return RawLogStream(request, first, lambda cb: sup.followLog(instance, cb, stream),
                                self.state.clock).done

        def failed(failure):
            return f"(log unavailable: {failure.getErrorMessage()})\n".encode()

        return self.supervisorRPC.logTail(instance, stream, 1600).addCallbacks(start, failed)

    @app.route("/mainlogtail", methods=["GET"])
    def mainlogtail(self, request):
        """Stream the supervisor's main log as it grows (what C{supervisorctl maintail -f} reads):
        its last 1600 bytes, then each new event, pushed."""
        try:
            sup = self.supervisorRPC.mainLog()
            first = self.supervisorRPC.mainLogTail(1600)
        except Fault as f:
            request.setResponseCode(404)
            return (f.faultString + "\n").encode()
        except OSError as e:
            request.setResponseCode(500)
            return f"(main log unavailable: {e.strerror})\n".encode()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return LogStream(request, first, sup.followMainLog, self.state.clock).done

    # -- overview --------------------------------------------------------------------------------

    @app.route("/", methods=["GET"])
    def overview(self, request):
        cards = []
        sup = self.state.optional("supervisor")
        if sup is not None:
            infos = sup.instanceInfos()
            running = sum(1 for i in infos if i.get("state") == "RUNNING")
            cards.append(("Instances running", f"{running} / {len(infos)}", "/deploys"))
        balancer = self.state.optional("balancer")
        if balancer is not None:
            hosts = [h for _, _, h in shapes.balancerHosts(balancer.snapshot())]
            up = sum(1 for h in hosts if shapes.hostTakesTraffic(h))
            conns = sum(shapes.hostOpen(h) for h in hosts)
            cards.append(("Backends up", f"{up} / {len(hosts)}", "/balancer"))
            cards.append(("Open connections", str(conns), "/balancer"))
        alerts_source = self.state.optional("alerts")
        alerts = alerts_source.alerts() if IAlertSource.providedBy(alerts_source) else []
        if alerts_source is not None:
            cards.append(("Active alerts", str(len(alerts)), "/alerts"))
        backup = self.state.optional("backup")
        if backup is not None:
            cards.append(("Backups", _backupSummary(backup.status()), "/backups"))
        cluster = self.state.optional("cluster")
        if cluster is not None:
            peers = cluster.lastView()
            up = sum(1 for h in peers if h.get("state") == "up")
            cards.append(("Cluster hosts up", f"{up} / {len(peers)}", "/cluster"))
        services = ", ".join(
            sorted(k for k, v in self.state.services.items() if v is not None and k != "store")
        )
        body = (
            f"<p>Host <b>{esc(self.state.host_name)}</b> · Salvus {esc(salvusctl.__version__)}"
            f" · services: {esc(services or 'none')}</p>"
            '<div class="cards">'
            + "".join(
                f'<a class="card" href="{esc(link)}"><b>{esc(value)}</b>{esc(name)}</a>'
                for name, value, link in cards
            )
            + "</div>"
        )
        if sup is not None:
            body += "<h2>Deploys</h2>" + self._deployTable(request, compact=True)
        if alerts:
            body += "<h2>Alerts</h2>" + self._alertTable(alerts[:5])
        if not cards:
            body += "<p>This host declares no services yet.</p>"
        return self._page(request, "Overview", body, "/")

    # -- deploys ---------------------------------------------------------------------------------

    def _deployTable(self, request, compact: bool = False, last_lines: dict[str, str] | None = None) -> str:
        sup = self.state.optional("supervisor")
        if sup is None:
            return self._missing("supervisor")
        monitor = self.state.optional("monitor")
        latest = monitor.latest() if monitor is not None else {}
        can_act = self._canAct(request) and not compact
        csrf = self.csrfToken(currentUser(request)) if can_act else ""
        rows = []
        for info in sup.instanceInfos():
            name = str(info["name"])
            state = str(info.get("state", "UNKNOWN"))
            running = state == "RUNNING"
            sample = latest.get(name, {})
            cpu = shapes.sampleCpu(sample)
            rss = shapes.sampleRss(sample)
            uptime = _uptime(float(info.get("now") or 0) - float(info.get("start") or 0)) if running else "-"
            row = [
                "#id:inst-" + name.replace(":", "-"),
                f'<a href="{esc(url("instance", name))}">{esc(name)}</a>',
                f'<span class="state {esc(state)}">{esc(state)}</span>',
                esc(info.get("pid") or "-"),
                esc(uptime),
                esc(f"{float(cpu):.1f}%" if cpu is not None and running else "-"),
                esc(_bytes(rss) if rss is not None and running else "-"),
            ]
            if not compact:
                row.append(esc(info.get("description") or ""))
            if last_lines is not None:
                line = last_lines.get(name, "")
                shown = line if len(line) <= 80 else line[:79] + "…"
                row.append(
                    f'<a class="tail" href="{esc(url("instance", name))}#output" title="{esc(line)}">'
                    f"<code>{esc(shown) or '(no output)'}</code></a>"
                )
            if can_act:
                action = url("deploys", name)
                buttons = []
                if state in ("STOPPED", "EXITED", "FATAL", "BACKOFF", "UNKNOWN"):
                    buttons.append(button(action + "/start", "start", csrf))
                if state in ("RUNNING", "STARTING", "BACKOFF"):
                    buttons.append(button(action + "/stop", "stop", csrf))
                    buttons.append(button(action + "/restart", "restart", csrf))
                row.append(" ".join(buttons))
            rows.append(row)
        headers = ["Instance", "State", "PID", "Uptime", "CPU", "RSS"]
        if not compact:
            headers.append("Description")
        if last_lines is not None:
            headers.append("Last output")
        if can_act:
            headers.append("Actions")
        return table(headers, rows, class_="deploys")

    @app.route("/deploys", methods=["GET"])
    @defer.inlineCallbacks
    def deploys(self, request):
        sup = self.state.optional("supervisor")
        last_lines: dict[str, str] = {}
        if sup is not None:
            names = [str(i["name"]) for i in sup.instanceInfos()]
            tails = yield defer.DeferredList(
                [defer.maybeDeferred(sup.tailLog, n, 1, "stdout") for n in names], consumeErrors=True
            )
            for n, (ok, lines) in zip(names, tails, strict=True):
                last_lines[n] = str(lines[-1]) if ok and lines else ""
        body = self._rollingTable(request) + self._deployTable(request, last_lines=last_lines)
        return self._page(request, "Deploys", body, "/deploys")

    def _rollingTable(self, request) -> str:
        """One row per deploy with its rolling-restart button (operators only): the deploy's
        instances are drained and restarted one at a time, so a balanced deploy keeps serving."""
        sup = self.state.optional("supervisor")
        if sup is None or not self._canAct(request):
            return ""
        csrf = self.csrfToken(currentUser(request))
        counts: dict[str, list[int]] = {}
        for info in sup.instanceInfos():
            deploy = str(info.get("deploy") or str(info["name"]).partition(":")[0])
            running = counts.setdefault(deploy, [0, 0])
            running[0] += 1
            running[1] += info.get("state") == "RUNNING"
        rows = [
            [
                "#id:deploy-" + deploy,
                esc(deploy),
                esc(f"{running} of {total} running"),
                button(url("deploys", deploy + ":*") + "/restart", "rolling restart", csrf),
            ]
            for deploy, (total, running) in counts.items()
        ]
        return table(["Deploy", "Instances", "Actions"], rows, class_="rolling")

    @app.route("/deploys/<name>/<action>", methods=["POST"])
    @defer.inlineCallbacks
    def deployAction(self, request, name, action):
        try:
            user = self._checkPost(request)
        except _Refused as e:
            return self._refused(request, e)
        back = _arg(request, "back")
        if not _LOCAL_PATH.match(back):
            back = "/deploys"  # only our own pages: never an open redirect
        calls = {
            "start": [("start", self.supervisorRPC.xmlrpc_startProcess)],
            "stop": [("stop", self.supervisorRPC.xmlrpc_stopProcess)],
            "restart": [
                ("stop", self.supervisorRPC.xmlrpc_stopProcess),
                ("start", self.supervisorRPC.xmlrpc_startProcess),
            ],
        }.get(action)
        if calls is None:
            return self._refused(request, _Refused(404, f"no action {action!r}"))
        log.info("{user} asked to {action} {name} from the pages", user=user.name, action=action, name=name)
        if action == "restart" and name.endswith(":*"):
            return self._rollingRestart(request, name, back)
        try:
            for verb, call in calls:
                try:
                    # wait=False: the page answers at once and shows STOPPING / STARTING until done
                    yield defer.maybeDeferred(call, name, False)
                except Fault as f:
                    if not (action == "restart" and verb == "stop" and f.faultCode == Faults.NOT_RUNNING):
                        raise
                    continue
                if action == "restart" and verb == "stop":
                    yield self._waitStopped(name)
        except Fault as f:
            return self._redirect(request, back, f"{action} {name}: {f.faultString}", error=True)
        return self._redirect(request, back, f"{action} {name}: requested")

    def _rollingRestart(self, request, name: str, back: str) -> bytes:
        """C{DEPLOY:*}: the salvus.restartDeploy verb (one instance at a time, drained first),
        C{GROUP:*} when no deploy has that name.  The page answers at once; the instances show
        STOPPING / STARTING in turn."""
        target = name[:-2]
        try:
            try:
                d = self.salvusRPC.xmlrpc_restartDeploy(target, 1)
            except Fault as f:
                if f.faultCode != Faults.BAD_NAME:
                    raise
                d = self.salvusRPC.xmlrpc_restartGroup(target, 1)
        except Fault as f:
            return self._redirect(request, back, f"restart {name}: {f.faultString}", error=True)
        d.addErrback(lambda f: log.warn("rolling restart of {name} failed: {why}", name=name,
                                        why=f.getErrorMessage()))
        return self._redirect(request, back, f"restart {name}: rolling restart requested")

    def _waitStopped(self, name: str, limit: float = 30.0) -> defer.Deferred:
        """Fires once the instance left RUNNING/STOPPING (restart needs it down before starting)."""
        clock = self.state.clock
        deadline = clock.seconds() + limit
        d: defer.Deferred = defer.Deferred()

        def check():
            try:
                state = self.state.service("supervisor").instanceInfo(name).get("state")
            except KeyError:
                state = None
            if state not in ("RUNNING", "STOPPING", "STARTING") or clock.seconds() >= deadline:
                d.callback(None)
            else:
                clock.callLater(0.05, check)

        check()
        return d

    @app.route("/instance/<name>", methods=["GET"])
    @defer.inlineCallbacks
    def instance(self, request, name):
        sup = self.state.optional("supervisor")
        if sup is None:
            return self._page(request, name, self._missing("supervisor"), "/deploys")
        try:
            info = sup.instanceInfo(name)
        except KeyError:
            request.setResponseCode(404)
            return self._page(request, name, f"<p>No instance called {esc(name)}.</p>", "/deploys")
        state = str(info.get("state"))
        facts = [
            ["State", f'<span class="state {esc(state)}">{esc(state)}</span>'],
            ["PID", esc(info.get("pid") or "-")],
            ["Started", esc(_utc(info.get("start")))],
            ["Stopped", esc(_utc(info.get("stop")))],
            ["Exit status", esc(info.get("exitstatus"))],
            ["Description", esc(info.get("description") or "")],
            ["Port", esc(info.get("port") or "-")],
        ]
        # Why an instance is not running is often nowhere in its output: a spawn that failed
        # (no such file, bad cwd) or the reason it went FATAL.  Show both when there is one.
        for label, key in (("Spawn error", "spawnerr"), ("Reason", "reason")):
            if info.get(key):
                facts.append([label, f'<span class="{esc(key)}">{esc(info.get(key))}</span>'])
        body = table(["Field", "Value"], facts, class_="facts")
        if self._canAct(request):
            csrf = self.csrfToken(currentUser(request))
            back = {"back": url("instance", name)}
            body += (
                "<p>"
                + " ".join(
                    button(url("deploys", name, verb), verb, csrf, back)
                    for verb in ("start", "stop", "restart")
                )
                + "</p>"
            )
        monitor = self.state.optional("monitor")
        window = self.state.options.history_window
        minutes = _arg(request, "minutes")
        if minutes.isdigit():
            window = float(min(max(int(minutes), 5), 7 * 24 * 60) * 60)
        if monitor is not None:
            now = self.state.clock.seconds()
            samples = yield defer.maybeDeferred(monitor.history, name, now - window, None)
            cpu = [(shapes.sampleTime(s), shapes.sampleCpu(s)) for s in samples]
            rss = [(shapes.sampleTime(s), shapes.sampleRss(s)) for s in samples]
            links = " · ".join(
                f'<a href="{esc(url("instance", name))}?minutes={m}">{label}</a>'
                for m, label in ((60, "1 h"), (360, "6 h"), (1440, "1 day"), (10080, "7 days"))
            )
            body += (
                f"<h2>History (last {int(window // 60)} minutes, {len(samples)} samples)</h2><p>{links}</p>"
            )
            body += lineChart(cpu, "CPU %", lambda v: f"{v:.0f}%", css_class="chart cpu")
            body += lineChart(rss, "Resident memory", _bytes, css_class="chart rss")
        else:
            body += self._missing("monitor")
        # Both streams: a program that fails writes its reason to stderr, and stdout alone
        # would show a FATAL instance with nothing to say.
        body += '<h2 id="output">Output</h2>'
        for stream, title in (("stdout", "Standard output"), ("stderr", "Standard error")):
            try:
                lines = yield defer.maybeDeferred(sup.tailLog, name, 100, stream)
            except Exception as e:
                lines = [f"(log unavailable: {e})"]
            text = esc("\n".join(lines)) if lines else "(nothing yet)"
            body += (
                f'<h3 id="{stream}">{title} (last 100 lines) '
                f'<small><a href="{esc(url("logtail", name, stream))}">follow</a></small></h3>'
                f'<pre class="log {stream}">{text}</pre>'
            )
        return self._page(request, f"Instance {name}", body, "/deploys")

    # -- balancer --------------------------------------------------------------------------------

    @app.route("/balancer", methods=["GET"])
    def balancer(self, request):
        balancer = self.state.optional("balancer")
        if balancer is None:
            return self._page(request, "Balancer", self._missing("balancer"), "/balancer")
        can_act = self._canAct(request)
        csrf = self.csrfToken(currentUser(request)) if can_act else ""
        body = ""
        for service in shapes.balancerServices(balancer.snapshot()):
            listen = ", ".join(str(x) for x in service.get("listen", []))
            bound = ", ".join(str(x) for x in service.get("addresses") or [])
            if bound:
                listen += f" → {bound}"
            body += f"<h2>{esc(service.get('name'))} <small>{esc(listen)}</small></h2>"
            for group in shapes.balancerGroups(service):
                body += (
                    f"<h3>group {esc(group.get('name'))} · scheduler {esc(group.get('scheduler', '?'))}</h3>"
                )
                rows = []
                for host in group.get("hosts", []):
                    state = str(host.get("state", "?"))
                    health = "ok" if host.get("healthy", True) else "failing"
                    fields = {
                        "service": str(service.get("name")),
                        "group": str(group.get("name")),
                        "host": str(host.get("name")),
                    }
                    row = [
                        "#id:" + _domId("host", service.get("name"), group.get("name"), host.get("name")),
                        esc(host.get("name")),
                        esc(f"{host.get('address')}:{host.get('port')}"),
                        f'<span class="{esc(state)}">{esc(state)}</span>',
                        f'<span class="{esc(health)}">{esc(health)}</span>',
                        esc(host.get("weight")),
                        esc(shapes.hostOpen(host)),
                        esc(shapes.hostTotal(host)),
                        esc(_bytes(host.get("bytes_in"))),
                        esc(_bytes(host.get("bytes_out"))),
                        esc(host.get("faults", 0)),
                    ]
                    if can_act:
                        controls = [
                            button("/balancer/state", word, csrf, {**fields, "state": word})
                            for word in ("up", "drain", "down")
                            if HOST_STATES[word] != state
                        ]
                        controls.append(
                            '<form method="post" action="/balancer/weight">'
                            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
                            + "".join(
                                f'<input type="hidden" name="{k}" value="{esc(v)}">'
                                for k, v in fields.items()
                            )
                            + '<input type="number" name="weight" min="0" max="256" '
                            f'value="{esc(host.get("weight"))}" aria-label="weight">'
                            '<button type="submit">weight</button></form>'
                        )
                        row.append(" ".join(controls))
                    rows.append(row)
                headers = [
                    "Host",
                    "Address",
                    "State",
                    "Health",
                    "Weight",
                    "Conns",
                    "Total",
                    "In",
                    "Out",
                    "Faults",
                ]
                if can_act:
                    headers.append("Controls")
                body += table(headers, rows, class_="hosts")
        return self._page(request, "Balancer", body or "<p>No balanced services.</p>", "/balancer")

    @app.route("/balancer/<what>", methods=["POST"])
    @defer.inlineCallbacks
    def balancerAction(self, request, what):
        try:
            user = self._checkPost(request)
        except _Refused as e:
            return self._refused(request, e)
        service, group, host = _arg(request, "service"), _arg(request, "group"), _arg(request, "host")
        target = f"{service}/{group}/{host}"
        try:
            if what == "state":
                word = _arg(request, "state")
                yield self.salvusRPC.xmlrpc_balancerSetState(service, group, host, word)
                message = f"{target}: {word}"
            elif what == "weight":
                raw = _arg(request, "weight")
                if not raw.isdigit():
                    raise rpcFault(Faults.BAD_ARGUMENTS, f"weight must be a whole number, not {raw!r}")
                yield self.salvusRPC.xmlrpc_balancerSetWeight(service, group, host, int(raw))
                message = f"{target}: weight {raw}"
            else:
                return self._refused(request, _Refused(404, f"no balancer action {what!r}"))
        except Fault as f:
            return self._redirect(request, "/balancer", f"{target}: {f.faultString}", error=True)
        log.info("{user}: {message}", user=user.name, message=message)
        return self._redirect(request, "/balancer", message)

    # -- cluster ---------------------------------------------------------------------------------

    @app.route("/cluster", methods=["GET"])
    @defer.inlineCallbacks
    def cluster(self, request):
        cluster = self.state.optional("cluster")
        if cluster is None:
            return self._page(request, "Cluster", self._missing("cluster (declare Cluster(...))"), "/cluster")
        info = cluster.info()
        hosts = yield cluster.hosts()
        try:
            messages = yield cluster.messages(None, None, 30)
            unread = ""
        except Exception as e:
            messages, unread = [], f"<p class=\"flash error\">Messages not read: {esc(e)}</p>"
        can_act = self._canAct(request)
        csrf = self.csrfToken(currentUser(request)) if can_act else ""
        where = "a cluster sharing " + str(info.get("store")) if info.get("shared") else (
            "a cluster of one: the store is SQLite (point every host at one PostgreSQL store to see peers)"
        )
        up = sum(1 for h in hosts if h.get("state") == "up")
        body = (
            f"<p>This host is <b>{esc(info.get('name'))}</b> at {esc(info.get('address'))}, in {esc(where)}"
            f" · {up} / {len(hosts)} hosts up · heartbeat {esc(info.get('heartbeat'))}s,"
            f" down after {esc(info.get('missed'))} missed</p>"
        )
        stale = next((h for h in hosts if h.get("stale")), None)
        if stale is not None:
            body = (f'<p class="flash error">Stale view: {esc(stale.get("stale_reason"))}; the states below'
                    f' are {float(stale.get("view_age") or 0):.1f}s old.</p>') + body
        rows = []
        for h in hosts:
            state = str(h.get("state"))
            admin = str(h.get("admin_url") or "")
            row = [
                "#id:" + _domId("cluster", h.get("name")),
                esc(h.get("name")) + (" (this host)" if h.get("name") == info.get("name") else ""),
                esc(h.get("address")),
                f'<a href="{esc(admin)}">{esc(admin)}</a>' if admin.startswith("http") else esc(admin or "-"),
                f'<span class="{esc(state)}">{esc(state)}</span>',
                esc(f"{float(h.get('age') or 0):.1f}s ago"),
                esc(_utc(h.get("started"))),
                esc(h.get("version")),
            ]
            if can_act:
                row.append(button("/cluster/ping", "ping", csrf, {"host": str(h.get("name"))})
                           if state == "up" else "")
            rows.append(row)
        headers = ["Host", "Address", "Admin", "State", "Last heartbeat", "Started (UTC)", "Version"]
        if can_act:
            headers.append("Controls")
        body += table(headers, rows, class_="cluster-hosts")
        body += "<h2>Messages</h2>" + unread
        from salvusctl.cluster.domain import deliveriesText

        mrows = []
        for m in messages:
            deliveries = deliveriesText(m)
            text = str(m.get("body", ""))
            mrows.append([
                esc(m.get("id")), esc(_utc(m.get("created"))), esc(m.get("sender")), esc(m.get("recipient")),
                esc(m.get("kind")), esc(text if len(text) <= 80 else text[:77] + "..."), esc(deliveries),
            ])
        body += (table(["Id", "Sent (UTC)", "From", "To", "Kind", "Body", "Deliveries"], mrows,
                       class_="cluster-messages") if mrows else "<p>No messages.</p>")
        body += ("<p>Send with <code>salvusctl cluster send HOST KIND [JSON]</code>, e.g."
                 " <code>salvusctl cluster send worker1 deploy.restart '{\"deploy\": \"web\"}'</code>.</p>")
        return self._page(request, "Cluster", body, "/cluster")

    @app.route("/cluster/ping", methods=["POST"])
    @defer.inlineCallbacks
    def clusterPing(self, request):
        try:
            user = self._checkPost(request)
        except _Refused as e:
            return self._refused(request, e)
        host = _arg(request, "host")
        namespace = self.rpc.namespaces.get("salvus.cluster")
        if namespace is None:
            return self._redirect(request, "/cluster", "this host runs no cluster", error=True)
        try:
            rtt = yield namespace.xmlrpc_ping(host, 10)
        except Fault as f:
            return self._redirect(request, "/cluster", f"ping {host}: {f.faultString}", error=True)
        log.info("{user}: pinged {host}", user=user.name, host=host)
        return self._redirect(request, "/cluster", f"pong from {host} in {rtt * 1000:.1f} ms")

    # -- alerts ----------------------------------------------------------------------------------

    def _alertTable(self, alerts: list[dict[str, Any]]) -> str:
        rows = [
            [
                esc(_utc(shapes.alertSince(a))),
                '<span class="{}">{}</span>'.format(
                    "up" if a.get("cleared") else "failing", esc(a.get("severity", ""))
                ),
                esc(shapes.alertName(a)),
                esc(a.get("subject", "")),
                esc(("(cleared) " if a.get("cleared") else "") + str(a.get("message", ""))),
            ]
            for a in alerts
        ]
        return table(["Since (UTC)", "Severity", "Alert", "Subject", "Message"], rows, class_="alerts")

    @app.route("/alerts", methods=["GET"])
    @defer.inlineCallbacks
    def alerts(self, request):
        source = self.state.optional("alerts")
        if source is None or not IAlertSource.providedBy(source):
            return self._page(request, "Alerts", self._missing("alerts service"), "/alerts")
        items = source.alerts(include_cleared=True)
        body = self._alertTable(items) if items else "<p>No alerts.</p>"
        if hasattr(source, "notifications"):
            body += yield self._notificationsSection(source)
        return self._page(request, "Alerts", body, "/alerts")

    @defer.inlineCallbacks
    def _notificationsSection(self, source):
        """E-mail and webhook notices not delivered yet (retrying) or given up (expired)."""
        try:
            notices = yield source.notifications()
        except Exception as e:
            return f'<h2>Notifications</h2><p class="flash error">Notification queue not read: {esc(e)}</p>'
        stats = source.deliveryStats()
        head = (f"<h2>Notifications</h2><p>{stats['delivered']} delivered, {stats['failed_attempts']}"
                f" failed attempts and {stats['expired']} given up since start</p>")
        if not notices:
            return head + "<p>Every notification was delivered.</p>"
        rows = [
            [
                esc(_utc(n.get("created_at"))),
                '<span class="{}">{}</span>'.format("down" if n["state"] == "expired" else "failing",
                                                    esc(n["state"])),
                esc(n.get("action")),
                esc(n.get("title")),
                esc(n.get("attempts")),
                esc(_utc(n.get("next_at")) if n["state"] != "expired" else "-"),
                esc(n.get("last_error") or ""),
            ]
            for n in notices
        ]
        return head + table(["Queued (UTC)", "State", "Action", "Notice", "Attempts", "Next try (UTC)",
                             "Last error"], rows, class_="notifications")

    # -- backups ---------------------------------------------------------------------------------

    @app.route("/backups", methods=["GET"])
    def backups(self, request):
        backup = self.state.optional("backup")
        if backup is None:
            return self._page(request, "Backups", self._missing("backup service"), "/backups")
        rows = []
        for status in backup.status():
            running = status.get("state") == "running"
            last = status.get("last") or {}
            last_text = f"{last.get('run_id')} {last.get('outcome')} at {_utc(last.get('ended'))}"
            rows.append(
                [
                    "#id:backup-" + str(status.get("backup")),
                    esc(status.get("backup")),
                    esc(status.get("destination", "")),
                    esc(status.get("schedule", "")),
                    f'<span class="{"up" if running else "idle"}">{esc(status.get("state", "?"))}</span>',
                    esc(f"{status.get('phase', '')} {status.get('step', '')}".strip() if running else "-"),
                    esc(f"{status.get('percent', 0)}%" if running else "-"),
                    esc(_bytes(status.get("bytes")) if running else "-"),
                    esc(last_text if last else "never"),
                    esc(_utc(status.get("next_due"))),
                ]
            )
        headers = ["Backup", "Destination", "Schedule", "State", "Phase", "Progress", "Bytes", "Last run",
                   "Next (UTC)"]
        body = table(headers, rows, class_="backups") if rows else "<p>No backup sets.</p>"
        body += (
            "<p>Run, verify and restore with <code>salvusctl backup</code> and"
            " <code>salvusctl restore</code>.</p>"
        )
        return self._page(request, "Backups", body, "/backups")

    @app.handle_errors(Exception)
    def error(self, request, failure):
        """Unexpected errors: logged in full, one plain line to the browser (never a traceback)."""
        from werkzeug.exceptions import HTTPException
        from werkzeug.routing import RequestRedirect

        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if failure.check(RequestRedirect):
            request.setResponseCode(failure.value.code)
            request.setHeader(b"location", urlsplit(failure.value.new_url).path.encode())
            return b""
        if failure.check(HTTPException):
            request.setResponseCode(failure.value.code)
            return f"{failure.value.name.lower()}\n".encode()
        log.failure("admin page failed", failure)
        request.setResponseCode(500)
        return f"internal error: {failure.type.__name__}\n".encode()
