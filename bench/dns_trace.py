#!/usr/bin/env python3
"""Where a DNS answer's time goes, read from a kernel trace of `dns-bench` (bench/dns-trace.sh).

The trace holds the scheduler's wake-ups and switches and every system call's entry and exit,
with one clock for both CPUs. A query is the bench client's `sendto` entry up to its `recvfrom`
exit; what the client, the proxy's DNS thread and the upstream did in between splits it into
segments, e.g. for a cache miss:

    wake       client sendto entry -> the proxy's epoll_wait returns
    query      -> the proxy's sendto to the upstream begins
    send up    that sendto
    upstream   -> the proxy has read the upstream's reply (the upstream's work and two switches)
    reply      -> the netlink sendmsg that inserts the addresses begins
    insert     that sendmsg (the kernel's whole transaction)
    answer     -> the answer's sendto begins
    to client  -> the client's recvfrom returns (the network stack and waking the client)

A cache hit has no upstream: its query segment runs to the insert. A direct query of the upstream
has three: waking the upstream, its work up to its reply's sendmsg, the reply reaching the client.

In a quiet hour the medians of the proxy's own segments over ~1 500 queries repeat within 2-3 µs
from run to run, where end-to-end latencies do not. Tracing makes every system call dearer: the
absolute figures are above untraced ones, and a change that saves system calls looks better here
than it is, so confirm a gain untraced (bench/dns.sh). Usage: dns_trace.py TRACE_FILE
"""

import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass

# x86_64 system call numbers (raw_syscalls events carry only the number).
SENDTO, RECVFROM, SENDMSG, POLL, EPOLL_WAIT = 44, 45, 46, 7, 232

LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\[(\d+)\]\s+\S+\s+([\d.]+):\s+(\w+):\s+(.*)$")


@dataclass
class Event:
    """One trace line: a system call entry or exit, or a scheduler event."""

    micros: float
    comm: str
    tid: int
    cpu: int
    kind: str
    detail: str

    def syscall(self, kind, number):
        """Whether this is the entry (`sys_enter`) or exit (`sys_exit`) of syscall `number`."""
        return self.kind == kind and self.detail.startswith(f"NR {number} ")

    def returned(self):
        """A syscall exit's return value."""
        return int(self.detail.rsplit("=", 1)[1])


def read(path):
    """Every event of the trace file at `path`, in the file's order."""
    events = []
    with open(path, encoding="utf-8", errors="replace") as trace:
        for line in trace:
            match = LINE.match(line)
            if match:
                comm, tid, cpu, seconds, kind, detail = match.groups()
                events.append(Event(float(seconds) * 1e6, comm, int(tid), int(cpu), kind, detail))
    return events


def queries(events, client):
    """(first, last) event indexes of each of the client's queries."""
    spans, start = [], None
    for index, event in enumerate(events):
        if event.tid != client:
            continue
        if event.syscall("sys_enter", SENDTO):
            start = index
        elif event.syscall("sys_exit", RECVFROM) and start is not None:
            spans.append((start, index))
            start = None
    return spans


def first(events, predicate, after=None):
    """The first event matching `predicate` (at or after the time `after`), or None."""
    return next(
        (e for e in events if predicate(e) and (after is None or e.micros >= after)), None
    )


def proxy_segments(span, proxy):
    """A proxy query's segments (a miss: two sendto, a hit: one), or None if incomplete."""
    own = [e for e in span if e.tid == proxy]
    sends = [e for e in own if e.syscall("sys_enter", SENDTO)]
    woke = first(own, lambda e: e.syscall("sys_exit", EPOLL_WAIT))
    insert = first(own, lambda e: e.syscall("sys_enter", SENDMSG))
    if woke is None or insert is None or not sends:
        return None
    inserted = first(own, lambda e: e.syscall("sys_exit", SENDMSG), insert.micros)
    answer = first(sends, lambda e: True, inserted.micros) if inserted else None
    if inserted is None or answer is None:
        return None
    begin, end = span[0].micros, span[-1].micros
    if len(sends) == 1:
        return "hit", {
            "wake": woke.micros - begin,
            "query": insert.micros - woke.micros,
            "insert": inserted.micros - insert.micros,
            "answer": answer.micros - inserted.micros,
            "to client": end - answer.micros,
            "total": end - begin,
        }
    upstream = sends[0]
    sent = first(own, lambda e: e.syscall("sys_exit", SENDTO), upstream.micros)
    reply = first(
        own,
        lambda e: e.syscall("sys_exit", RECVFROM) and e.returned() > 0,
        sent.micros if sent else None,
    )
    if sent is None or reply is None or not sent.micros <= reply.micros <= insert.micros:
        return None
    return "miss", {
        "wake": woke.micros - begin,
        "query": upstream.micros - woke.micros,
        "send up": sent.micros - upstream.micros,
        "upstream": reply.micros - sent.micros,
        "reply": insert.micros - reply.micros,
        "insert": inserted.micros - insert.micros,
        "answer": answer.micros - inserted.micros,
        "to client": end - answer.micros,
        "total": end - begin,
    }


def direct_segments(span, upstream):
    """A direct query's segments: waking the upstream, its work, its reply reaching the client."""
    own = [e for e in span if e.tid == upstream]
    woke = first(own, lambda e: e.syscall("sys_exit", POLL))
    reply = first(own, lambda e: e.syscall("sys_enter", SENDMSG))
    if woke is None or reply is None:
        return None
    begin, end = span[0].micros, span[-1].micros
    return {
        "wake": woke.micros - begin,
        "upstream": reply.micros - woke.micros,
        "to client": end - reply.micros,
        "total": end - begin,
    }


def upstream_of(events, spans, proxies):
    """The upstream the proxy forwards to: the process most woken by a proxy thread's sendto."""
    woken = defaultdict(int)
    for first_index, last_index in spans:
        for event in events[first_index : last_index + 1]:
            if event.tid in proxies and event.kind == "sched_waking" and "dnsmasq" in event.detail:
                woken[int(re.search(r"pid=(\d+)", event.detail).group(1))] += 1
    return max(woken, key=woken.get) if woken else None


def report(title, rows):
    """Prints the median and mean of each segment of `rows`."""
    if not rows:
        print(f"{title}: none found")
        return
    print(f"{title} ({len(rows)} queries), µs:")
    for name in rows[0]:
        values = [row[name] for row in rows]
        print(
            f"  {name:10} p50 {statistics.median(values):7.1f}   mean {statistics.mean(values):7.1f}"
        )


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: dns_trace.py TRACE_FILE")
    events = read(sys.argv[1])
    client = next((e.tid for e in events if e.comm == "dns-bench"), None)
    proxies = {e.tid for e in events if e.comm.startswith("shield-dns-")}
    if client is None or not proxies:
        sys.exit("dns_trace.py: no dns-bench client or shield-dns thread in the trace")
    spans = queries(events, client)
    upstream = upstream_of(events, spans, proxies)
    found = defaultdict(list)
    for first_index, last_index in spans:
        span = events[first_index : last_index + 1]
        tids = {e.tid for e in span}
        proxy = next(iter(tids & proxies), None)
        if proxy is not None:
            segments = proxy_segments(span, proxy)
            if segments:
                found[segments[0]].append(segments[1])
        elif upstream in tids:
            segments = direct_segments(span, upstream)
            if segments:
                found["direct"].append(segments)
    report("shield proxy, cache miss", found["miss"])
    report("shield proxy, cache hit", found["hit"])
    report("direct query of the same upstream", found["direct"])


if __name__ == "__main__":
    main()
