"""`make bench`: gateway beside RabbitMQ (AMQP, MQTT and STOMP plugins) and Mosquitto, every
scenario of the benchmark issue, one table.

    .venv/bin/python bench/suite.py              # full run (about 10-15 minutes on 2 cores)
    .venv/bin/python bench/suite.py --quick      # a tenth of the messages, 1 round
    .venv/bin/python bench/suite.py --scenario mqtt-qos0,stomp --rounds 3

Starts gateway, a private RabbitMQ node and Mosquitto on free loopback ports (bench/brokers.py),
and bench/sink.py (the generator's ceiling). The targets `gw-rmq` and `gw-rmq-2w` are gateway
with `--backend rabbitmq` in front of that RabbitMQ node (its management plugin then on), with
one worker and with two (`--workers 2`); they run the scenarios marked `rmq` (MQTT QoS 0 and
1, STOMP) and log in as RabbitMQ's guest. For each scenario it runs the load generator
(bench/loadgen.py, one process per run) against every target that speaks the protocol, in
alternation (A B C A B C ...), `--rounds` times, and reports medians: msgs/s (deliveries),
MB/s (payload bytes delivered), p50/p99 one-way latency (paced scenarios), the broker's peak
RSS during the run (VmHWM of its process, reset before each run; RabbitMQ's is the Erlang VM,
beam.smp), and the median over rounds of the per-round ratio gateway / peer.

On a machine with 2 or more cores every broker (and the sink) is pinned to core 0 and the
generator to core 1 (sched_setaffinity), so the generator never competes with the broker it
measures; except gw-rmq-2w, whose two workers are not pinned (they and the generator share
both cores; gw-rmq shares core 0 with the RabbitMQ node it fronts). Every run is bounded
in messages and seconds; the suite stops every process it started, by PID (RabbitMQ by its
private node name), whatever happens.

Writes bench/results/latest.md (the table and the conditions), latest.json (every run) and
latest.png (the chart, with matplotlib when it is installed: `pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from brokers import (  # noqa: E402
    BrokerStartError,
    Gateway,
    Mosquitto,
    RabbitMQ,
    reset_peak_rss,
    status_kb,
)

LOADGEN = str(HERE / "loadgen.py")
SINK = str(HERE / "sink.py")
NOFILE = 65536
GATEWAY_CONFIG = "[limits]\nmax_connections = 30000\n"

# name, protocol, spec for the generator, messages (full run), targets, goal for gateway
# goal: (peer, minimum ratio) for throughput, ("p99_us", limit) or ("rss_mb", limit)
SCENARIOS: list[dict[str, Any]] = [
    {"name": "mqtt-idle-10k", "proto": "mqtt", "size": 0, "messages": 0,
     "spec": {"mode": "idle", "connections": 10_000}, "goal": ("rss_mb", 150.0),
     "what": "run first, on fresh brokers: 10,000 idle MQTT connections (CONNECT/CONNACK, "
             "keepalive 0); the broker's RSS with all of them open"},
    {"name": "amqp-noack-100B", "proto": "amqp", "size": 100, "messages": 150_000,
     "spec": {}, "sink": True, "goal": ("rabbitmq", 1.0),
     "what": "AMQP 1 -> 1 queue -> 1, 100 B, consumer no-ack"},
    {"name": "amqp-noack-4KiB", "proto": "amqp", "size": 4096, "messages": 50_000,
     "spec": {}, "sink": True, "goal": ("rabbitmq", 1.0),
     "what": "AMQP 1 -> 1, 4 KiB, no-ack"},
    {"name": "amqp-ack-100B", "proto": "amqp", "size": 100, "messages": 100_000,
     "spec": {"ack": "manual", "prefetch": 100}, "goal": ("rabbitmq", 1.0),
     "what": "AMQP 1 -> 1, 100 B, manual ack (multiple, once per read), prefetch 100"},
    {"name": "amqp-ack-4KiB", "proto": "amqp", "size": 4096, "messages": 40_000,
     "spec": {"ack": "manual", "prefetch": 100}, "goal": ("rabbitmq", 1.0),
     "what": "AMQP 1 -> 1, 4 KiB, manual ack, prefetch 100"},
    {"name": "amqp-persist-100B", "proto": "amqp", "size": 100, "messages": 50_000,
     "spec": {"confirm": True, "persistent": True, "window": 1000},
     "goal": ("rabbitmq", 1.0),
     "what": "AMQP 1 -> durable queue -> 1, 100 B persistent, publisher confirms "
             "(1,000 unconfirmed at most), no-ack consumer"},
    {"name": "amqp-persist-4KiB", "proto": "amqp", "size": 4096, "messages": 30_000,
     "spec": {"confirm": True, "persistent": True, "window": 1000},
     "goal": ("rabbitmq", 1.0), "what": "as above, 4 KiB"},
    {"name": "amqp-fanout-x10", "proto": "amqp", "size": 100, "messages": 20_000,
     "spec": {"fanout": 10}, "goal": ("rabbitmq", 1.0),
     "what": "AMQP fanout exchange -> 10 queues -> 10 no-ack consumers, 100 B "
             "(msgs/s counts deliveries)"},
    {"name": "mqtt-qos0", "proto": "mqtt", "size": 100, "messages": 100_000,
     "spec": {"qos": 0}, "sink": True, "goal": ("mosquitto", 0.5),
     "what": "MQTT 3.1.1 QoS 0, 1 -> 1, 100 B"},
    {"name": "mqtt-qos1", "proto": "mqtt", "size": 100, "messages": 30_000,
     "spec": {"qos": 1, "window": 100}, "goal": ("mosquitto", 0.5),
     "what": "MQTT QoS 1 publish and subscription, 1 -> 1, 100 B, 100 unacknowledged at most"},
    {"name": "mqtt-fanout-50", "proto": "mqtt", "size": 100, "messages": 4_000,
     "spec": {"qos": 0, "subscribers": 50, "wildcard": True}, "sink": True,
     "goal": ("mosquitto", 0.5),
     "what": "MQTT QoS 0, 1 publisher -> 50 subscribers of a + wildcard filter, 100 B "
             "(msgs/s counts deliveries)"},
    {"name": "mqtt-fanin-50", "proto": "mqtt", "size": 100, "messages": 100_000,
     "spec": {"qos": 0, "publishers": 50}, "sink": True, "goal": None,
     "what": "MQTT QoS 0, 50 publishers -> 1 subscriber, 100 B"},
    {"name": "stomp-queue", "proto": "stomp", "size": 100, "messages": 100_000,
     "spec": {}, "sink": True, "goal": ("rabbitmq", 1.0),
     "what": "STOMP 1.2 SEND /queue/x -> 1 subscriber (ack:auto), 100 B"},
    {"name": "amqp-latency-1k", "proto": "amqp", "size": 100, "messages": 3_000,
     "spec": {"mode": "latency", "rate": 1000}, "goal": ("p99_us", 1000.0),
     "what": "AMQP 1 -> 1 no-ack, 100 B paced at 1,000 msg/s; one-way latency "
             "(send stamp in the payload)"},
    {"name": "mqtt-latency-1k", "proto": "mqtt", "size": 100, "messages": 3_000,
     "spec": {"mode": "latency", "rate": 1000, "qos": 0}, "goal": ("p99_us", 1000.0),
     "what": "MQTT QoS 0 1 -> 1, 100 B paced at 1,000 msg/s; one-way latency"},
]
SPEAKS = {"amqp": ("gateway", "rabbitmq"), "mqtt": ("gateway", "mosquitto", "rabbitmq"),
          "stomp": ("gateway", "rabbitmq")}
# gateway --backend rabbitmq in front of the rabbitmq target's node: workers of each
RMQ_TARGETS = {"gw-rmq": 1, "gw-rmq-2w": 2}
# their messages per run (the scenario's own count would outlast --run-seconds: every
# message crosses the gateway twice and RabbitMQ once)
RMQ_SCENARIOS = {"mqtt-qos0": 20_000, "mqtt-qos1": 6_000, "stomp-queue": 20_000}


def machine_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {"nproc": os.cpu_count(), "python": platform.python_version(),
                             "platform": platform.platform(), "cpu": "?"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return facts


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def loadavg() -> tuple[float, float, float]:
    a, b, c = os.getloadavg()
    return (a, b, c)


class Runner:
    def __init__(self, args: argparse.Namespace, log: Callable[[str], None]) -> None:
        self.args = args
        self.log = log
        pin = (os.cpu_count() or 1) >= 2 and not args.no_pin
        self.broker_cpu = 0 if pin else None
        self.gen_cpu = 1 if pin else None
        self.brokers: dict[str, Any] = {}
        self.sink: subprocess.Popen[bytes] | None = None
        self.sink_ports: dict[str, int] = {}
        self.runs: list[dict[str, Any]] = []
        self.not_started: dict[str, str] = {}

    # ---------------------------------------------------------------- processes

    def start(self) -> None:
        wanted = list(self.args.targets)
        rmq = [t for t in RMQ_TARGETS if t in wanted]
        if rmq and "rabbitmq" not in wanted:
            wanted.append("rabbitmq")  # the node they front
        plugins = ("rabbitmq_mqtt", "rabbitmq_stomp") + (("rabbitmq_management",) if rmq else ())
        makers: dict[str, Callable[[], Any]] = {
            "gateway": lambda: Gateway(protocols=("amqp", "mqtt", "stomp"),
                                       config_text=GATEWAY_CONFIG, cpu=self.broker_cpu,
                                       nofile=NOFILE, verbose=self.log),
            "rabbitmq": lambda: RabbitMQ(plugins=plugins,
                                         cpu=self.broker_cpu, nofile=NOFILE,
                                         verbose=self.log),
            "mosquitto": lambda: Mosquitto(cpu=self.broker_cpu, nofile=NOFILE,
                                           verbose=self.log),
        }
        for name in ("gateway", "rabbitmq", "mosquitto"):
            if name not in wanted:
                continue
            try:
                self.brokers[name] = makers[name]().start()
                self.log(f"{name} {self.brokers[name].version}: {self.brokers[name].ports}")
            except BrokerStartError as exc:
                self.not_started[name] = str(exc)
                self.log(f"{name}: did not start: {exc}")
        for name in rmq:
            upstream = self.brokers.get("rabbitmq")
            if upstream is None:
                self.not_started[name] = "the rabbitmq target did not start"
                continue
            workers = RMQ_TARGETS[name]
            try:
                # one worker pinned as the other brokers are (it shares core 0 with the
                # RabbitMQ node it fronts); two workers unpinned, to use both cores
                self.brokers[name] = Gateway(
                    protocols=("mqtt", "stomp"), config_text=GATEWAY_CONFIG,
                    cpu=self.broker_cpu if workers == 1 else None, nofile=NOFILE,
                    verbose=self.log, upstream=upstream, workers=workers, name=name).start()
                self.log(f"{name} {self.brokers[name].version}: {self.brokers[name].ports}")
            except BrokerStartError as exc:
                self.not_started[name] = str(exc)
                self.log(f"{name}: did not start: {exc}")
        if "sink" in wanted:
            cmd = [sys.executable, SINK]
            if self.broker_cpu is not None:
                cmd += ["--cpu", str(self.broker_cpu)]
            self.sink = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
            assert self.sink.stdout is not None
            self.sink_ports = json.loads(self.sink.stdout.readline())

    def stop(self) -> None:
        for b in self.brokers.values():
            try:
                b.stop()
            except Exception as exc:  # keep stopping the others
                self.log(f"{b.name}: stop failed: {exc}")
        if self.sink is not None and self.sink.poll() is None:
            self.sink.terminate()
            try:
                self.sink.wait(10)
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait(5)

    # ---------------------------------------------------------------- runs

    def spec_for(self, scen: dict[str, Any], target: str, tag: str) -> dict[str, Any]:
        quick = self.args.quick
        messages = RMQ_SCENARIOS[scen["name"]] if target in RMQ_TARGETS else scen["messages"]
        spec = {"proto": scen["proto"], "mode": "throughput", "size": scen["size"],
                "messages": max(1, messages // (10 if quick else 1)),
                "host": "127.0.0.1", "tag": tag, "deadline": self.args.run_seconds,
                "cpu": self.gen_cpu, "idle_end": 5.0}
        spec.update(scen["spec"])
        if spec["mode"] == "latency" and quick:
            spec["messages"] = 1000
        if spec["mode"] == "idle":
            spec["connections"] = self.args.idle_connections or (
                2000 if quick else spec["connections"])
            spec["deadline"] = 120
        if target == "sink":
            spec.update(proto="sink", sink_proto=scen["proto"], **{
                "discard_port": self.sink_ports["discard"],
                "stream_port": self.sink_ports["stream"]})
        else:
            spec["port"] = self.brokers[target].ports[scen["proto"]]
        if target in RMQ_TARGETS:
            spec["login"] = ["guest", "guest"]  # RabbitMQ's users: no anonymous login
        return spec

    def run_once(self, scen: dict[str, Any], target: str, rnd: int) -> dict[str, Any]:
        tag = f"{scen['name']}-{target}-{rnd}-{time.monotonic_ns() % 10**9}"
        spec = self.spec_for(scen, target, tag)
        pid = None if target == "sink" else self.brokers[target].pid
        # the processes whose peak RSS is summed: the workers of gw-rmq-2w, else the broker
        pids = [] if target == "sink" else getattr(self.brokers[target], "pids", [pid])
        for p in pids:
            if p:
                reset_peak_rss(p)
        # CPU seconds the run costs the broker (and, for gw-rmq*, the RabbitMQ node it fronts)
        broker = None if target == "sink" else self.brokers[target]
        upstream = self.brokers.get("rabbitmq") if target in RMQ_TARGETS else None
        cpu0 = (broker.cpu_seconds() if broker else None,
                upstream.cpu_seconds() if upstream else None)
        rec: dict[str, Any] = {"scenario": scen["name"], "target": target, "round": rnd,
                               "size": scen["size"]}
        proc = subprocess.Popen([sys.executable, LOADGEN, json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdin is not None
        limit = spec["deadline"] + 60
        try:
            if spec["mode"] == "idle":
                rss0 = status_kb(pid, "VmRSS") if pid else None
                ready = self._line(proc, limit)
                time.sleep(3.0)  # settle: idle writer tasks end after two quiet ticks
                rec["rss_before_kb"] = rss0
                rec["rss_kb"] = status_kb(pid, "VmRSS") if pid else None
                rec["connect_seconds"] = ready.get("connect_seconds")
                proc.stdin.write("\n")
                proc.stdin.flush()
            result = self._line(proc, limit)
        except (TimeoutError, ValueError) as exc:
            result = {"ok": False, "error": f"generator: {exc}"}
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        rec.update(result)
        for key, who, before in (("cpu_s", broker, cpu0[0]),
                                 ("upstream_cpu_s", upstream, cpu0[1])):
            after = who.cpu_seconds() if who is not None else None
            if before is not None and after is not None:
                rec[key] = round(after - before, 3)
        if pids:
            peaks = [status_kb(p, "VmHWM") for p in pids if p]
            rec["peak_rss_kb"] = sum(k for k in peaks if k is not None) or None
        if spec["mode"] == "idle" and pid:
            self._wait_connections_gone(pid, rec.get("rss_before_kb"))
        return rec

    def _line(self, proc: subprocess.Popen[str], limit: float) -> dict[str, Any]:
        import select

        assert proc.stdout is not None
        end = time.monotonic() + limit
        while time.monotonic() < end:
            r, _, _ = select.select([proc.stdout], [], [], 1.0)
            if r:
                line = proc.stdout.readline()
                if not line:
                    raise ValueError(f"exited with {proc.poll()} without a result")
                return json.loads(line)
        raise TimeoutError(f"no result within {limit:.0f} s")

    def _wait_connections_gone(self, pid: int, _rss0: int | None) -> None:
        """After the idle run: wait (bounded) until the broker has closed the sockets."""
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                n = len(os.listdir(f"/proc/{pid}/fd"))
            except OSError:
                return
            if n < 1000:
                return
            time.sleep(0.5)

    def run(self) -> None:
        scen_names = self.args.scenarios
        for scen in SCENARIOS:
            if scen_names and scen["name"] not in scen_names:
                continue
            targets = [t for t in SPEAKS[scen["proto"]] if t in self.brokers]
            if scen["name"] in RMQ_SCENARIOS:
                targets += [t for t in RMQ_TARGETS if t in self.brokers]
            if scen.get("sink") and self.sink is not None:
                targets.append("sink")
            rounds = self.args.rounds
            if scen["spec"].get("mode") == "idle":
                rounds = min(rounds, self.args.idle_rounds)
            for rnd in range(rounds):
                order = targets if rnd % 2 == 0 else targets[::-1]
                for target in order:
                    if target != "sink":
                        gone = self.brokers[target].alive()
                        if gone:
                            self.runs.append({"scenario": scen["name"], "target": target,
                                              "round": rnd, "ok": False,
                                              "error": f"broker gone: {gone}"})
                            continue
                    t0 = time.monotonic()
                    rec = self.run_once(scen, target, rnd)
                    rec["wall"] = time.monotonic() - t0
                    rec["load1"] = loadavg()[0]
                    self.runs.append(rec)
                    self.log(describe(rec))


def describe(rec: dict[str, Any]) -> str:
    head = f"{rec['scenario']:<18} {rec['target']:<10} r{rec['round']}"
    if not rec.get("ok"):
        return f"{head} FAILED {rec.get('error') or rec.get('status')}"
    if rec.get("status") == "idle":
        return (f"{head} {rec['connections']} connections, RSS {rec.get('rss_kb')} KiB "
                f"(before {rec.get('rss_before_kb')}), connect {rec['connect_seconds']:.1f} s")
    extra = ""
    if rec.get("p99_us") is not None:
        extra = f" p50 {rec['p50_us']:.0f} us p99 {rec['p99_us']:.0f} us"
    lost = rec["expected"] - rec["received"]
    return (f"{head} {rec['rate']:>10,.0f} msg/s{extra} {rec['status']}"
            f"{f' undelivered {lost}' if lost else ''} peak RSS {rec.get('peak_rss_kb')} KiB "
            f"({rec['wall']:.1f} s)")


# -------------------------------------------------------------------- summary


def med(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for scen in SCENARIOS:
        mine = [r for r in runs if r["scenario"] == scen["name"]]
        if not mine:
            continue
        idle = scen["spec"].get("mode") == "idle"
        latency = scen["spec"].get("mode") == "latency"
        targets = list(dict.fromkeys(r["target"] for r in mine))
        by_target = {t: [r for r in mine if r["target"] == t] for t in targets}
        for t in targets:
            ok = [r for r in by_target[t] if r.get("ok")]
            row: dict[str, Any] = {"scenario": scen["name"], "target": t,
                                   "runs": len(by_target[t]), "ok": len(ok),
                                   "errors": sorted({str(r.get("error") or r.get("status"))
                                                     for r in by_target[t]
                                                     if not r.get("ok")})}
            if ok:
                if idle:
                    row["rss_mb"] = med([r["rss_kb"] / 1024 for r in ok if r.get("rss_kb")])
                    row["connections"] = ok[0].get("connections")
                    before = med([r["rss_before_kb"] / 1024 for r in ok
                                  if r.get("rss_before_kb")])
                    if row["rss_mb"] is not None and before is not None:
                        row["per_conn_kb"] = (row["rss_mb"] - before) * 1024 / max(
                            1, row["connections"])
                else:
                    row["rate"] = med([r["rate"] for r in ok])
                    row["mbps"] = row["rate"] * scen["size"] / 1e6
                    row["lost"] = max(r["expected"] - r["received"] for r in ok)
                    row["rates"] = [round(r["rate"]) for r in ok]
                if latency:
                    row["p50_us"] = med([r["p50_us"] for r in ok])
                    row["p99_us"] = med([r["p99_us"] for r in ok])
                row["peak_rss_mb"] = med([r["peak_rss_kb"] / 1024 for r in ok
                                          if r.get("peak_rss_kb")])
            # per-round ratio gateway / this peer, median over rounds
            if t not in ("gateway", *RMQ_TARGETS) and "gateway" in by_target:
                ratios = []
                for g in by_target["gateway"]:
                    p = next((r for r in by_target[t] if r["round"] == g["round"]), None)
                    if not (g.get("ok") and p and p.get("ok")):
                        continue
                    if idle:
                        ratios.append(g["rss_kb"] / p["rss_kb"])
                    elif latency:
                        ratios.append(g["p99_us"] / p["p99_us"])
                    else:
                        ratios.append(g["rate"] / p["rate"])
                row["ratio"] = med(ratios)
            rows.append(row)
        # the goal, on the gateway row
        g = next((r for r in rows if r["scenario"] == scen["name"] and r["target"] == "gateway"),
                 None)
        if g is not None and scen["goal"] is not None:
            key, limit = scen["goal"]
            if key == "p99_us":
                g["goal"] = f"p99 < {limit / 1000:g} ms"
                g["met"] = g.get("p99_us") is not None and g["p99_us"] < limit
            elif key == "rss_mb":
                g["goal"] = f"< {limit:g} MB"
                g["met"] = g.get("rss_mb") is not None and g["rss_mb"] < limit
            else:
                peer = next((r for r in rows if r["scenario"] == scen["name"]
                             and r["target"] == key), None)
                g["goal"] = f">= {limit:g}x {key}"
                g["met"] = bool(peer and peer.get("ratio") is not None
                                and peer["ratio"] >= limit)
    return rows


def fnum(x: float | None, fmt: str = "{:,.0f}") -> str:
    return fmt.format(x) if x is not None else "-"


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| scenario | target | msgs/s | MB/s | p50 | p99 | peak RSS | gateway/peer | goal |",
           "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if not r.get("ok"):
            why = "; ".join(r["errors"])[:120]
            out.append(f"| {r['scenario']} | {r['target']} | FAILED ({why}) | | | | | | |")
            continue
        if "rss_mb" in r:
            rate = f"{r['connections']:,} conns"
            rss = f"{r['rss_mb']:.0f} MB"
            if r.get("per_conn_kb") is not None:
                rss += f" ({r['per_conn_kb']:.1f} KiB/conn)"
            mbps = "-"
        else:
            rate = fnum(r.get("rate"))
            if r.get("lost"):
                rate += f" ({r['lost']:,} undelivered)"
            rss = fnum(r.get("peak_rss_mb"), "{:.0f} MB")
            mbps = fnum(r.get("mbps"), "{:.1f}")
        p50 = fnum(r.get("p50_us"), "{:.0f} us")
        p99 = fnum(r.get("p99_us"), "{:.0f} us")
        ratio = fnum(r.get("ratio"), "{:.2f}")
        goal = ""
        if "goal" in r:
            goal = f"{r['goal']}: {'met' if r['met'] else 'missed'}"
        out.append(f"| {r['scenario']} | {r['target']} | {rate} | {mbps} | {p50} | {p99} | "
                   f"{rss} | {ratio} | {goal} |")
    return "\n".join(out)


def chart(rows: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e .[bench]): no chart"
    colors = {"gateway": "#2a7ab0", "rabbitmq": "#f08c00", "mosquitto": "#3c9a3c",
              "sink": "#999999", "gw-rmq": "#7aa6c8", "gw-rmq-2w": "#1d4f73"}
    thr = [r for r in rows if r.get("rate") and "p99_us" not in r]
    scen = list(dict.fromkeys(r["scenario"] for r in thr))
    targets = ["gateway", *RMQ_TARGETS, "rabbitmq", "mosquitto", "sink"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 0.55 * len(scen) + 2.5),
                                   gridspec_kw={"width_ratios": [3, 2]})
    h = 0.8 / len(targets)
    for i, t in enumerate(targets):
        ys, xs = [], []
        for j, s in enumerate(scen):
            r = next((r for r in thr if r["scenario"] == s and r["target"] == t), None)
            if r:
                ys.append(j + (i - (len(targets) - 1) / 2) * h)
                xs.append(r["rate"])
        if xs:
            ax1.barh(ys, xs, height=h, color=colors[t], label=t)
    ax1.set_yticks(range(len(scen)), scen)
    ax1.invert_yaxis()
    ax1.set_xscale("log")
    ax1.set_xlabel("msgs/s delivered (log scale; median of rounds)")
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4, fontsize=8)
    ax1.grid(axis="x", alpha=0.3)
    ratio_rows = [r for r in rows if r.get("ratio") is not None and r["target"] != "sink"]
    labels = [f"{r['scenario']} / {r['target']}" for r in ratio_rows]
    vals = [r["ratio"] for r in ratio_rows]
    lower_better = ["p99" if "p99_us" in r else "rss" if "rss_mb" in r else ""
                    for r in ratio_rows]
    ax2.barh(range(len(vals)), vals,
             color=[colors.get(r["target"], "#777") for r in ratio_rows])
    for k, (v, lb) in enumerate(zip(vals, lower_better, strict=True)):
        ax2.text(v, k, f" {v:.2f}" + (f" ({lb}: lower is better)" if lb else ""),
                 va="center", fontsize=7)
    ax2.set_yticks(range(len(vals)), labels, fontsize=7)
    ax2.invert_yaxis()
    ax2.axvline(1.0, color="k", lw=0.8)
    ax2.axvline(0.5, color="k", lw=0.8, ls=":")
    ax2.set_xlabel("gateway / peer (median of per-round ratios)")
    ax2.grid(axis="x", alpha=0.3)
    fig.suptitle("gateway beside RabbitMQ and Mosquitto (bench/suite.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def versions(runner: Runner) -> list[str]:
    out = []
    for b in runner.brokers.values():
        out.append(f"{b.name} {b.version}")
    return out


def report(runner: Runner, rows: list[dict[str, Any]], facts: dict[str, Any],
           t_start: float, up_before: str, up_after: str) -> str:
    args = runner.args
    lines = [
        "# gateway benchmark (bench/suite.py)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{'quick mode, ' if args.quick else ''}{args.rounds} round(s) per scenario "
        f"(targets alternating within each round), {time.monotonic() - t_start:.0f} s in all.",
        f"Machine: {facts['nproc']} cores ({facts['cpu']}), Python {facts['python']}, "
        f"{facts['platform']}.",
        f"Brokers: {', '.join(versions(runner))}. "
        + ("Brokers and the sink pinned to core 0, the generator to core 1"
           + (" (gw-rmq-2w, two workers, not pinned: its workers and the generator share "
              "both cores)" if "gw-rmq-2w" in runner.brokers else "") + "."
           if runner.broker_cpu is not None else "No pinning."),
        f"Load before: `{up_before}`",
        f"Load after: `{up_after}`",
        "",
        table(rows),
        "",
        "msgs/s: deliveries per second at the consumers (median of rounds), from the first "
        "publish to the last delivery; MB/s: payload bytes of those; p50/p99: one-way latency "
        "of paced runs; peak RSS: VmHWM of the broker process during the run (reset before "
        "it), for the idle run the RSS with all connections open; gateway/peer: median of "
        "the per-round ratios (msgs/s; for latency rows p99, for the idle row RSS: there "
        "lower is better). `undelivered`: messages not delivered when the run ended (nothing "
        "arrived for 5 s after the last publish was written: dropped QoS 0 messages, or a "
        "broker still holding them), the most of any round; the rate counts what arrived.",
        "",
        "Scenarios:",
    ]
    for scen in SCENARIOS:
        if any(r["scenario"] == scen["name"] for r in rows):
            lines.append(f"- `{scen['name']}`: {scen['what']}")
    for name, err in runner.not_started.items():
        lines.append(f"- {name} did not start: {err.splitlines()[0] if err else '?'}")
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the messages, 1 round")
    ap.add_argument("--rounds", type=int, help="rounds per scenario (3; --quick: 1)")
    ap.add_argument("--idle-rounds", type=int, default=1,
                    help="rounds of the 10k idle connections scenario (1)")
    ap.add_argument("--idle-connections", type=int, help="connections in the idle scenario")
    ap.add_argument("--scenario", default="", help="comma list (all): "
                    + ", ".join(s["name"] for s in SCENARIOS))
    ap.add_argument("--targets", default="gateway,gw-rmq,gw-rmq-2w,rabbitmq,mosquitto,sink",
                    help="comma list: gateway, gw-rmq, gw-rmq-2w (gateway --backend "
                         "rabbitmq with 1 and 2 workers), rabbitmq, mosquitto, sink")
    ap.add_argument("--run-seconds", type=float, default=30.0,
                    help="deadline of one run, seconds (30)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    ap.add_argument("--out", default=str(HERE / "results"), help="directory for latest.*")
    ap.add_argument("--report", metavar="JSON",
                    help="no run: write the table and chart again from a latest.json")
    args = ap.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.scenarios = [s for s in args.scenario.split(",") if s]
    unknown = set(args.scenarios) - {s["name"] for s in SCENARIOS}
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.targets = [t for t in args.targets.split(",") if t]
    return args


def rerender(args: argparse.Namespace) -> int:
    """latest.md and latest.png again from a run's JSON (after a change to the report)."""
    data = json.loads(Path(args.report).read_text())
    rows = summarize(data["runs"])
    out = Path(args.out)
    header, footer = data.get("header"), data.get("footer")
    if header is None:  # a JSON from before the header was kept: take it from latest.md
        lines = (Path(args.report).parent / "latest.md").read_text().splitlines()
        first = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
        last = max(i for i, ln in enumerate(lines) if ln.startswith("|"))
        header = "\n".join(lines[:first]) + "\n"
        footer = "\n".join(ln for ln in lines[last + 1:] if not ln.startswith("![chart]")
                           and "matplotlib is not installed" not in ln).rstrip() + "\n"
    text = header + table(rows) + "\n" + footer
    png_note = chart(rows, out / "latest.png")
    text += f"\n{png_note}\n" if png_note else "\n![chart](latest.png)\n"
    (out / "latest.md").write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.report:
        return rerender(args)
    facts = machine_facts()
    up_before = uptime()
    t_start = time.monotonic()
    runner = Runner(args, log)
    try:
        runner.start()
        runner.run()
    finally:
        runner.stop()
    up_after = uptime()
    rows = summarize(runner.runs)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = report(runner, rows, facts, t_start, up_before, up_after)
    header, _, footer = text.partition(table(rows) + "\n")
    png_note = chart(rows, out / "latest.png")
    if png_note:
        text += f"\n{png_note}\n"
    else:
        text += "\n![chart](latest.png)\n"
    (out / "latest.md").write_text(text)
    (out / "latest.json").write_text(json.dumps(
        {"facts": facts, "uptime_before": up_before, "uptime_after": up_after,
         "header": header, "footer": footer, "summary": rows, "runs": runner.runs},
        indent=1) + "\n")
    print(text)
    failed = bool(runner.not_started) or any(not r.get("ok") for r in runner.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
