"""systemd's notify protocol: one datagram to $NOTIFY_SOCKET per state change.

A few lines, no package: READY=1 once listening, RELOADING=1 (with MONOTONIC_USEC, which
Type=notify-reload requires) then READY=1 around a reload, STOPPING=1, and WATCHDOG=1 every half
WatchdogSec when $WATCHDOG_USEC is set. `fiberapp start` uses the same protocol to learn that
the daemon it launched is ready. Without $NOTIFY_SOCKET every call is a no-op.
"""
import os
import socket
import time


class Notifier:
    def __init__(self, env=None):
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self.address = address
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        self.watchdog_interval = None
        if usec and usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6  # ping at half the limit

    @property
    def enabled(self):
        return self.address is not None

    def notify(self, *states):
        if not self.address:
            return False
        message = "\n".join(states).encode()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(self.address)
            sock.sendall(message)
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def ready(self, status=None):
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self):
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self):
        return self.notify("STOPPING=1")

    def watchdog(self):
        return self.notify("WATCHDOG=1")

    def status(self, text):
        return self.notify(f"STATUS={text}")
