"""Blocking take (and put on a full tube) without polling.

Takers that find nothing queue on each tube they wait for (``tube._waiters``, FIFO). A change
that makes a task takeable wakes exactly one waiter per task: ``_notify`` marks it woken and
counts it in ``tube._promised``. While a tube has promised waiters that have not run yet, a
newcomer does not barge past them (it queues too), so waiters are served in arrival order.
A woken waiter that finds nothing (e.g. the task expired) queues again at the head; one that
takes a task and sees more waiters and more tasks wakes the next (a chain), so a burst of
puts with no waiters still reaches every later waiter.

A waiter cancelled (killed) while waiting takes nothing; if it had been woken for a task it
passes the wake-up on to the next waiter. Timeouts go through the store's clock.

When no ticker fiber runs (tests, scripts), a waiter also wakes at the store's next deadline
and runs the tick itself, so delays and ttr lapse for it all the same.
"""
import gevent.event

from queues.errors import NoSuchTube, TubeFull

INF = float("inf")


class Waiter:
    __slots__ = ("event", "tube", "done")

    def __init__(self):
        self.event = gevent.event.Event()
        self.tube = None    # the tube whose task woke it (None: timed out / timer)
        self.done = False   # woken, timed out or abandoned: ignore it in the deques

    def timer_fired(self):
        if not self.done:
            self.done = True
            self.event.set()


class WaitingMixin:
    def _notify(self, tube, n):
        """Wake up to n waiters of the tube (each is promised one task)."""
        ws = tube._waiters
        while n > 0 and ws:
            w = ws.popleft()
            if w.done:
                continue
            w.done = True
            w.tube = tube
            tube._promised += 1
            w.event.set()
            n -= 1

    def _try_take(self, tubes, session, n, now, privileged):
        """Take up to n tasks from the first tube that has any; [] if none can be taken now."""
        for tube in tubes:
            if tube._dropped:
                raise NoSuchTube(tube.name)
            if tube._promised and tube is not privileged:
                continue
            if tube.resume_at is not None and now < tube.resume_at:
                continue
            got = []
            driver = tube.driver
            while len(got) < n:
                task = driver.candidate()
                if task is None:
                    break
                got.append(self._take_one(tube, task, session, now, wait=False))
            if got:
                return got
        return []

    def _take_slow(self, tubes, timeout, session, n):
        from queues import options as opt

        timeout = opt.timeout("timeout", timeout)
        clock = self.clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        privileged = None
        front = False
        while True:
            now = clock.monotonic()
            if now >= self._wake_at:
                self.tick(now)
                now = clock.monotonic()
            tokens_before = len(self._pending_tokens)
            got = self._try_take(tubes, session, n, now, privileged)
            if got:
                if privileged is not None and privileged._waiters and privileged.driver.candidate() is not None:
                    self._notify(privileged, 1)
                tokens = self._pending_tokens[tokens_before:]
                del self._pending_tokens[tokens_before:]
                for token in tokens:
                    self._journal_wait(token)
                return got
            if deadline is not None and now >= deadline:
                return []
            privileged = None
            w = Waiter()
            for tube in tubes:
                if front:
                    tube._waiters.appendleft(w)
                else:
                    tube._waiters.append(w)
            front = True
            wake = INF if deadline is None else deadline
            for tube in tubes:
                if tube.resume_at is not None and now < tube.resume_at < wake:
                    wake = tube.resume_at
            if self._ticker is None and self._wake_at < wake:
                wake = self._wake_at
            timer = clock.call_at(wake, w.timer_fired) if wake < INF else None
            try:
                w.event.wait()
            except BaseException:
                self._abandon(w, tubes)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            for tube in tubes:
                if tube is not w.tube:
                    try:
                        tube._waiters.remove(w)
                    except ValueError:
                        pass
            if w.tube is not None:
                privileged = w.tube
                privileged._promised -= 1

    def _abandon(self, w, tubes):
        w.done = True
        for tube in tubes:
            try:
                tube._waiters.remove(w)
            except ValueError:
                pass
        woken_by = w.tube
        if woken_by is not None:
            w.tube = None
            woken_by._promised -= 1
            if not woken_by._dropped and woken_by.driver.candidate() is not None:
                self._notify(woken_by, 1)

    def _space_freed(self, tube, n=1):
        ws = tube._space_waiters
        while n > 0 and ws:
            w = ws.popleft()
            if w.done:
                continue
            w.done = True
            w.event.set()
            n -= 1

    def _wait_space(self, tube, need, timeout):
        """Block until the tube has room for ``need`` more tasks, or raise TubeFull."""
        from queues import options as opt

        timeout = opt.timeout("timeout", timeout) if timeout is not None else 0.0
        cap = tube.driver.capacity
        if need > cap:
            raise TubeFull(f"tube {tube.name!r} holds at most {cap} tasks; {need} do not fit")
        clock = self.clock
        deadline = None if timeout is None else clock.monotonic() + timeout
        while len(tube._tasks) + need > cap:
            if tube._dropped:
                raise NoSuchTube(tube.name)
            now = clock.monotonic()
            if deadline is not None and now >= deadline:
                raise TubeFull(f"tube {tube.name!r} is full ({cap} tasks)")
            w = Waiter()
            tube._space_waiters.append(w)
            timer = clock.call_at(deadline, w.timer_fired) if deadline is not None else None
            try:
                w.event.wait()
            except BaseException:
                w.done = True
                try:
                    tube._space_waiters.remove(w)
                except ValueError:
                    self._space_freed(tube)  # it had been woken: pass the room on
                raise
            finally:
                if timer is not None:
                    timer.cancel()
        # Room may be left for the next one as well.
        if len(tube._tasks) + need < cap:
            self._space_freed(tube)
