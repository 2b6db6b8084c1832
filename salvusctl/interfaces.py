"""The zope interfaces shared across Salvus services.

Each service owns its implementation; other services (and the admin) only rely on what is declared
here, so a fake checked with C{verifyObject} can stand in for the real thing in tests.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "IBackup",
    "IStore",
    "IScheduler",
    "ILoadSource",
    "IAlertAction",
    "ISupervisor",
    "supervisorOf",
    "IBalancerControl",
    "IMonitor",
    "IClusterStore",
    "ICluster",
]


class IStore(Interface):
    """Where a host keeps its state: SQLite by default, PostgreSQL for a fleet.

    SQL given to a store uses C{?} placeholders; the PostgreSQL store translates them.  Every method
    returns a Deferred and never blocks the reactor.  Writes (C{runOperation}, C{runInteraction})
    made while the database is unreachable are queued (bounded) and replayed when it returns.
    Reads made while it is unreachable fail at once with StoreUnavailable; when the outage queue is
    full the oldest queued write fails with QueueFull.
    """

    dialect = Attribute("The backend's name (C{'sqlite'}, C{'postgresql'}), for display: code asks C{sql}.")
    sql = Attribute(
        "The L{salvusctl.store.dialects.SQLDialect} this store speaks: the capabilities (shared,"
        " serialKey, coveringIndexes …) the few statements that differ choose between, so a new"
        " backend changes no service."
    )
    url = Attribute("The store URL this store was made from (password removed).")

    def addMigrations(component, steps):
        """Register versioned schema steps for C{component} before C{start()}.

        @param steps: a list of L{salvusctl.store.migrations.Migration}; applied in version order,
            each at most once per database, even when several hosts start at once.
        """

    def start():
        """Connect and apply migrations.  Fires when the store is ready."""

    def close():
        """Flush queued writes (bounded wait), close every connection.  Fires when done."""

    def runQuery(sql, args=()):
        """Run a read; fires with a list of row tuples."""

    def runOperation(sql, args=()):
        """Run one write statement; fires with None once committed."""

    def runInteraction(fn, *args, **kwargs):
        """Run C{fn(cursor, *args, **kwargs)} in one transaction (rolled back if it raises).

        The cursor has C{execute(sql, args)}, C{executemany(sql, seq)}, C{fetchone()},
        C{fetchall()}, C{rowcount} and accepts C{?} placeholders on both backends.  On PostgreSQL
        C{execute} returns a Deferred: write C{fn} as an C{inlineCallbacks} generator that
        C{yield}s each C{execute} (on SQLite the cursor returns itself, so the same code runs
        there).  Use C{INSERT … RETURNING id}, not C{lastrowid}.  On PostgreSQL C{fn} may run more
        than once (replayed after a lost connection).  Fires with what C{fn} returns.
        """

    def notify(channel, payload):
        """Send C{payload} (a str) to every listener of C{channel}: in-process on SQLite, over
        PostgreSQL NOTIFY for a fleet."""

    def listen(channel, callback):
        """Call C{callback(payload)} for each notification on C{channel}; survives reconnects."""

    # The foundation tables (services, status), shared by the monitor, admin and cluster.
    def recordServiceStart(type, site, address, port, user, pid, monitor_pid):
        """Insert a C{services} row with C{running = true}; fires with its id."""

    def recordServiceExit(service_id):
        """Mark a C{services} row C{running = false}."""

    def writeStatus(rows):
        """Append many C{status} rows in one transaction.

        @param rows: dicts with keys service_id, timestamp, load, percent_mem, percent_cpu,
            cputime, walltime, virtual_size, resident_size.
        """

    def latestStatus():
        """Fires with the latest status dict of every running service."""

    def statusHistory(service_id, since, until=None):
        """Fires with status dicts of one service between C{since} and C{until}, oldest first."""


class IScheduler(Interface):
    """Chooses a backend host for a new client connection (one small module per policy)."""

    name = Attribute("The scheduler's config name, e.g. C{'roundrobin'}.")

    def choose(hosts, client_address):
        """Return one of C{hosts} (only hosts able to take a connection are passed), or None."""

    def hostsChanged(hosts):
        """The group's host set changed (added, removed, reweighted)."""


class ILoadSource(Interface):
    """Feeds the least-load scheduler: how loaded each backend is right now."""

    def loadOf(host):
        """Return a float (lower is better) or None when unknown."""


class IAlertAction(Interface):
    """Something done when an alert fires or clears: log, e-mail, webhook."""

    def fire(alert):
        """C{alert} fired (or, with C{alert.cleared}, recovered).  May return a Deferred."""


class ISupervisor(Interface):
    """The deploy supervisor, as other services and the admin see it.

    Instance names are C{deploy:N}; a deploy with numprocs 1 still has C{deploy:0}.  Infos are dicts
    with at least: name, group, state (name), statecode (supervisord's numeric code), pid, start,
    stop, now, exitstatus, spawnerr, description, port, logfile, stdout_logfile, stderr_logfile.
    """

    def instanceInfos():
        """Return the info dicts of every instance, in start order."""

    def instanceInfo(name):
        """Return one instance's info dict; raise KeyError for an unknown name."""

    def startInstance(name):
        """Start one instance; fires when it is RUNNING (or fails with the reason)."""

    def stopInstance(name):
        """Stop one instance (whole process tree); fires when it has exited."""

    def restartInstance(name):
        """Stop then start one instance."""

    def startDeploy(name):
        """Start every instance of a deploy (respecting depends_on)."""

    def stopDeploy(name):
        """Stop every instance of a deploy."""

    def startAll(everything=False):
        """Start the autostart deploys in priority / dependency order; with C{everything}, the
        C{autostart=False} ones too (supervisord's C{startAllProcesses})."""

    def stopAll():
        """Stop everything in reverse order; fires when all have exited."""

    def signalInstance(name, signal):
        """Send a signal (number or name) to the instance's process group."""

    def tailLog(name, lines=100, stream="stdout"):
        """Return the last C{lines} lines captured from an instance as a list of str."""

    def restartDeploy(name, batch=1):
        """Rolling restart, C{batch} instances at a time (None: all at once); fires when done."""

    def startGroup(name):
        """Start every deploy of a group."""

    def stopGroup(name):
        """Stop every deploy of a group."""

    def followLog(name, callback, stream="stdout"):
        """Call C{callback(line)} for each new line; returns a function that stops following."""

    def addBeforeStop(hook):
        """Call C{hook(name, info)} before a RUNNING instance is signalled; wait for its Deferred."""

    def removeBeforeStop(hook):
        """Undo L{addBeforeStop}."""

    def reload(deploys):
        """Apply new deploy declarations, touching only what changed."""

    def addObserver(observer):
        """Call C{observer(name, old_state, new_state, info)} on every state change."""

    def removeObserver(observer):
        """Undo L{addObserver}."""


def supervisorOf(service: object) -> object:
    """The L{ISupervisor} behind a supervisor component's service: the service itself, or the
    object it holds as C{supervisor} (a wrapper, a test's stand-in); None when it has none."""
    if service is None or ISupervisor.providedBy(service):
        return service
    for attr in ("supervisor", "_supervisor", "control"):
        candidate = getattr(service, attr, None)
        if candidate is not None and ISupervisor.providedBy(candidate):
            return candidate
    return None


class IBalancerControl(Interface):
    """Live operations on the balancer (exposed by the admin over XML-RPC, pages and CLI)."""

    def snapshot():
        """Return the running configuration and counters as plain data (dicts, lists, str, int)."""

    def addHost(service, group, address, port, weight=1, name=None):
        """Add a backend host to a group."""

    def removeHost(service, group, hostname):
        """Remove a backend host (its open connections finish)."""

    def setHostState(service, group, hostname, state):
        """Set C{'up'} (admin up), C{'drain'} or C{'maint'}."""

    def setWeight(service, group, hostname, weight):
        """Change a host's weight."""

    def setScheduler(service, group, scheduler):
        """Switch a group's scheduler live."""

    def drain(service, group, hostname):
        """No new connections to a host; its open ones finish."""

    def enable(service, group, hostname):
        """Admin up: back into rotation (health checks still apply)."""

    def disable(service, group, hostname):
        """Admin down (maint)."""

    def removeAllHosts(service, group):
        """Empty a group."""

    def addGroup(service, group, scheduler="roundrobin"):
        """Add an empty group to a service."""

    def removeGroup(service, group):
        """Remove a group (not the active one)."""

    def setActiveGroup(service, group):
        """Switch the group new clients go to."""

    def retryHost(service, group, hostname):
        """Health-check a down host now instead of at its next scheduled check."""

    def dumpConfig():
        """The running configuration as declaration-shaped data."""

    def diff():
        """Differences between the declared configuration and the running one."""

    def reconcile():
        """Bring the running configuration back to the declared one."""


class IMonitor(Interface):
    """The monitor's queries (the admin and the balancer's least-load scheduler read these)."""

    def latest():
        """Return the in-memory latest sample of every instance: {name: dict}."""

    def history(name, since, until=None):
        """Fires with the samples of one instance between two times, oldest first."""

    def leastLoaded(deploy):
        """Return the name of the least-loaded RUNNING instance of a deploy, or None."""


class IClusterStore(Interface):
    """The cluster's tables (C{salvusctl.cluster.tables}): membership, messages, deliveries and
    published instances, on the same store every member of a cluster points at.

    Every method returns a Deferred.  Writes are the store's writes: queued while PostgreSQL is
    unreachable and replayed in order.
    """

    def beat(name, address, admin_url, started, now, heartbeat, missed, version):
        """Insert or refresh a host's row: state C{up}, C{last_seen = now}."""

    def leave(name, now):
        """Mark a host C{left} and withdraw what it published."""

    def hosts():
        """Every member row: C{(name, address, admin_url, started, last_seen, heartbeat, missed,
        version, state)}."""

    def view():
        """C{(rows, now, started)}: every member row as L{hosts} gives it, the database's clock
        when they were read and when its server started (None, None where the database's clock
        is the host's)."""

    def forgetHosts(before):
        """Drop hosts not seen since C{before}."""

    def send(uid, sender, recipient, kind, body, now, reply_to=None):
        """Queue a message (C{recipient} a host or C{'*'}, C{body} JSON text); fires with its id.
        A second send with the same C{uid} inserts nothing and fires with the first one's id."""

    def pending(host, limit=100):
        """Messages C{host} has not received yet, oldest first."""

    def claim(message_id, host, claimer, now):
        """Record a delivery; fires True when C{claimer} holds it, False when already received."""

    def finish(message_id, host, state, result, now):
        """Record a handler's outcome (C{acked} or C{failed}) and its result text."""

    def messages(host=None, kind=None, limit=50):
        """The newest messages with their deliveries, as dicts."""

    def prune(before, keep):
        """Delete messages older than C{before} and all but the newest C{keep}."""

    def publish(host, instance, deploy, address, port, state, now):
        """Publish (or update) one ready or draining deploy instance of C{host}."""

    def drainAll(host, now):
        """Publish every instance of C{host} as draining."""

    def unpublish(host, instance):
        """Withdraw one published instance."""

    def republish(host, rows, now):
        """Replace everything C{host} publishes."""

    def instances(deploy=None):
        """Published instances: C{(host, instance, deploy, address, port, state)}."""


class ICluster(Interface):
    """This host as a member of a cluster (the admin, CLI and balancer rely on this)."""

    host_name = Attribute("This host's name in the cluster (C{name} is the service's own).")
    shared = Attribute("True when the store is shared (PostgreSQL); False: a cluster of one.")

    def hosts():
        """Fires with every member as a dict (name, address, admin_url, started, last_seen, age,
        heartbeat, missed, version, state), this host included."""

    def lastView():
        """The hosts as of the last heartbeat, without reading the store (a list of dicts)."""

    def info():
        """This member's name, address, whether the store is shared, and its counters."""

    def send(recipient, kind, body):
        """Queue a message for a host (or C{'*'}: every host); fires with its id."""

    def ping(host, timeout=10.0):
        """Send C{ping}; fires with the round-trip seconds when the C{pong} comes back."""

    def messages(host=None, kind=None, limit=50):
        """Fires with the newest messages and their deliveries, newest first."""

    def addHandler(kind, handler):
        """Run C{handler(message)} for each message of C{kind} this host receives."""


class IBackup(Interface):
    """The backup service as the admin (C{backup.*} verbs, its pages) and the CLI use it.

    Implemented by L{salvusctl.backup.service.BackupService} and, for tests, by
    L{salvusctl.backup.testing.FakeBackup}; one contract suite (C{tests/backup/test_contract.py})
    runs against both.  An unknown set or run fails with
    L{salvusctl.backup.service.UnknownBackup}.
    """

    def run(name=None):
        """Back up set C{name} (the only one when None) now; fires with the run's summary."""

    def status():
        """Each set's state (idle or running), its last run and when it is next due."""

    def listRuns(name=None):
        """Fires with the runs of one set (or all), oldest first."""

    def runLog(run_id):
        """Fires with a run's log text."""

    def verify(run_id=None, name=None):
        """Fires with a report of a run restored into scratch space and checked."""

    def restore(run_id=None, dry_run=False, name=None):
        """Restore a run (default: the newest good one); fires with its steps and outcome."""
