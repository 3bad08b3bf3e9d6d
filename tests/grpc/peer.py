#!/usr/bin/env python3
"""Real gRPC peers for synapse's end-to-end tests: Python `grpcio` (Google's C-core gRPC) and
`grpcio-health-checking`, not written by this project.

Methods of the service `synapse.test.Peer` carry raw bytes (no protobuf: grpcio's generic
handlers with identity serializers), so no generated code is needed:

- `Hello` (unary): answers the server's id.
- `Sleep` (unary): request = milliseconds as ASCII; sleeps that long or until the call is
  cancelled (deadline, reset), then answers the id. Counts calls it saw cancelled.
- `Unavailable` (unary): fails with UNAVAILABLE and no message sent (trailers-only).
- `Stream` (server streaming): request = "<count>,<size>"; answers `count` messages of `size`
  bytes, each starting with the id and a separator.
- `Echo` (bidirectional): answers every message with itself, as it arrives.
- `Stats` (unary): JSON {"id", "calls", "cancelled", "deadline_ms"} (deadline_ms: the last
  `Sleep` call's deadline as the server saw it, from `grpc-timeout`).
- `grpc.health.v1.Health/Check`: SERVING.

Usage:
  peer.py server --id NAME [--port 0]
      Prints "PORT <n>" once serving; stops on SIGTERM (graceful, 5 s) or stdin EOF.
  peer.py client --target HOST:PORT MODE [options]
      Opens one channel (one HTTP/2 connection) with grpcio's own retries off, runs MODE and
      prints one JSON line: {"ok", "by_backend", "failures", "codes", "errors", ...}.
      MODE unary  --calls N [--concurrency C]: N `Hello` calls.
      MODE load   --rate R: `Hello` calls at R per second until stdin reaches EOF; every
                  stdin line "mark" starts a new phase (counts per phase in "phases").
      MODE stream --count N --size S: one `Stream` call; checks every byte.
      MODE bidi   --count N --size S: one `Echo` call; checks every byte.
      MODE sleep  --sleep-ms M --timeout-ms T: one `Sleep` call with a deadline.
      MODE unavailable: one `Unavailable` call.
      MODE stats: one `Stats` call (its JSON is printed as "stats").
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

try:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
except ImportError as e:  # pragma: no cover - the Rust harness reports how to install
    sys.stderr.write(
        "peer.py: %s: install grpcio and grpcio-health-checking "
        "(deploy/test.sh does: python3 -m venv target/grpc-venv && "
        "target/grpc-venv/bin/pip install grpcio grpcio-health-checking)\n" % e
    )
    sys.exit(3)

SERVICE = "synapse.test.Peer"
SEP = b"|"


def _ident(b):
    return b


class Peer:
    def __init__(self, ident):
        self.id = ident.encode()
        self.lock = threading.Lock()
        self.calls = 0
        self.cancelled = 0
        self.deadline_ms = None

    def _count(self):
        with self.lock:
            self.calls += 1

    def hello(self, request, context):
        self._count()
        return self.id

    def sleep(self, request, context):
        self._count()
        try:
            ms = int(request.decode() or "0")
        except ValueError:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request: milliseconds")
        remaining = context.time_remaining()
        with self.lock:
            self.deadline_ms = None if remaining is None else int(remaining * 1000)
        end = time.monotonic() + ms / 1000.0
        while time.monotonic() < end:
            if not context.is_active():
                with self.lock:
                    self.cancelled += 1
                return self.id
            time.sleep(0.005)
        return self.id

    def unavailable(self, request, context):
        self._count()
        context.abort(grpc.StatusCode.UNAVAILABLE, "peer %s says unavailable" % self.id.decode())

    def stream(self, request, context):
        self._count()
        count, size = (int(x) for x in request.decode().split(","))
        head = self.id + SEP
        for i in range(count):
            fill = size - len(head)
            yield head + bytes([i % 251]) * max(fill, 0)

    def echo(self, requests, context):
        self._count()
        for msg in requests:
            yield msg

    def stats(self, request, context):
        with self.lock:
            return json.dumps(
                {
                    "id": self.id.decode(),
                    "calls": self.calls,
                    "cancelled": self.cancelled,
                    "deadline_ms": self.deadline_ms,
                }
            ).encode()


def serve(args):
    peer = Peer(args.id)
    u = dict(request_deserializer=_ident, response_serializer=_ident)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Hello": grpc.unary_unary_rpc_method_handler(peer.hello, **u),
            "Sleep": grpc.unary_unary_rpc_method_handler(peer.sleep, **u),
            "Unavailable": grpc.unary_unary_rpc_method_handler(peer.unavailable, **u),
            "Stream": grpc.unary_stream_rpc_method_handler(peer.stream, **u),
            "Echo": grpc.stream_stream_rpc_method_handler(peer.echo, **u),
            "Stats": grpc.unary_unary_rpc_method_handler(peer.stats, **u),
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.so_reuseport", 0)],
    )
    server.add_generic_rpc_handlers((handler,))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        sys.stderr.write("peer.py: cannot bind 127.0.0.1:%d\n" % args.port)
        sys.exit(2)
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch_stdin():
        # The harness holds our stdin: its end (the test process gone) stops us too.
        try:
            while sys.stdin.read(4096):
                pass
        except (OSError, ValueError):
            pass
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("PORT %d" % port, flush=True)
    done.wait()
    server.stop(5).wait()


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.phases = [{}]
        self.ok = 0
        self.codes = {}
        self.errors = []
        self.latencies = []

    def success(self, backend, latency):
        with self.lock:
            self.ok += 1
            phase = self.phases[-1]
            phase[backend] = phase.get(backend, 0) + 1
            self.latencies.append(latency)

    def failure(self, code, detail):
        with self.lock:
            self.codes[code] = self.codes.get(code, 0) + 1
            if len(self.errors) < 20:
                self.errors.append("%s: %s" % (code, detail))

    def mark(self):
        with self.lock:
            self.phases.append({})

    def result(self, extra=None):
        with self.lock:
            by_backend = {}
            for phase in self.phases:
                for k, v in phase.items():
                    by_backend[k] = by_backend.get(k, 0) + v
            lat = sorted(self.latencies)
            out = {
                "ok": self.ok,
                "failures": sum(self.codes.values()),
                "codes": self.codes,
                "errors": self.errors,
                "by_backend": by_backend,
                "phases": self.phases,
                "p50_ms": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
                "max_ms": round(lat[-1] * 1000, 3) if lat else None,
            }
        if extra:
            out.update(extra)
        return out


def code_name(err):
    try:
        return err.code().name
    except Exception:  # noqa: BLE001 - any failure is reported, not raised
        return "UNKNOWN"


def detail(err):
    try:
        return err.details()
    except Exception:  # noqa: BLE001
        return str(err)


def client(args):
    channel = grpc.insecure_channel(
        args.target,
        options=[
            # The test measures synapse, not grpcio's own retries.
            ("grpc.enable_retries", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
    )
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        print(json.dumps({"ok": 0, "failures": 1, "codes": {"CONNECT": 1},
                          "errors": ["channel not ready"], "by_backend": {}, "phases": []}))
        return 1
    u = dict(request_serializer=_ident, response_deserializer=_ident)
    m = lambda name: "/%s/%s" % (SERVICE, name)  # noqa: E731
    tally = Tally()
    extra = {}
    timeout = args.timeout_ms / 1000.0

    if args.mode == "unary":
        hello = channel.unary_unary(m("Hello"), **u)
        sem = threading.Semaphore(args.concurrency)
        all_done = threading.Semaphore(0)

        def done(fut, started):
            try:
                tally.success(fut.result().decode(), time.monotonic() - started)
            except grpc.RpcError as e:
                tally.failure(code_name(e), detail(e))
            sem.release()
            all_done.release()

        for _ in range(args.calls):
            sem.acquire()
            started = time.monotonic()
            f = hello.future(b"hi", timeout=timeout)
            f.add_done_callback(lambda fut, s=started: done(fut, s))
        for _ in range(args.calls):
            all_done.acquire()

    elif args.mode == "load":
        hello = channel.unary_unary(m("Hello"), **u)
        stop = threading.Event()
        outstanding = [0]
        cond = threading.Condition()

        def read_stdin():
            for line in sys.stdin:
                if line.strip() == "mark":
                    tally.mark()
                    print("MARKED", flush=True)
            stop.set()

        threading.Thread(target=read_stdin, daemon=True).start()

        def done(fut, started):
            try:
                tally.success(fut.result().decode(), time.monotonic() - started)
            except grpc.RpcError as e:
                tally.failure(code_name(e), detail(e))
            with cond:
                outstanding[0] -= 1
                cond.notify_all()

        # Calls go out in ticks of 10 ms, rate/100 per tick.
        tick = 0.01
        per_tick = max(1, int(round(args.rate * tick)))
        next_t = time.monotonic()
        sent = 0
        started_all = time.monotonic()
        print("STARTED", flush=True)
        while not stop.is_set():
            for _ in range(per_tick):
                started = time.monotonic()
                with cond:
                    outstanding[0] += 1
                f = hello.future(b"hi", timeout=timeout)
                f.add_done_callback(lambda fut, s=started: done(fut, s))
                sent += 1
            next_t += tick
            pause = next_t - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        with cond:
            cond.wait_for(lambda: outstanding[0] == 0, timeout=timeout + 5)
        elapsed = time.monotonic() - started_all
        extra = {"sent": sent, "seconds": round(elapsed, 3), "rate": round(sent / elapsed, 1)}

    elif args.mode in ("stream", "bidi"):
        started = time.monotonic()
        received = 0
        backend = None
        bad = None
        try:
            if args.mode == "stream":
                call = channel.unary_stream(m("Stream"), **u)
                replies = call(("%d,%d" % (args.count, args.size)).encode(), timeout=timeout)
                for i, msg in enumerate(replies):
                    ident, _, rest = msg.partition(SEP)
                    backend = ident.decode()
                    want = bytes([i % 251]) * len(rest)
                    if len(msg) != args.size or rest != want:
                        bad = bad or "message %d: %d bytes, wrong content" % (i, len(msg))
                    received += len(msg)
                count = i + 1 if received else 0
            else:
                call = channel.stream_stream(m("Echo"), **u)

                def messages():
                    for i in range(args.count):
                        yield bytes([i % 251]) * args.size

                count = 0
                for i, msg in enumerate(call(messages(), timeout=timeout)):
                    if msg != bytes([i % 251]) * args.size:
                        bad = bad or "message %d: %d bytes, wrong content" % (i, len(msg))
                    received += len(msg)
                    count += 1
            if bad or count != args.count:
                tally.failure("BAD_DATA", bad or "%d of %d messages" % (count, args.count))
            else:
                tally.success(backend or "echo", time.monotonic() - started)
        except grpc.RpcError as e:
            tally.failure(code_name(e), detail(e))
        extra = {"bytes": received}

    elif args.mode == "sleep":
        call = channel.unary_unary(m("Sleep"), **u)
        started = time.monotonic()
        try:
            reply = call(str(args.sleep_ms).encode(), timeout=timeout)
            tally.success(reply.decode(), time.monotonic() - started)
        except grpc.RpcError as e:
            tally.failure(code_name(e), detail(e))
        extra = {"elapsed_ms": round((time.monotonic() - started) * 1000, 1)}

    elif args.mode == "unavailable":
        call = channel.unary_unary(m("Unavailable"), **u)
        started = time.monotonic()
        try:
            reply = call(b"", timeout=timeout)
            tally.success(reply.decode(), time.monotonic() - started)
        except grpc.RpcError as e:
            tally.failure(code_name(e), detail(e))

    elif args.mode == "stats":
        call = channel.unary_unary(m("Stats"), **u)
        try:
            extra = {"stats": json.loads(call(b"", timeout=timeout))}
            tally.success(extra["stats"]["id"], 0)
        except grpc.RpcError as e:
            tally.failure(code_name(e), detail(e))

    channel.close()
    print(json.dumps(tally.result(extra)), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--id", required=True)
    s.add_argument("--port", type=int, default=0)
    c = sub.add_parser("client")
    c.add_argument("--target", required=True)
    c.add_argument("mode", choices=["unary", "load", "stream", "bidi", "sleep", "unavailable", "stats"])
    c.add_argument("--calls", type=int, default=100)
    c.add_argument("--concurrency", type=int, default=1)
    c.add_argument("--rate", type=int, default=1000)
    c.add_argument("--count", type=int, default=64)
    c.add_argument("--size", type=int, default=64 * 1024)
    c.add_argument("--sleep-ms", type=int, default=0)
    c.add_argument("--timeout-ms", type=int, default=10000)
    c.add_argument("--connect-timeout", type=float, default=10.0)
    args = ap.parse_args()
    if args.role == "server":
        serve(args)
        return 0
    return client(args)


if __name__ == "__main__":
    sys.exit(main())
