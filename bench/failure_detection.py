#!/usr/bin/env python3
"""Time from SIGKILL of one node of three to the others declaring it down.

Usage: cargo build --release && python3 bench/failure_detection.py [RUNS]
Prints each run and the median and worst, for docs/benchmarks.md.
"""
import json, os, signal, statistics, subprocess, sys, tempfile, time, urllib.request

BIN = os.path.join(os.path.dirname(__file__), "..", "target", "release", "cfgnode")
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 20


def start(root, name, http, quic, join=None):
    args = [BIN, "start", "--node-id", name, "--data-dir", os.path.join(root, name),
            "--http", f"127.0.0.1:{http}", "--listen", f"127.0.0.1:{quic}"]
    if join:
        args += ["--join", join]
    return subprocess.Popen(args, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def members(root, name, http):
    token_path = os.path.join(root, name, "admin.token")
    try:
        token = open(token_path).read().strip()
        req = urllib.request.Request(f"http://127.0.0.1:{http}/v1/cluster/members",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=1) as resp:
            return {m["id"]: m["state"] for m in json.load(resp)["members"]}
    except Exception:
        return {}


def wait(pred, deadline=30.0, step=0.01):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


def main():
    root = tempfile.mkdtemp()
    ports = {"n1": (18181, 17171), "n2": (18182, 17172), "n3": (18183, 17173)}
    seed = f"127.0.0.1:{ports['n1'][1]}"
    procs = {"n1": start(root, "n1", *ports["n1"])}
    procs["n2"] = start(root, "n2", *ports["n2"], join=seed)
    procs["n3"] = start(root, "n3", *ports["n3"], join=seed)
    times = []
    try:
        for run in range(RUNS):
            all_alive = lambda: all(
                members(root, n, ports[n][0]).get(m) == "alive" for n in ("n1", "n2") for m in ("n1", "n2", "n3"))
            if not wait(all_alive):
                sys.exit(f"run {run}: cluster did not converge")
            killed = time.monotonic()
            procs["n3"].send_signal(signal.SIGKILL)
            procs["n3"].wait()
            both_down = lambda: all(members(root, n, ports[n][0]).get("n3") == "down" for n in ("n1", "n2"))
            if not wait(both_down):
                sys.exit(f"run {run}: n3 never declared down")
            took = time.monotonic() - killed
            times.append(took)
            print(f"run {run + 1:2}: {took:.2f} s")
            procs["n3"] = start(root, "n3", *ports["n3"], join=seed)
        print(f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s over {len(times)} runs")
    finally:
        for p in procs.values():
            p.kill()


if __name__ == "__main__":
    main()
