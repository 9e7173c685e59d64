#!/usr/bin/env python3
"""Runs the release binary exactly as the container image would.

No container engine is needed: the Dockerfile's runtime stage is read (its
ENV, USER, COPY, ENTRYPOINT, CMD and HEALTHCHECK lines) and reproduced on
this machine: the config file is copied to the path the image copies it to,
the binary is put on PATH as /usr/local/bin is in the image, and the command
runs under the image's numeric user with the image's environment. Then a
client joins over 0.0.0.0's port, the HEALTHCHECK command is run, and SIGTERM
must end the process with status 0.

Needs root (to switch user and to write the config path) and the release
binary (cargo build --release), and Python's msgpack package. Exits non-zero on any failure.
"""

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def runtime_stage(dockerfile):
    """Instructions of the last stage, as (keyword, rest) pairs."""
    lines, current = [], ""
    for raw in open(dockerfile, encoding="utf-8"):
        line = raw.rstrip("\n")
        if line.strip().startswith("#") and not current:
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            lines.append((keyword.upper(), rest.strip()))
        current = ""
    last_from = max(i for i, (k, _) in enumerate(lines) if k == "FROM")
    return lines[last_from:]


def frame(value):
    payload = msgpack.packb(value)
    return struct.pack(">I", len(payload)) + payload


def read_frame(sock):
    def exact(n):
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    (length,) = struct.unpack(">I", exact(4))
    return exact(length)


def main():
    if os.geteuid() != 0:
        print("skipped: run-like-container needs root to switch to the image's user")
        return 0
    binary = os.path.join(ROOT, "target", "release", "anteroom")
    if not os.path.exists(binary):
        print("error: build the release binary first (cargo build --release)")
        return 1

    stage = runtime_stage(os.path.join(ROOT, "Dockerfile"))
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    user = None
    entrypoint, cmd, health = [], [], []
    bin_dir = tempfile.mkdtemp(prefix="anteroom-image-")
    data_dirs = {}
    os.chmod(bin_dir, 0o755)
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in rest.split():
                key, _, value = pair.partition("=")
                env[key] = value
        elif keyword == "USER":
            user = rest
        elif keyword == "COPY":
            parts = rest.split()
            if any(p.startswith("--chown=") for p in parts):
                # The image's data directory, owned by its user: a temporary
                # one here, put in its place through the environment below.
                data_dir = tempfile.mkdtemp(prefix="anteroom-data-")
                owner = next(p for p in parts if p.startswith("--chown=")).split("=", 1)[1]
                os.chown(data_dir, *(int(x) for x in owner.split(":")))
                data_dirs[parts[-1]] = data_dir
            elif parts[0].startswith("--from="):
                # The binary: its image path's directory goes on PATH.
                shutil.copy(binary, os.path.join(bin_dir, os.path.basename(parts[-1])))
                env["PATH"] = bin_dir + ":" + env["PATH"]
            else:
                source, target = parts
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy(os.path.join(ROOT, source), target)
                os.chmod(target, 0o644)
                print(f"installed {source} at {target}")
        elif keyword == "ENTRYPOINT":
            entrypoint = json.loads(rest)
        elif keyword == "CMD":
            cmd = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            health = json.loads(rest[rest.index("CMD") + 3 :].strip())
    for key, value in env.items():
        if value in data_dirs:
            env[key] = data_dirs[value]
    assert user and ":" in user and user.split(":")[0] != "0", f"image must run as a numeric non-root user, got {user!r}"
    uid, gid = user.split(":")
    argv = entrypoint + cmd
    as_user = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
    print(f"running as {user}: {' '.join(argv)} with {env}")

    for port in (7878, 7880, 9878):
        probe = socket.socket()
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            print(f"error: port {port} is busy; the image's ports must be free")
            return 1
        finally:
            probe.close()

    proc = subprocess.Popen(as_user + argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        deadline = time.time() + 20
        wanted = ("listening on 0.0.0.0:7878", "metrics on 0.0.0.0:9878", "web client on http://0.0.0.0:7880/")
        while not all(any(w in l for l in seen) for w in wanted):
            line = proc.stdout.readline()
            if not line or time.time() > deadline:
                print("".join(seen))
                print("error: the server did not report its three listeners on 0.0.0.0")
                return 1
            seen.append(line)
        print("".join(seen), end="")

        status = open(f"/proc/{proc.pid}/status").read()
        real_uid = next(l.split()[1] for l in status.splitlines() if l.startswith("Uid:"))
        assert real_uid == uid, f"server runs as uid {real_uid}, not {uid}"

        with socket.create_connection(("127.0.0.1", 7878), timeout=5) as sock:
            sock.sendall(frame({"type": "hello", "name": "probe"}))
            reply = msgpack.unpackb(read_frame(sock))
            assert reply["type"] == "welcome", reply
        print("a client joined through the image's listener")

        result = subprocess.run(as_user + health, env=env, timeout=10)
        assert result.returncode == 0, f"HEALTHCHECK command failed: {health}"
        print(f"HEALTHCHECK passed: {' '.join(health)}")

        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        assert code == 0, f"exit status {code} after SIGTERM"
        print("SIGTERM: exit status 0")
        for data_dir in data_dirs.values():
            log = os.path.join(data_dir, "chat.sqlite3")
            assert os.path.exists(log), f"no chat log in the image's data directory ({log})"
            print("the chat log was written in the image's data directory")
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(bin_dir, ignore_errors=True)
        for data_dir in data_dirs.values():
            shutil.rmtree(data_dir, ignore_errors=True)
    print("ok: the image's command line works")
    return 0


if __name__ == "__main__":
    sys.exit(main())
