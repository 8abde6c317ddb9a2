#!/usr/bin/env python3
"""The soak's watcher of a migrated redis-server: ONE connection, one INCR every few milliseconds.

Each reply must be the previous one plus one: a smaller or equal value is a duplicated write (a copy of the
server that ran on from an older state), a jump a lost one. The longest wait for a reply is the downtime the
server's clients saw. Usage:

    soak_client.py HOST PORT STATUS_FILE [INTERVAL_MS]

It writes STATUS_FILE about every 50 ms, one line:

    requests=N lost=N duplicated=N errors=N window_max_gap_ms=F max_gap_ms=F last=N

SIGUSR1 starts a new window (window_max_gap_ms from 0), SIGTERM ends it: the last line is written once more and
it exits 0 if nothing was lost, duplicated or failed, 1 otherwise. A broken connection counts as an error, and the
client reconnects (a migration that keeps its connections never makes it).
"""
import os
import signal
import socket
import sys
import time

KEY = b"soak:seq"
REQUEST = b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n" % (len(KEY), KEY)


class Watcher:
    def __init__(self, host, port, status, interval):
        self.host, self.port, self.status, self.interval = host, port, status, interval
        self.requests = self.lost = self.duplicated = self.errors = 0
        self.window_gap = self.max_gap = 0.0
        self.last = None
        self.stop = False
        self.new_window = False
        self.sock = None
        self.buf = b""

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=60)
        self.sock.settimeout(60)
        self.buf = b""

    def reply(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b":"):
            raise ValueError("unexpected reply %r" % line[:80])
        return int(line[1:])

    def write_status(self):
        text = ("requests=%d lost=%d duplicated=%d errors=%d window_max_gap_ms=%.1f max_gap_ms=%.1f last=%s\n"
                % (self.requests, self.lost, self.duplicated, self.errors, self.window_gap * 1000,
                   self.max_gap * 1000, self.last))
        tmp = self.status + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.status)

    def run(self):
        self.connect()
        print("CONNECTED", flush=True)
        last_reply = time.monotonic()
        last_status = 0.0
        while not self.stop:
            if self.new_window:
                self.new_window = False
                self.window_gap = 0.0
            try:
                self.sock.sendall(REQUEST)
                value = self.reply()
            except (OSError, ValueError, ConnectionError) as e:
                self.errors += 1
                print("ERROR %s" % e, flush=True)
                time.sleep(0.1)
                try:
                    self.connect()
                except OSError:
                    pass
                continue
            now = time.monotonic()
            gap = now - last_reply
            last_reply = now
            self.window_gap = max(self.window_gap, gap)
            self.max_gap = max(self.max_gap, gap)
            if self.last is not None:
                if value <= self.last:
                    self.duplicated += self.last - value + 1
                elif value > self.last + 1:
                    self.lost += value - self.last - 1
            self.last = value
            self.requests += 1
            if now - last_status >= 0.05:
                self.write_status()
                last_status = now
            time.sleep(self.interval)
        self.write_status()
        ok = self.lost == 0 and self.duplicated == 0 and self.errors == 0
        print("%s requests=%d lost=%d duplicated=%d errors=%d max_gap_ms=%.1f"
              % ("OK" if ok else "FAILED", self.requests, self.lost, self.duplicated, self.errors,
                 self.max_gap * 1000), flush=True)
        return 0 if ok else 1


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    interval = (float(sys.argv[4]) if len(sys.argv) == 5 else 5.0) / 1000.0
    w = Watcher(sys.argv[1], int(sys.argv[2]), sys.argv[3], interval)
    signal.signal(signal.SIGTERM, lambda *_: setattr(w, "stop", True))
    signal.signal(signal.SIGUSR1, lambda *_: setattr(w, "new_window", True))
    return w.run()


if __name__ == "__main__":
    sys.exit(main())
