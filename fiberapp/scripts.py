"""Fiber scripts: plain Python files that the server runs, like Tarantool's init.lua.

A script defines ``init(app)``. It receives a ScriptContext — the app, seen through the
script's own name — and can spawn fibers, register HTTP routes and on_shutdown hooks, and
reach the queue store and the database wrappers. Everything a script registers is tagged with
the script, so reload can unload exactly that (cancel its fibers, drop its routes and hooks)
and run the new version without touching the queue store.
"""
import importlib.util
import logging
import os
import sys

from fiberapp.runtime.errors import FiberappError


class ScriptError(FiberappError):
    """A fiber script could not be loaded (not found, syntax error, no init, init raised)."""


class ScriptContext:
    """What init(app) receives: attribute access falls through to the App, while route,
    spawn, supervise and on_shutdown record what this script owns."""

    def __init__(self, app, path):
        self._app = app
        self.path = os.path.abspath(path)
        self.name = os.path.splitext(os.path.basename(path))[0]
        self.tag = f"script:{self.path}"
        self.log = logging.getLogger(f"fiberapp.script.{self.name}")
        self._fibers = []
        self._hooks = []

    def __getattr__(self, name):
        return getattr(self._app, name)

    def __repr__(self):
        return f"<ScriptContext {self.path}>"

    def route(self, method, path, **options):
        """Decorator: register handler(request) for METHOD PATH, owned by this script."""
        def register(handler):
            self._app.router.add(method, path, handler, owner=self.tag, **options)
            return handler
        return register

    def spawn(self, fn, *args, name=None, **kwargs):
        fiber = self._app.runtime.spawn(fn, *args, name=name or f"{self.name}.{fn.__name__}", **kwargs)
        self._fibers.append(fiber)
        return fiber

    def supervise(self, fn, *args, name=None, **kwargs):
        sup = self._app.runtime.supervise(fn, *args, name=name or f"{self.name}.{fn.__name__}", **kwargs)
        self._fibers.append(sup)
        return sup

    def on_shutdown(self, fn):
        self._hooks.append(fn)
        self._app.on_shutdown(fn)
        return fn

    def unload(self, timeout=5.0):
        """Cancel this script's fibers, drop its routes and shutdown hooks."""
        self._app.router.remove_owner(self.tag)
        for hook in self._hooks:
            self._app.remove_shutdown_hook(hook)
        self._hooks.clear()
        for fiber in self._fibers:
            fiber.cancel()
        for fiber in self._fibers:
            try:
                fiber.join(timeout)
            except BaseException:  # a fiber's own error was already logged where it died
                pass
        self._fibers.clear()


def load_script(app, path):
    """Import the file at path as a fresh module and call its init(ctx); returns the context.

    Raises ScriptError with the script's path on any failure; the caller unloads nothing
    (what init registered before raising is unloaded here)."""
    if not os.path.isfile(path):
        raise ScriptError(f"fiber script not found: {path}")
    ctx = ScriptContext(app, path)
    module_name = f"fiberapp_script_{abs(hash(ctx.path)):x}"
    spec = importlib.util.spec_from_file_location(module_name, ctx.path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        if not isinstance(exc, Exception):
            raise
        raise ScriptError(f"fiber script {path} failed to import: {exc!r}") from exc
    init = getattr(module, "init", None)
    if not callable(init):
        raise ScriptError(f"fiber script {path} defines no init(app) function")
    try:
        init(ctx)
    except Exception as exc:
        ctx.unload()
        raise ScriptError(f"fiber script {path}: init(app) raised {exc!r}") from exc
    ctx.module = module
    sys.modules.pop(module_name, None)  # scripts are not importable modules
    return ctx
