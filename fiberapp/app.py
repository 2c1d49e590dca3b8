"""The composition root: Config -> Runtime, queue store (+ persistence), HTTP server, API,
database pools, admin console, fiber scripts.

Everything is built here and passed down; nothing below reaches back up or keeps global state.
Fiber scripts receive this App (through a ScriptContext that records what they own).

Lifecycle: start() -> (reload())* -> stop(timeout). States, as /health reports them:
starting -> recovering -> running -> draining -> stopped.
"""
import logging
import os

import gevent
import gevent.event
from prometheus_client import CollectorRegistry

from fiberapp import config as config_mod
from fiberapp import logs
from fiberapp.runtime import heap
from fiberapp.runtime.clock import SystemClock
from fiberapp.runtime.fiber import Runtime
from fiberapp.scripts import ScriptError, load_script
from fiberapp.sdnotify import Notifier

log = logging.getLogger("fiberapp")


class App:
    def __init__(self, cfg, *, clock=None, notifier=None, config_path=None, cli_overrides=None,
                 cli_scripts=()):
        self.config = cfg
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier(env={})
        self.state = "starting"
        self.started_at = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.runtime = Runtime(clock=self.clock, watchdog_limit=cfg.watchdog_limit,
                               cpu_accounting=cfg.cpu_accounting)
        self.store = None
        self.persistence = None
        self.pg = None
        self.pgs = {}
        self.redis = None
        self.scripts = []
        self.http = None
        self.router = None
        self.console = None
        self.api = None
        self._shutdown_hooks = []
        self._config_path = config_path
        self._cli_overrides = dict(cli_overrides or {})
        self._cli_scripts = [os.path.abspath(s) for s in cli_scripts]
        self._reloads = 0
        self._stopped = gevent.event.Event()

    # -- what fiber scripts use ------------------------------------------------------------

    def route(self, method, path, **options):
        """Decorator registering an app-level HTTP route (scripts get their own, owned ones)."""
        def register(handler):
            self.router.add(method, path, handler, **options)
            return handler
        return register

    def spawn(self, fn, *args, name=None, **kwargs):
        return self.runtime.spawn(fn, *args, name=name or fn.__name__, **kwargs)

    def on_shutdown(self, fn):
        """Run fn() when the server stops gracefully (before in-flight work is cancelled)."""
        self._shutdown_hooks.append(fn)
        return fn

    def remove_shutdown_hook(self, fn):
        if fn in self._shutdown_hooks:
            self._shutdown_hooks.remove(fn)

    @property
    def address(self):
        """(host, port) the HTTP server is bound to (port 0 resolved), or None."""
        return self.http.address if self.http is not None else None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self):
        """Bring everything up; raises (a FiberappError for a user's mistake) if anything fails."""
        from fiberapp import wiring

        cfg = self.config
        self.started_at = self.clock.time()
        os.makedirs(cfg.data_dir, exist_ok=True)
        self.state = "recovering"
        self.router, self.http = wiring.build_http(self)
        self.http.start()  # /health answers 503 while the store recovers
        self.store, self.persistence = wiring.open_store(self)
        self.store.start(self.runtime)       # the ticker fiber: delays, ttr, ttl
        if self.persistence is not None:
            self.persistence.start()         # the checkpoint fiber
        if cfg.gc_freeze:
            # The recovered store and the libraries stay for the process's life: later full
            # collections skip them (fiber scripts load after, so reload still frees theirs).
            log.info("heap frozen after recovery: %d objects", heap.freeze_startup())
        heap.set_young_threshold(cfg.gc_young_threshold)
        self.pg, self.pgs, self.redis = wiring.open_databases(self)
        for path in self._script_paths():
            self.scripts.append(load_script(self, path))
        self.console = wiring.start_console(self)
        # Accounting and the watchdog start once start-up (imports, recovery: blocking by
        # nature) is over, so the watchdog reports fibers, not the boot sequence.
        self.runtime.start()
        self.state = "running"
        host, port = self.address
        log.info("fiberapp ready: http://%s:%d/ (data in %s, wal_mode=%s, %d script(s))",
                 host, port, cfg.data_dir, cfg.wal_mode, len(self.scripts))
        self.notifier.ready(f"listening on {host}:{port}")
        if self.notifier.watchdog_interval:
            self.runtime.spawn(self._systemd_watchdog, name="systemd.watchdog")

    def _script_paths(self):
        seen = []
        for path in list(self.config.scripts) + self._cli_scripts:
            path = os.path.abspath(path)
            if path not in seen:
                seen.append(path)
        return seen

    def _systemd_watchdog(self):
        # The ping comes from a fiber on purpose: a loop stalled by a hog stops pinging.
        while True:
            self.notifier.watchdog()
            self.clock.sleep(self.notifier.watchdog_interval)

    def reload(self):
        """Re-read the config, reopen the log file, reload every fiber script.

        The queue store is untouched. Returns {"ok", "reloaded", "errors"}; a script that
        fails to load is reported (and stays unloaded) without stopping the others."""
        self.notifier.reloading()
        errors, reloaded = [], []
        try:
            try:
                cfg = config_mod.load(self._config_path, overrides=self._cli_overrides)
            except config_mod.ConfigError as exc:
                errors.append(str(exc))
                cfg = self.config
            else:
                self._apply_live_settings(cfg)
            logs.configure(cfg.log_level, cfg.log_format, cfg.log_file)
            for ctx in self.scripts:
                ctx.unload()
            self.scripts = []
            for path in self._script_paths():
                try:
                    self.scripts.append(load_script(self, path))
                    reloaded.append(path)
                except ScriptError as exc:
                    log.error("reload: %s", exc, exc_info=exc.__cause__ is not None)
                    errors.append(str(exc))
            self._reloads += 1
            log.info("reloaded: %d script(s), %d error(s)", len(reloaded), len(errors))
        finally:
            self.notifier.ready()
        return {"ok": not errors, "reloaded": reloaded, "errors": errors, "generation": self._reloads}

    def _apply_live_settings(self, cfg):
        """Take what can change without a restart; say what cannot."""
        for key in ("listen", "data_dir", "wal_mode", "console_socket", "pidfile"):
            if getattr(cfg, key) != getattr(self.config, key):
                log.warning("reload: %s changed; it takes effect at the next restart", key)
                cfg._values[key] = getattr(self.config, key)
        cfg._values["scripts"] = list(cfg.scripts)
        self.config = cfg

    def stop(self, timeout=10.0):
        """Graceful stop: stop accepting, run on_shutdown hooks, let in-flight requests
        finish within timeout, then cancel what is left. Safe to call more than once."""
        if self._stopped.is_set():
            return
        deadline = self.clock.monotonic() + timeout
        self.state = "draining"
        self.notifier.stopping()
        if self.store is not None:
            self.store.drain(True)  # puts are refused from now on; takes still served
        for hook in list(self._shutdown_hooks):
            try:
                hook()
            except Exception:
                log.exception("on_shutdown hook %r failed", hook)
        if self.http is not None:
            self.http.stop(timeout=max(0.0, deadline - self.clock.monotonic()))
        if self.console is not None:
            self.console.stop()
        if self.api is not None:
            self.api.stop()
        for ctx in self.scripts:
            ctx.unload(timeout=max(0.0, deadline - self.clock.monotonic()))
        for client in [self.redis, *self.pgs.values()]:
            if client is not None:
                client.close()
        if self.persistence is not None:
            self.persistence.close()  # flushes the WAL, stops the store, releases the lock
        elif self.store is not None:
            self.store.stop()
        self.runtime.stop(timeout=max(0.0, deadline - self.clock.monotonic()))
        self.state = "stopped"
        self._stopped.set()

    # -- what the API and the console read -----------------------------------------------

    def health(self):
        """(status code, body) for GET /health."""
        body = {"status": "ok"}
        code = 200
        if self.state != "running":
            body["status"] = self.state
            code = 503
            if self.state == "recovering" and self.persistence is not None:
                body["recovery"] = getattr(self.persistence, "progress", None)
        checks = {}
        for name, client in [("redis", self.redis)] + [(f"pg.{n}" if n != "default" else "pg", p)
                                                        for n, p in self.pgs.items()]:
            if client is not None:
                checks[name] = client.health()
        if checks:
            body["checks"] = checks
            if code == 200 and any(c.get("status") != "ok" for c in checks.values()):
                body["status"] = "degraded"  # still 200: the queues work without the databases
        return code, body

    def snapshot(self):
        """Write a snapshot now; returns {"lsn", "file"}."""
        if self.persistence is None:
            from fiberapp.runtime.errors import FiberappError

            raise FiberappError("snapshots need wal_mode write or fsync (this server keeps nothing)")
        return self.persistence.snapshot()

    def info(self):
        return {"state": self.state, "started_at": self.started_at, "pid": os.getpid(),
                "listen": self.address, "data_dir": self.config.data_dir,
                "wal_mode": self.config.wal_mode, "scripts": [c.path for c in self.scripts],
                "reloads": self._reloads}
