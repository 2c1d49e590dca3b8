"""The WAL's own native thread: runs one blocking job at a time off the event loop.

Why not the hub's threadpool (gevent.threadpool): per job it builds an AsyncResult, a
ThreadResult with a new async watcher, and passes the job through a Python queue guarded
by a Condition, so both threads run a good deal of Python - and the worker needs the GIL
for all of it. Here the job is handed over with one raw lock and comes back through one
async watcher made once; the worker runs the job and two calls. Measured in
bench/RESULTS.md (persist section).

Contract: submit(fn, args) from the loop's thread, only while no job is running;
on_done(ok, value) is called in the hub when the job finished (ok False: value is the
exception). close() stops the thread after the running job, if any (its result is
still delivered).
"""
from gevent import monkey

_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")


class WalThread:
    def __init__(self, hub, on_done, name="wal-sync"):
        self._on_done = on_done
        self._go = _allocate_lock()
        self._go.acquire()  # released once per job (and once by close)
        self._job = None
        self._result = None
        self._stopping = False
        self.busy = False
        # The watcher keeps the loop alive only while a job runs: fibers parked on the
        # job's result must not see the hub exit with "nothing to do".
        self._async = hub.loop.async_(ref=False)
        self._async.start(self._finished)
        self.name = name
        _start_thread(self._run, ())

    def submit(self, fn, args):
        if self.busy:
            raise RuntimeError("WalThread runs one job at a time")
        self.busy = True
        self._job = (fn, args)
        self._async.ref = True
        self._go.release()

    def _run(self):  # the native thread
        go, job_done = self._go, self._async.send
        while True:
            go.acquire()
            job = self._job  # None: woken by close() while idle
            if job is not None:
                fn, args = job
                try:
                    self._result = (True, fn(*args))
                except BaseException as exc:  # handed to the loop, which decides
                    self._result = (False, exc)
                job_done()
            if self._stopping:  # set by close(), before or while the job ran: it still ran
                return

    def _finished(self):  # the hub
        result, self._result = self._result, None
        if result is None:  # a spurious wake-up (async sends coalesce, never get lost)
            return
        self._job = None
        self.busy = False
        self._async.ref = False
        if self._stopping:  # the job close() let finish
            # The thread sent this result, then returned or went back to acquire() (if it
            # looked at _stopping before close() set it); the lock is held either way
            # (taken for the job): releasing it wakes the thread, which finds no job and
            # returns. The watcher is not used again (closed by the garbage collector,
            # not inside its own callback).
            self._go.release()
            self._async.stop()
        self._on_done(*result)

    def close(self):
        """Stop the thread after its job, if one runs; that job's result still reaches
        on_done (the loop does not wait for it). Safe at any moment, also right after
        submit(), before the thread has taken the job."""
        if self._stopping:
            return
        self._stopping = True
        if self.busy:
            # The job was handed over (the lock released once for it): the thread runs
            # it, sends its result and then sees _stopping. Releasing the lock here
            # could release it unlocked (RuntimeError) in the instant before the thread
            # takes it. The watcher stays started so that the result comes back.
            return
        # Idle: the thread holds the lock from its last job (or it was never released)
        # and waits in acquire(); this wakes it and it returns.
        self._go.release()
        self._async.stop()
        self._async.close()
