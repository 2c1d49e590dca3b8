"""Small helpers every benchmark harness needs: a free port, waiting for a server to listen,
stopping it, and how contended the CPUs were (printed next to results, since the cores are
shared)."""
import socket
import subprocess
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_listening(port, timeout=10.0, what="server"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # a benchmark harness, not a test: polling for readiness
    raise RuntimeError(f"{what} never listened on port {port}")


def stop_process(proc, timeout):
    """SIGTERM proc and wait up to timeout seconds for it to exit, then SIGKILL it."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_pressure():
    """Linux PSI 'some avg10': % of the last 10 s in which some runnable task waited for a
    CPU (nan where the kernel does not report it)."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split()[1].split("=")[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
