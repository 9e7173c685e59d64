#!/usr/bin/env python3
"""A minimal anteroom client using only the standard library and the stock
`msgpack` package (pip install msgpack).

It joins the room, says something, and prints every frame it receives as
one line of JSON until it has seen its own message come back (or the
timeout passes), then says goodbye.

    python3 examples/python/chat.py --server 127.0.0.1:7878 --name py --say "hello from Python"

With --tls it speaks TLS (the server's `tls_listen`), checking the
certificate against the system's authorities, or only against --ca FILE:

    python3 examples/python/chat.py --tls --server localhost:7879 --ca certs/cert.pem
"""

import argparse
import json
import socket
import ssl
import struct
import sys
import time

import msgpack


def send(sock, message):
    """One frame: a 4-byte big-endian length, then one MessagePack map."""
    payload = msgpack.packb(message)
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def recv(sock):
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    return msgpack.unpackb(recv_exact(sock, length))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:7878")
    parser.add_argument("--name", default="python")
    parser.add_argument("--say", default="hello from Python")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for our own message")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the server's tls_listen)")
    parser.add_argument("--ca", help="with --tls: trust only the certificates in this PEM file")
    args = parser.parse_args()

    host, port = args.server.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=args.timeout)
    if args.tls:
        # Certificate and host name checked; TLS 1.2 at least, as the server requires.
        context = ssl.create_default_context(cafile=args.ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        sock = context.wrap_socket(sock, server_hostname=host)
    send(sock, {"type": "hello", "name": args.name})

    deadline = time.monotonic() + args.timeout
    said = False
    while time.monotonic() < deadline:
        try:
            frame = recv(sock)
        except socket.timeout:
            break
        print(json.dumps(frame, ensure_ascii=False), flush=True)
        kind = frame.get("type")
        if kind == "ping":
            # Answer the server's heartbeat with the same id.
            send(sock, {"type": "pong", "id": frame.get("id")})
        elif kind == "welcome" and not said:
            send(sock, {"type": "say", "text": args.say})
            said = True
        elif kind == "message" and frame.get("from") == args.name.strip():
            send(sock, {"type": "bye"})
        elif kind == "bye":
            return 0 if said else 1
        elif kind == "error" and frame.get("code") in ("name_taken", "name_invalid"):
            return 1
    print("timed out", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
