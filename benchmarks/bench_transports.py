"""The run loop against the network's floor: HTTP clients side by side on one loopback server.

One server process speaks the AI/ML API's synchronous protocol (POST /v1/images/generations
answers after a fixed 0.25 s with an image URL; GET /cdn/<id>/<n>.png serves a real,
distinct 512x512 PNG). Every client does what `lorascope run` does per cell against it:
POST the generation, parse the JSON, GET the image. 400 cells, concurrency 32, so the ideal
is 400 x 0.25 / 32 = 3.125 s. Each client runs in its own fresh process, one after another,
rounds interleaved, so all of them see the same server and the same machine load:

  threaded       a plain threaded Python client: 32 threads, one keep-alive
                 `http.client.HTTPConnection` each (the floor to compare against)
  httpx          httpx.AsyncClient as lorascope used it before this benchmark
                 (max_connections = 2 x concurrency)
  httpx-tuned    httpx.AsyncClient with the pool sized to the concurrency
  httpx+sniffio  httpx-tuned with a `sniffio` module present: httpcore 1.x imports it on
                 every request, and with anyio 4 (which no longer installs it) each failed
                 import searches sys.path again; the module here is a one-line stand-in
  httpx2         the httpx2 fork (rewritten pool bookkeeping), same settings as httpx-tuned
  httpx2+uvloop  httpx2 on uvloop's event loop instead of asyncio's
  httpx+aiohttp  httpx.AsyncClient over httpx-aiohttp's AiohttpTransport
  aiohttp        aiohttp.ClientSession directly
  lorascope dry-run  the same command with --dry-run: start-up, suite, grid, validation,
                 fingerprints and estimates, no request (the fixed part of the cost)
  lorascope run  the real CLI end to end (`lorascope run SUITE`: start-up, planning, the
                 AI/ML API provider, write-ahead store, image checks and writes, parquet);
                 requests carried by aiohttp, answers read as httpx2 responses
  lorascope run (httpx2)  the same, with httpx2 carrying the requests (for comparison)

Per client: `process` = wall time of the whole process (interpreter start-up and imports
included, the figure a user sees), `loop` = wall time of the requests alone (from the first
request to the last answer), CPU per cell of the process. The ratio that matters is
lorascope run's process time over the threaded client's process time, in the same run.

`--scale` instead runs `lorascope run` on 10,000 cells at concurrency 64 and samples the
process's RSS and CPU once a second against the cells the server has finished, to show
whether memory and per-cell CPU stay flat as the grid grows.

    .venv/bin/python benchmarks/bench_transports.py [--rounds 3] [--only threaded,httpx]
    .venv/bin/python benchmarks/bench_transports.py --scale [--cells 10000 --concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LATENCY = 0.25
KEY = "bench-key-0123456789"
SIZE = 512
PROMPTS = 20
POOL = 1024  # distinct images the server cycles through (each cell's image differs up to this)

# ------------------------------------------------------------------------------- the server


def _png_pool(n: int) -> list[bytes]:
    from PIL import Image

    out = []
    for i in range(n):
        img = Image.new("RGB", (SIZE, SIZE), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        img.paste(((i * 7) % 256, 255 - (i % 256), (i * 13) % 256), (0, 0, SIZE // 2, SIZE // 2))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def serve(host: str = "127.0.0.1", port: int = 0) -> None:
    """A small asyncio HTTP/1.1 keep-alive server: cheap per request, so it is not what is
    measured (the stdlib ThreadingHTTPServer fake in tests/ costs a thread per connection)."""
    images = _png_pool(POOL)
    state = {"generated": 0, "served": 0}

    def reply(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, extra: str = "") -> None:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 400: "Bad Request"}[status]
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"{extra}\r\n".encode() + body)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                if method == "POST" and path == "/v1/images/generations":
                    if headers.get("authorization") != f"Bearer {KEY}":
                        reply(writer, 401, b'{"message":"Unauthorized","statusCode":401}', "application/json")
                    else:
                        req = json.loads(body)
                        await asyncio.sleep(LATENCY)
                        gid = state["generated"]
                        state["generated"] += 1
                        out = json.dumps({"data": [{"url": f"http://{host}:{bound}/cdn/{gid}/0.png"}],
                                          "meta": {"usage": {"credits_used": 17850}},
                                          "seed": req.get("seed")}).encode()
                        reply(writer, 200, out, "application/json",
                              f"x-request-id: gen-{gid}\r\nx-aimlapi-credits-used: 17850\r\n"
                              "x-aimlapi-usd-spent: 0.008925\r\n")
                elif method == "GET" and path.startswith("/cdn/"):
                    gid = int(path.split("/")[2])
                    state["served"] += 1
                    reply(writer, 200, images[gid % POOL], "image/png")
                elif method == "GET" and path == "/stats":
                    reply(writer, 200, json.dumps(state).encode(), "application/json")
                else:
                    reply(writer, 404, b'{"message":"no route"}', "application/json")
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        nonlocal bound
        server = await asyncio.start_server(handle, host, port, backlog=1024)
        bound = server.sockets[0].getsockname()[1]
        print(f"http://{host}:{bound}", flush=True)
        async with server:
            await server.serve_forever()

    bound = 0
    asyncio.run(main())


# ------------------------------------------------------------------------------- the clients


def _cells(n: int) -> list[tuple[str, int]]:
    seeds = max(1, n // PROMPTS)
    return [(f"prompt number {p}", s) for p in range(PROMPTS) for s in range(1, seeds + 1)][:n]


def _body(prompt: str, seed: int) -> dict:
    return {"model": "alibaba/z-image-turbo-lora", "prompt": prompt, "image_size": {"width": SIZE, "height": SIZE},
            "num_inference_steps": 8, "num_images": 1, "output_format": "png", "enable_prompt_expansion": False,
            "seed": seed}


def _check(image: bytes) -> None:
    if not image.startswith(b"\x89PNG"):
        raise RuntimeError("not a PNG")


def client_threaded(url: str, cells: int, conc: int) -> int:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    work = list(_cells(cells))
    lock = threading.Lock()
    done = [0]
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while True:
            with lock:
                if not work:
                    break
                prompt, seed = work.pop()
            conn.request("POST", "/v1/images/generations", json.dumps(_body(prompt, seed)), headers)
            answer = json.loads(conn.getresponse().read())
            image_url = urlsplit(answer["data"][0]["url"])
            conn.request("GET", image_url.path)
            _check(conn.getresponse().read())
            with lock:
                done[0] += 1
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0]


async def _async_loop(cells: int, conc: int, one) -> int:
    work = list(_cells(cells))
    done = 0

    async def worker() -> None:
        nonlocal done
        while work:
            prompt, seed = work.pop()
            await one(prompt, seed)
            done += 1

    await asyncio.gather(*(worker() for _ in range(conc)))
    return done


def client_httpx(url: str, cells: int, conc: int, variant: str) -> int:
    headers = {"Authorization": f"Bearer {KEY}"}

    async def run() -> int:
        if variant == "httpx+sniffio":
            import types

            stub = types.ModuleType("sniffio")
            stub.current_async_library = lambda: "asyncio"
            sys.modules["sniffio"] = stub
        if variant.startswith("httpx2"):
            import httpx2 as hx
        else:
            import httpx as hx
        timeout = hx.Timeout(connect=10.0, read=120.0, write=120.0, pool=10.0)
        if variant == "httpx":  # as lorascope's ProviderHttp built it before: 2 x concurrency
            limits = hx.Limits(max_connections=2 * conc, max_keepalive_connections=2 * conc)
        else:
            limits = hx.Limits(max_connections=conc, max_keepalive_connections=conc)
        kw = {}
        if variant == "httpx+aiohttp":
            import aiohttp
            from httpx_aiohttp import AiohttpTransport

            kw["transport"] = AiohttpTransport(client=lambda: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=conc)))
        async with hx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False, **kw) as client:
            async def one(prompt: str, seed: int) -> None:
                r = await client.post(url + "/v1/images/generations", json=_body(prompt, seed), headers=headers)
                r.raise_for_status()
                img = await client.get(r.json()["data"][0]["url"])
                img.raise_for_status()
                _check(img.content)

            return await _async_loop(cells, conc, one)

    if variant.endswith("+uvloop"):
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run())
    return asyncio.run(run())


def client_aiohttp(url: str, cells: int, conc: int) -> int:
    import aiohttp

    headers = {"Authorization": f"Bearer {KEY}"}

    async def run() -> int:
        timeout = aiohttp.ClientTimeout(sock_connect=10.0, sock_read=120.0)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=conc), timeout=timeout) as session:
            async def one(prompt: str, seed: int) -> None:
                async with session.post(url + "/v1/images/generations", json=_body(prompt, seed), headers=headers) as r:
                    r.raise_for_status()
                    answer = await r.json()
                async with session.get(answer["data"][0]["url"]) as img:
                    img.raise_for_status()
                    _check(await img.read())

            return await _async_loop(cells, conc, one)

    return asyncio.run(run())


def client_main(name: str, url: str, cells: int, conc: int) -> None:
    """Runs in the client's own process; prints its loop time and cells done as JSON."""
    started = time.perf_counter()
    if name == "threaded":
        done = client_threaded(url, cells, conc)
    elif name == "aiohttp":
        done = client_aiohttp(url, cells, conc)
    else:
        done = client_httpx(url, cells, conc, name)
    print(json.dumps({"loop_s": time.perf_counter() - started, "done": done}))


# ------------------------------------------------------------------------------- measuring


def suite_text(cells: int, conc: int) -> str:
    seeds = list(range(1, max(1, cells // PROMPTS) + 1))
    prompts = "\n".join(f"  - {{id: p{i}, text: prompt number {i}}}" for i in range(PROMPTS))
    return (f"name: bench-transports\nproviders:\n  - aimlapi: {{concurrency: {conc}}}\n"
            f"prompts:\n{prompts}\nseeds: {seeds}\nsize: {SIZE}x{SIZE}\nsteps: 8\n")


#: `lorascope ...` with the hosted providers' requests carried by httpx2 instead of aiohttp
#: (what `_http.ProviderHttp` does when it is handed a transport), for a same-run comparison
HTTPX2_RUN = (
    "import sys\n"
    "import lorascope.harness.providers._hosted as hosted\n"
    "class Httpx2Only(hosted.ProviderHttp):\n"
    "    def __init__(self, *a, **k):\n"
    "        super().__init__(*a, **k)\n"
    "        self._use_aiohttp = False\n"
    "hosted.ProviderHttp = Httpx2Only\n"
    "from lorascope.cli import main\n"
    "sys.argv = ['lorascope', *sys.argv[1:]]\n"
    "main()\n"
)


def lorascope_cmd(suite: Path, out: Path, conc: int) -> list[str]:
    lorascope = Path(sys.executable).with_name("lorascope")
    return [str(lorascope), "run", str(suite), "--out", str(out), "--no-progress", "--concurrency", str(conc)]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall time and CPU (user + system, all threads) of one child process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} exited {done.returncode}: {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def start_server() -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve"], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT)
    url = server.stdout.readline().strip()
    if not url.startswith("http://"):
        raise RuntimeError("the server did not start")
    return server, url


def machine_line() -> str:
    """`_machine.machine()` run in a child: it imports torch, and a parent that big would
    pass its size on to the peak RSS Linux reports for every child it forks afterwards."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); from _machine import machine; print(machine())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def compare(rounds: int, cells: int, conc: int, only: list[str] | None) -> None:
    names = ["threaded", "httpx", "httpx-tuned", "httpx+sniffio", "httpx2", "httpx2+uvloop", "httpx+aiohttp", "aiohttp", "lorascope dry-run", "lorascope run",
             "lorascope run (httpx2)"]
    if only:
        names = [n for n in names if n in only]
    needs = {"httpx+aiohttp": ("aiohttp", "httpx_aiohttp"), "aiohttp": ("aiohttp",), "httpx2+uvloop": ("uvloop",)}
    for name, modules in needs.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if name in names and missing:  # not lorascope dependencies: `pip install aiohttp httpx-aiohttp uvloop`
            names.remove(name)
            print(f"skipped {name}: {', '.join(missing)} not installed")
    cells = len(_cells(cells))  # whole rows of PROMPTS prompts, as the suite has them
    print(f"machine: {machine_line()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    ideal = cells * LATENCY / conc
    server, url = start_server()
    results: dict[str, list[tuple[float, float, float]]] = {n: [] for n in names}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            suite = tmp_path / "suite.yaml"
            suite.write_text(suite_text(cells, conc))
            env = {**os.environ, "LORASCOPE_AIMLAPI_URL": url, "AIMLAPI_KEY": KEY, "PYTHONUNBUFFERED": "1"}
            for r in range(rounds):
                for name in names:
                    # a fresh shared cache per run: a run must not be answered from another's
                    env["LORASCOPE_CACHE"] = str(tmp_path / f"cache-{r}-{names.index(name)}")
                    if name == "lorascope run":
                        out = tmp_path / f"run-{r}"
                        wall, cpu, _ = run_child(lorascope_cmd(suite, out, conc), env)
                        loop = float("nan")
                        done = _succeeded(out)
                    elif name == "lorascope run (httpx2)":  # the same run over the httpx2 client
                        out = tmp_path / f"run-httpx2-{r}"
                        cmd = [sys.executable, "-c", HTTPX2_RUN, *lorascope_cmd(suite, out, conc)[1:]]
                        wall, cpu, _ = run_child(cmd, env)
                        loop, done = float("nan"), _succeeded(out)
                    elif name == "lorascope dry-run":  # the fixed part: start-up, suite, plan, estimates
                        wall, cpu, _ = run_child(lorascope_cmd(suite, tmp_path / "dry", conc) + ["--dry-run"], env)
                        loop, done = float("nan"), cells
                    else:
                        cmd = [sys.executable, str(Path(__file__).resolve()), "--client", name, "--url", url,
                               "--cells", str(cells), "--concurrency", str(conc)]
                        wall, cpu, stdout = run_child(cmd, env)
                        info = json.loads(stdout.strip().splitlines()[-1])
                        loop, done = info["loop_s"], info["done"]
                    if done != cells:
                        raise RuntimeError(f"{name}: {done} of {cells} cells done")
                    results[name].append((wall, loop, cpu))
                    print(f"  round {r + 1} {name:<18} process {wall:6.3f}s  loop {loop:6.3f}s  "
                          f"cpu/cell {cpu / cells * 1000:5.2f} ms", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    floor = statistics.median(w for w, _, _ in results.get("threaded", [(float("nan"),) * 3]))
    print(f"\n{cells} cells, concurrency {conc}, latency {LATENCY} s: ideal {ideal:.3f} s; medians of {rounds} rounds")
    print(f"{'client':<18} {'process':>8} {'/ideal':>7} {'/threaded':>10} {'loop':>7} {'cpu/cell':>9}")
    for name, runs in results.items():
        wall = statistics.median(w for w, _, _ in runs)
        loop = statistics.median(lp for _, lp, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        print(f"{name:<18} {wall:7.3f}s {wall / ideal:7.3f} {wall / floor:10.3f} {loop:6.3f}s "
              f"{cpu / cells * 1000:7.2f}ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _succeeded(run_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(run_dir / "run.db") as db:
        return db.execute("SELECT COUNT(*) FROM generations WHERE status = 'succeeded'").fetchone()[0]


def _proc_sample(pid: int) -> tuple[float, float, float] | None:
    """(CPU seconds of all threads, RSS in MB, peak RSS so far in MB) of a live process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks
    def kb(field: str) -> float:
        return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith(field)), 0.0)

    return cpu, kb("VmRSS:"), kb("VmHWM:")


def _server_count(url: str) -> int:
    import urllib.request

    with urllib.request.urlopen(url + "/stats", timeout=5) as r:
        return json.loads(r.read())["served"]


def scale(cells: int, conc: int) -> None:
    """lorascope run on a large grid: RSS and CPU per cell sampled while it runs."""
    cells = len(_cells(cells))
    print(f"machine: {machine_line()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    server, url = start_server()
    samples: list[tuple[float, int, float, float]] = []  # (t, cells served, cpu s, rss MB)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            suite = tmp_path / "suite.yaml"
            suite.write_text(suite_text(cells, conc))
            env = {**os.environ, "LORASCOPE_AIMLAPI_URL": url, "AIMLAPI_KEY": KEY,
                   "LORASCOPE_CACHE": str(tmp_path / "cache")}
            out = tmp_path / "run"
            base = _server_count(url)
            started = time.perf_counter()
            proc = subprocess.Popen(lorascope_cmd(suite, out, conc), env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            hwm = 0.0
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this child's own rusage
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    break
                sample = _proc_sample(proc.pid)
                if sample:
                    samples.append((time.perf_counter() - started, _server_count(url) - base, *sample[:2]))
                    hwm = max(hwm, sample[2])
                time.sleep(1.0)
            wall = time.perf_counter() - started
            err = proc.stderr.read()
            if proc.returncode != 0:
                raise RuntimeError(f"lorascope run exited {proc.returncode}: {err[-2000:]}")
            done = _succeeded(out)
            db_mb = (out / "run.db").stat().st_size / 1e6
    finally:
        server.terminate()
        server.wait(10)
    ideal = cells * LATENCY / conc
    peak = usage.ru_maxrss / 1024  # kB -> MB, the run's own peak (results.parquet export included)
    print(f"\nlorascope run: {cells} cells, concurrency {conc}: {done} succeeded, wall {wall:.1f} s "
          f"(ideal {ideal:.1f} s, ratio {wall / ideal:.3f}); peak RSS {peak:.0f} MB over the whole process "
          f"(while sending: {hwm:.0f} MB); CPU {usage.ru_utime + usage.ru_stime:.1f} s; run.db {db_mb:.1f} MB")
    print(f"{'t (s)':>7} {'cells':>7} {'RSS MB':>7} {'cpu s':>7} {'cpu/cell in the interval (ms)':>30}")
    quarter = [s for s in samples if s[1] > 0]
    step = max(1, len(quarter) // 10)
    prev = (0.0, 0, 0.0, 0.0)
    for s in quarter[::step] + quarter[-1:]:
        cells_in = s[1] - prev[1]
        per = (s[2] - prev[2]) / cells_in * 1000 if cells_in else float("nan")
        print(f"{s[0]:7.1f} {s[1]:7d} {s[3]:7.0f} {s[2]:7.1f} {per:30.2f}")
        prev = s
    # per-cell CPU in the first and the last quarter of the grid (steady state, start-up excluded)
    def cpu_between(lo: float, hi: float) -> float:
        a = min((s for s in quarter if s[1] >= lo * cells), key=lambda s: s[1])
        b = max((s for s in quarter if s[1] <= hi * cells), key=lambda s: s[1])
        return (b[2] - a[2]) / max(1, b[1] - a[1]) * 1000
    print(f"cpu/cell, cells 10-35%: {cpu_between(0.10, 0.35):.2f} ms; cells 65-90%: {cpu_between(0.65, 0.90):.2f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--cells", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=None, help="comma-separated client names")
    parser.add_argument("--scale", action="store_true", help="10,000 cells at concurrency 64: RSS and CPU/cell")
    args = parser.parse_args()
    if args.serve:
        serve()
    elif args.client:
        client_main(args.client, args.url, args.cells, args.concurrency)
    elif args.scale:
        scale(args.cells or 10_000, args.concurrency or 64)
    else:
        compare(args.rounds, args.cells or 400, args.concurrency or 32, args.only.split(",") if args.only else None)


if __name__ == "__main__":
    main()
