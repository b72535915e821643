"""What the load/ scripts share: free ports, child processes stopped by PID on exit,
RSS readings, readiness waits, and a fast nginx upstream."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "licgate")
GEN = os.path.join(ROOT, "target", "release", "examples", "gen_licenses")

children = []


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, out):
    """Starts `cmd` in its own session (stopped by `stop_all`)."""
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    children.append(proc)
    return proc


def stop_all():
    """SIGTERM to every child's process group, SIGKILL after 15 s."""
    for proc in children:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for proc in children:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_parts(pid):
    """RSS split as the kernel counts it: anonymous (heap), file-backed (code, mapped
    files), shared memory; in MB."""
    parts = {}
    for line in open(f"/proc/{pid}/status"):
        key = line.split(":")[0]
        if key in ("RssAnon", "RssFile", "RssShmem"):
            parts[key[3:].lower()] = int(line.split()[1]) / 1024
    return parts


def wait_ready(url, timeout, poll=0.2):
    """Waits until `url` answers 200; exits the script after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception:
            time.sleep(poll)
    raise SystemExit(f"{os.path.basename(sys.argv[0])}: {url} not ready in {timeout}s")


def ensure_tools(*tools):
    """Installs missing tools, builds the release binary and gen_licenses when missing."""
    for tool in tools:
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            subprocess.run([os.path.join(ROOT, "scripts", "install-deps.sh"), tool], check=True)
    if not os.path.exists(BIN):
        subprocess.run(["cargo", "build", "--release"], cwd=ROOT, check=True)
    if not os.path.exists(GEN):
        subprocess.run(["cargo", "build", "--release", "--example", "gen_licenses"], cwd=ROOT, check=True)


def signed_store(work, tenants):
    """A signing key in work/keys and `tenants` licenses (t0 … t{tenants-1}) in work/store."""
    subprocess.run([BIN, "license", "keygen", "--out", f"{work}/keys"], check=True, capture_output=True)
    log(f"  signing {tenants} licenses")
    t0 = time.time()
    subprocess.run([GEN, f"{work}/keys/vendor.key.pem", f"{work}/store", str(tenants)], check=True)
    log(f"  {time.time() - t0:.1f} s")


def nginx_upstream(work):
    """Starts one nginx worker answering 200 {"ok":true} to everything; returns its port."""
    up = free_port()
    os.makedirs(f"{work}/nginx/logs", exist_ok=True)
    with open(f"{work}/nginx/nginx.conf", "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {work}/nginx/pid; error_log {work}/nginx/error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  client_body_temp_path {work}/nginx/b; proxy_temp_path {work}/nginx/p; fastcgi_temp_path {work}/nginx/f;
  uwsgi_temp_path {work}/nginx/u; scgi_temp_path {work}/nginx/s;
  server {{ listen 127.0.0.1:{up}; location / {{ return 200 '{{"ok":true}}'; }} }} }}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    start([nginx, "-p", f"{work}/nginx", "-c", f"{work}/nginx/nginx.conf"], open(f"{work}/nginx/out.log", "w"))
    return up


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url, seconds, connections, threads, script=None):
    """One wrk run against `url` (with the Lua `script`, if any): requests/s, p50 and
    p99 in ms, non-2xx, socket errors."""
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *extra, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": rps, "p50_ms": p50, "p99_ms": p99,
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(0) if socket_errors else "",
    }


def commit():
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
