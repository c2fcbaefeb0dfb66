"""Throughput of gateway against RabbitMQ, measured side by side in one run.

    .venv/bin/python bench/run.py                      # both brokers, all scenarios
    .venv/bin/python bench/run.py --only rabbitmq      # RabbitMQ alone
    .venv/bin/python bench/run.py --messages 20000 --runs 1 --json

Starts a private RabbitMQ node and a gateway on free ports, then for each run, scenario and
client measures one publisher -> one queue -> one consumer on each broker in turn (the
brokers alternate, so drift on the machine hits both alike). Publisher and consumer are
separate processes (bench/clients.py). The figure is end-to-end: messages received divided
by the time from the publisher's first publish to the consumer's last message. The report
gives the median of the runs for each broker and the ratio gateway / RabbitMQ.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import CLK_TCK, BrokerStartError, Gateway, RabbitMQ  # noqa: E402

CLIENTS_PY = str(HERE / "clients.py")

SCENARIOS = {
    "autoack": {
        "ack": "auto",
        "confirm": False,
        "what": "no publisher confirms; consumer auto-ack",
    },
    "manualack": {
        "ack": "manual",
        "confirm": False,
        "what": "no publisher confirms; consumer manual ack, prefetch {prefetch}",
    },
    "confirms": {
        "ack": "auto",
        "confirm": True,
        "what": "publisher confirms, batches of {batch}; consumer auto-ack",
    },
    # not in the default --scenario list: run with --scenario persistent
    "persistent": {
        "ack": "auto",
        "confirm": True,
        "persistent": True,
        "what": "persistent messages (delivery_mode 2) to a durable queue (RabbitMQ: classic), "
        "publisher confirms, batches of {batch}; consumer auto-ack",
    },
    # the same without a consumer: every message must reach the disk before its confirm
    # (with a consumer keeping up, both brokers confirm what was consumed before it was
    # written without writing it); msg/s is the publisher's confirmed rate
    "persistent-backlog": {
        "ack": "auto",
        "confirm": True,
        "persistent": True,
        "consumer": False,
        "what": "persistent messages to a durable queue, publisher confirms, batches of "
        "{batch}; no consumer (the queue is deleted after each run)",
    },
}
CLIENT_NAMES = {
    "pika": "pika {pika} BlockingConnection (publisher and consumer; the batched-confirms "
    "publisher uses pika's SelectConnection, as BlockingConnection cannot batch confirms)",
    "raw": "raw socket client: pamqp {pamqp} handshake, pre-encoded frames (bench/clients.py)",
}
MAX_CONSECUTIVE_FAILURES = 3  # then that broker's remaining runs are skipped
SATURATED = 0.85  # a process using >= 85% of one core is taken to be CPU-bound


# --------------------------------------------------------------------------- helpers


class Lines:
    """Read a subprocess pipe line by line on a thread, so waits can have deadlines."""

    def __init__(self, pipe):
        self.q: queue.Queue[str | None] = queue.Queue()
        self.all: list[str] = []
        threading.Thread(target=self._run, args=(pipe,), daemon=True).start()

    def _run(self, pipe):
        for raw in pipe:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.all.append(line)
            self.q.put(line)
        self.q.put(None)

    def next(self, deadline: float) -> str | None:
        """The next line, None at end of file; raises TimeoutError at the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                return self.q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue


def json_result(lines: Lines, deadline: float) -> dict:
    while True:
        line = lines.next(deadline)
        if line is None:
            raise RuntimeError("client exited without a result")
        if line.startswith("{"):
            return json.loads(line)


def spawn_client(role: str, broker, qname: str, args, scen: dict, client: str, n: int):
    cmd = [
        sys.executable, CLIENTS_PY, role,
        "--client", client,
        "--host", broker.host,
        "--port", str(broker.port),
        "--queue", qname,
        "--messages", str(n),
        "--size", str(args.size),
        "--ack", scen["ack"],
        "--prefetch", str(args.prefetch),
        "--confirm-batch", str(args.confirm_batch),
        "--timeout", str(args.timeout),
    ]  # fmt: skip
    if scen["confirm"] and role == "publish":
        cmd.append("--confirm")
    if scen.get("persistent") and role == "publish":
        cmd.append("--persistent")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    return proc, Lines(proc.stdout), Lines(proc.stderr)


def machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return (0.0, 0.0)
    user, nice, system, idle, iowait, irq, softirq = v[:7]
    steal = v[7] if len(v) > 7 else 0
    return ((user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK)


def own_cpu() -> float:
    """CPU seconds of this runner plus its reaped children (the client processes)."""
    a = resource.getrusage(resource.RUSAGE_SELF)
    b = resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def reap(proc: subprocess.Popen, timeout: float = 10) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def admin(broker, fn):
    """Declare or delete the run's queue over a short pika connection."""
    import pika

    params = pika.ConnectionParameters(
        host=broker.host,
        port=broker.port,
        credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=10,
        stack_timeout=30,
        blocked_connection_timeout=30,
    )
    conn = pika.BlockingConnection(params)
    try:
        fn(conn.channel())
    finally:
        conn.close()


def run_once(broker, scenario: str, client: str, n: int, args, tag: str) -> dict:
    scen = SCENARIOS[scenario]
    qname = f"bench.{scenario}.{client}.{tag}.{os.getpid()}"
    res: dict = {"broker": broker.name, "scenario": scenario, "client": client, "messages": n}
    procs = []
    try:
        durable = bool(scen.get("persistent"))
        admin(broker, lambda ch: ch.queue_declare(qname, durable=durable, auto_delete=False))
        # whole-window accounting: machine, this runner and its clients, the broker
        m0, s0, w0, own0, b0 = *machine_cpu(), time.monotonic(), own_cpu(), broker.cpu_seconds()
        with_consumer = scen.get("consumer", True)
        if with_consumer:
            consumer, c_out, c_err = spawn_client("consume", broker, qname, args, scen,
                                                  client, n)
            procs.append((consumer, c_err))
            ready_deadline = time.monotonic() + 60
            while True:
                line = c_out.next(ready_deadline)
                if line is None:
                    raise RuntimeError("consumer exited before it was ready")
                if line == "ready":
                    break
                if line.startswith("{"):
                    raise RuntimeError(json.loads(line).get("error", line))
        cpu0 = broker.cpu_seconds()
        publisher, p_out, p_err = spawn_client("publish", broker, qname, args, scen, client, n)
        procs.append((publisher, p_err))
        deadline = time.monotonic() + args.timeout + 30
        pub = json_result(p_out, deadline)
        if with_consumer:
            con = json_result(c_out, deadline)
        else:  # the publisher's confirmed rate is the figure
            con = {"role": "consume", "received": pub.get("confirmed", 0),
                   "last": pub.get("last"), "cpu": 0.0}
        cpu1 = broker.cpu_seconds()
        for proc, _ in procs:
            reap(proc)
        m1, s1, w1, own1, b1 = *machine_cpu(), time.monotonic(), own_cpu(), broker.cpu_seconds()
        for r in (pub, con):
            if "error" in r:
                raise RuntimeError(f"{r['role']}: {r['error']}")
        if con["received"] < n or pub["sent"] < n:
            partial = ""
            if con["received"] and con["last"] and pub.get("first"):
                partial = f" ({con['received'] / (con['last'] - pub['first']):,.0f} msg/s so far)"
            raise RuntimeError(
                f"deadline: sent {pub['sent']}, received {con['received']} of {n}"
                f" within {args.timeout:g} s{partial}"
            )
        e2e = con["last"] - pub["first"]
        pub_wall = pub["last"] - pub["first"]
        ours = (own1 - own0) + ((b1 - b0) if b0 is not None and b1 is not None else 0.0)
        res.update(
            ok=True,
            seconds=e2e,
            rate=n / e2e,
            publish_seconds=pub_wall,
            publish_rate=n / pub_wall if pub_wall > 0 else None,
            publisher_cpu=pub["cpu"] / pub_wall if pub_wall > 0 else None,
            consumer_cpu=con["cpu"] / e2e,
            broker_cpu=(cpu1 - cpu0) / e2e if cpu0 is not None and cpu1 is not None else None,
            broker_cpu_us_per_msg=(cpu1 - cpu0) * 1e6 / n
            if cpu0 is not None and cpu1 is not None
            else None,
            confirm_batch=pub.get("confirm_batch"),
            publisher_api=pub.get("api"),
            close_errors=[r["close_error"] for r in (pub, con) if r.get("close_error")] or None,
            # cores busy with other processes on the machine during the run, and steal
            background_cpu=max(0.0, (m1 - m0) - ours) / (w1 - w0),
            steal_cpu=(s1 - s0) / (w1 - w0),
        )
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc)
        for proc, err in procs:
            if proc.poll() is None:
                proc.kill()
            tail = [x for x in err.all if x.strip()][-3:]
            if tail:
                detail += " | " + " / ".join(tail)
        res.update(ok=False, error=detail)
    finally:
        for proc, _ in procs:
            reap(proc)
        try:
            admin(broker, lambda ch: ch.queue_delete(qname))
        except Exception:
            pass
    return res


# --------------------------------------------------------------------------- reporting


def machine_facts() -> dict:
    facts = {
        "cores": os.cpu_count(),
        "nproc": None,
        "cpu": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        facts["nproc"] = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import pika

        facts["pika"] = pika.__version__
    except Exception:
        facts["pika"] = "?"
    try:
        from importlib.metadata import version

        facts["pamqp"] = version("pamqp")
    except Exception:
        facts["pamqp"] = "?"
    erl = shutil.which("erl")
    if erl:
        try:
            facts["erlang_otp"] = subprocess.run(
                [erl, "-noshell", "-eval",
                 'R = erlang:system_info(otp_release), '
                 'F = filename:join([code:root_dir(), "releases", R, "OTP_VERSION"]), '
                 'V = case file:read_file(F) of {ok, B} -> string:trim(B); _ -> R end, '
                 'io:format("~s", [V]), halt().'],
                capture_output=True, text=True, timeout=30,
            ).stdout.strip()  # fmt: skip
        except Exception:
            pass
    return facts


def summarize(results: list[dict], brokers: list[str], args) -> list[dict]:
    rows = []
    for scenario in args.scenarios:
        for client in args.clients:
            row = {"scenario": scenario, "client": client, "brokers": {}}
            for b in brokers:
                runs = [
                    r
                    for r in results
                    if r["broker"] == b and r["scenario"] == scenario and r["client"] == client
                ]
                ok = [r for r in runs if r.get("ok")]
                entry = {"runs": len(runs), "ok": len(ok)}
                if ok:
                    entry["rate"] = statistics.median(r["rate"] for r in ok)
                    entry["rates"] = [round(r["rate"]) for r in ok]
                    for k in ("publish_rate", "publisher_cpu", "consumer_cpu", "broker_cpu",
                              "broker_cpu_us_per_msg", "background_cpu", "steal_cpu"):  # fmt: skip
                        vals = [r[k] for r in ok if r.get(k) is not None]
                        entry[k] = statistics.median(vals) if vals else None
                else:
                    entry["errors"] = sorted({r.get("error", "?") for r in runs})
                row["brokers"][b] = entry
            g, r = row["brokers"].get("gateway", {}), row["brokers"].get("rabbitmq", {})
            row["ratio"] = g["rate"] / r["rate"] if g.get("rate") and r.get("rate") else None
            row["notes"] = bottleneck_notes(row, args)
            rows.append(row)
    return rows


def bottleneck_notes(row: dict, args) -> list[str]:
    notes = []
    measured = {b: e for b, e in row["brokers"].items() if e.get("rate")}
    if not measured:
        return notes
    pub_bound = all((e.get("publisher_cpu") or 0) >= SATURATED for e in measured.values())
    con_bound = all((e.get("consumer_cpu") or 0) >= SATURATED for e in measured.values())
    if pub_bound:
        notes.append("publisher process at >=85% of a core on every broker: client-bound")
    if con_bound:
        notes.append("consumer process at >=85% of a core on every broker: client-bound")
    if row["ratio"] is not None and 0.95 <= row["ratio"] <= 1.05 and (pub_bound or con_bound):
        notes.append(
            "both brokers give the same rate and the client is saturated: this row measures "
            "the client, not the brokers (compare the raw client row)"
        )
    if not (pub_bound or con_bound):
        for b, e in measured.items():
            if (e.get("broker_cpu") or 0) >= SATURATED:
                notes.append(
                    f"{b}: clients below 85% of a core, broker at "
                    f"{100 * e['broker_cpu']:.0f}%: the broker sets the pace"
                )
    ncpu = args.facts.get("nproc") or args.facts.get("cores") or 1
    for b, e in measured.items():
        total = sum(e.get(k) or 0 for k in ("publisher_cpu", "consumer_cpu", "broker_cpu"))
        if total >= 0.9 * ncpu:
            notes.append(
                f"{b}: publisher + consumer + broker used {total:.2f} of {ncpu} cores: "
                "the machine's CPUs are the limit"
            )
    return notes


def fmt_rate(x) -> str:
    return f"{x:,.0f}" if x else "-"


def fmt_pct(x) -> str:
    return f"{100 * x:.0f}%" if x is not None else "-"


def print_report(rows, args, broker_info, start_errors, out=sys.stdout) -> None:
    f = args.facts
    w = out.write
    persistent = [s for s in args.scenarios if SCENARIOS[s].get("persistent")]
    kind = "persistent" if len(persistent) == len(args.scenarios) else (
        "transient and persistent" if persistent else "transient")
    w("\n")
    w(
        f"gateway benchmark: 1 publisher -> 1 queue -> 1 consumer, {args.messages:,} x "
        f"{args.size}-byte {kind} messages, median of {args.runs} run(s)\n"
    )
    w(
        f"machine: {f.get('nproc') or f.get('cores')} cores (nproc), {f.get('cpu') or '?'}; "
        f"Python {f['python']}; {f['platform']}\n"
    )
    for name, info in broker_info.items():
        w(f"{name}: {info}\n")
    for name, err in start_errors.items():
        w(f"{name}: NOT MEASURED, did not start: {err.splitlines()[0]}\n")
    versions = {"pika": f.get("pika", "?"), "pamqp": f.get("pamqp", "?")}
    for c in args.clients:
        w(f"client {c} = {CLIENT_NAMES[c].format(**versions)}\n")
    w("msg/s = messages / (last consumed - first published); publish = publisher's own rate;\n")
    w("CPU = share of one core used by that process during the run (100% = one core);\n")
    w("other = CPU used meanwhile by processes outside the benchmark (100% = one core)\n")
    for s in args.scenarios:
        w(
            f"{s}: "
            + SCENARIOS[s]["what"].format(prefetch=args.prefetch, batch=args.confirm_batch)
            + "\n"
        )
    w("\n")
    hdr = (
        f"{'scenario':<10} {'client':<6} {'broker':<9} {'msg/s':>9} {'publish':>9} "
        f"{'pub CPU':>7} {'con CPU':>7} {'brk CPU':>7} {'brk us/msg':>10} {'other':>5}"
        f"  runs (msg/s)\n"
    )
    w(hdr)
    w("-" * (len(hdr) + 10) + "\n")
    for row in rows:
        first = True
        for b, e in row["brokers"].items():
            lead = f"{row['scenario']:<10} {row['client']:<6}" if first else " " * 17
            first = False
            if e.get("rate"):
                us = e.get("broker_cpu_us_per_msg")
                w(
                    f"{lead} {b:<9} {fmt_rate(e['rate']):>9} {fmt_rate(e.get('publish_rate')):>9} "
                    f"{fmt_pct(e.get('publisher_cpu')):>7} {fmt_pct(e.get('consumer_cpu')):>7} "
                    f"{fmt_pct(e.get('broker_cpu')):>7} {(f'{us:.1f}' if us else '-'):>10} "
                    f"{fmt_pct(e.get('background_cpu')):>5}  "
                    f"{e['ok']}/{e['runs']} {e['rates']}\n"
                )
            else:
                errs = "; ".join(e.get("errors", []))[:200]
                w(f"{lead} {b:<9} {'FAILED':>9}  {e['ok']}/{e['runs']} ok: {errs}\n")
        if row["ratio"] is not None:
            w(f"{'':<17} ratio gateway/rabbitmq = {row['ratio']:.2f}\n")
        for note in row["notes"]:
            w(f"{'':<17} note: {note}\n")
    bg = [
        e["background_cpu"]
        for row in rows
        for e in row["brokers"].values()
        if e.get("background_cpu") is not None
    ]
    if bg and max(bg) >= 0.25:
        w(
            f"\nnote: processes outside the benchmark used {min(bg):.1f} to {max(bg):.1f} cores "
            f"during the runs (column 'other'): the absolute figures are depressed and noisy; "
            f"the ratio, from alternating runs, less so\n"
        )
    w("\n")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Throughput of gateway vs RabbitMQ, side by side (see bench/README.md)."
    )
    p.add_argument("--messages", type=int, default=100000, help="messages per run (100000)")
    p.add_argument("--size", type=int, default=100, help="message body bytes (100)")
    p.add_argument("--runs", type=int, default=3, help="runs per case; the median is reported")
    p.add_argument("--only", choices=["rabbitmq", "gateway"], help="measure one broker only")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument(
        "--scenario",
        default="autoack,manualack,confirms",
        help="comma list of: " + ", ".join(SCENARIOS) + " (all)",
    )
    p.add_argument("--client", default="pika,raw", help="comma list of: pika, raw (both)")
    p.add_argument("--prefetch", type=int, default=100, help="prefetch in manualack (100)")
    p.add_argument(
        "--confirm-batch",
        type=int,
        default=100,
        help="confirms scenario: publish this many, wait for their confirms, repeat (100)",
    )
    p.add_argument("--warmup", type=int, default=10000, help="warm-up messages per broker")
    p.add_argument("--timeout", type=float, default=120.0, help="deadline per run, seconds")
    p.add_argument("--rabbitmq-port", type=int, default=35672, help="first port to try")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    args.clients = [c.strip() for c in args.client.split(",") if c.strip()]
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}")
    for c in args.clients:
        if c not in CLIENT_NAMES:
            p.error(f"unknown client {c!r}")
    if args.messages < 1 or args.runs < 1 or args.size < 0:
        p.error("--messages and --runs must be >= 1, --size >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)

    def progress(msg: str) -> None:
        # on stderr, unless --json without -v: a full run takes minutes
        if args.verbose or not args.json:
            print(msg, file=sys.stderr, flush=True)

    args.facts = machine_facts()
    wanted = ["rabbitmq", "gateway"] if not args.only else [args.only]
    brokers = []
    broker_info: dict[str, str] = {}
    start_errors: dict[str, str] = {}
    results: list[dict] = []
    t_start = time.monotonic()
    try:
        for name in wanted:
            try:
                if name == "rabbitmq":
                    b = RabbitMQ(port=args.rabbitmq_port, verbose=progress).start()
                    broker_info[name] = (
                        f"RabbitMQ {b.version} (Erlang/OTP {args.facts.get('erlang_otp', '?')}), "
                        f"private node {b.nodename} on {b.host}:{b.port}, default settings"
                    )
                else:
                    b = Gateway(verbose=progress).start()
                    broker_info[name] = f"gateway {b.version} on {b.host}:{b.port}"
                brokers.append(b)
                progress(f"{name}: listening on {b.host}:{b.port}")
            except BrokerStartError as exc:
                start_errors[name] = str(exc)
                progress(f"{name}: did not start: {exc}")
        if args.warmup > 0:
            for b in brokers:
                for client in args.clients:
                    progress(f"warm-up: {b.name} {client} {min(args.warmup, args.messages)} msgs")
                    w = run_once(b, "autoack", client, min(args.warmup, args.messages), args, "w")
                    if not w["ok"]:
                        progress(f"warm-up: {b.name} {client} FAILED {w['error']}")
        failures = {b.name: 0 for b in brokers}  # consecutive failed runs per broker
        for i in range(args.runs):
            for scenario in args.scenarios:
                for client in args.clients:
                    for b in brokers:
                        if failures[b.name] >= MAX_CONSECUTIVE_FAILURES:
                            results.append({
                                "broker": b.name, "scenario": scenario, "client": client,
                                "messages": args.messages, "run": i + 1, "ok": False,
                                "error": f"skipped after {MAX_CONSECUTIVE_FAILURES} "
                                         "consecutive failed runs",
                            })  # fmt: skip
                            continue
                        r = run_once(b, scenario, client, args.messages, args, str(i))
                        r["run"] = i + 1
                        results.append(r)
                        failures[b.name] = 0 if r["ok"] else failures[b.name] + 1
                        gone = b.alive()
                        if gone:  # no point in further runs on it
                            if not r["ok"]:
                                r["error"] = f"{r.get('error', '')} [broker died: {gone}]"
                            failures[b.name] = MAX_CONSECUTIVE_FAILURES
                        if r["ok"]:
                            progress(
                                f"run {i + 1}/{args.runs} {scenario:<9} {client:<4} {b.name:<8} "
                                f"{r['rate']:>9,.0f} msg/s"
                            )
                        else:
                            progress(
                                f"run {i + 1}/{args.runs} {scenario:<9} {client:<4} {b.name:<8} "
                                f"FAILED {r['error']}"
                            )
    finally:
        for b in brokers:
            b.stop()
    rows = summarize(results, [b.name for b in brokers], args)
    if args.json:
        out = {
            "machine": args.facts,
            "settings": {
                k: getattr(args, k)
                for k in (
                    "messages",
                    "size",
                    "runs",
                    "scenarios",
                    "clients",
                    "prefetch",
                    "confirm_batch",
                    "warmup",
                    "timeout",
                )
            },
            "brokers": broker_info,
            "not_started": start_errors,
            "summary": rows,
            "runs": results,
            "elapsed_seconds": time.monotonic() - t_start,
        }
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_report(rows, args, broker_info, start_errors)
        for name, err in start_errors.items():
            print(f"{name} start failure:\n{err}\n", file=sys.stderr)
    failed = bool(start_errors) or any(not r["ok"] for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
