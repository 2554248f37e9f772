"""Builders for the registry tests (imported by name; fixtures are re-exported by conftest.py): tiny LoRA files in every key format, and loopback servers.

Everything is made in code; nothing reaches the internet. The fake Hub speaks the requests
huggingface_hub sends (HEAD/GET `/{repo}/resolve/{rev}/{file}` answered with X-Repo-Commit and
ETag, Range GETs for safetensors headers, `/api/models/{repo}[/revision/{rev}]`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from safetensors.numpy import save_file

from lorascope.registry.zimage import zimage_linears

# The tiny Z-Image transformer of NOTES.md (the config the harness's tiny pipeline uses).
TINY_CONFIG: dict[str, Any] = dict(
    dim=32, n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=16,
    axes_dims=[8, 4, 4], all_patch_size=[2], all_f_patch_size=[1], in_channels=16,
)
BLOCKS = ("layers", "noise_refiner", "context_refiner")


def zimage_block_linears(config: dict[str, Any] = TINY_CONFIG) -> dict[str, tuple[int, int]]:
    return {n: s for n, s in zimage_linears(config).items() if n.startswith(BLOCKS)}


def lora_tensors(fmt: str, config: dict[str, Any] = TINY_CONFIG, rank: int = 4, alpha: float | None = None,
                 dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """A LoRA over every block Linear of a Z-Image transformer with `config`, keyed in `fmt`."""
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}
    for name, (fan_in, fan_out) in zimage_block_linears(config).items():
        down = rng.standard_normal((rank, fan_in)).astype(dtype)
        up = rng.standard_normal((fan_out, rank)).astype(dtype)
        if fmt == "diffusers":
            tensors[f"transformer.{name}.lora_A.weight"] = down
            tensors[f"transformer.{name}.lora_B.weight"] = up
        elif fmt == "ai-toolkit":
            tensors[f"diffusion_model.{name}.lora_A.weight"] = down
            tensors[f"diffusion_model.{name}.lora_B.weight"] = up
        elif fmt == "kohya":
            base = "lora_unet_" + name.replace(".", "_")
            tensors[f"{base}.lora_down.weight"] = down
            tensors[f"{base}.lora_up.weight"] = up
            tensors[f"{base}.alpha"] = np.array(alpha if alpha is not None else rank, dtype=dtype)
        elif fmt == "lokr":
            # out = w1[0] * w2[0], in = w1[1] * w2[1]; w2 factored with `rank`
            fo = 2 if fan_out % 2 == 0 else 1
            fi = 2 if fan_in % 2 == 0 else 1
            tensors[f"diffusion_model.{name}.lokr_w1"] = rng.standard_normal((fo, fi)).astype(dtype)
            tensors[f"diffusion_model.{name}.lokr_w2_a"] = rng.standard_normal((fan_out // fo, rank)).astype(dtype)
            tensors[f"diffusion_model.{name}.lokr_w2_b"] = rng.standard_normal((rank, fan_in // fi)).astype(dtype)
            tensors[f"diffusion_model.{name}.alpha"] = np.array(alpha if alpha is not None else rank, dtype=dtype)
        else:
            raise ValueError(fmt)
    return tensors


def sdxl_tensors(rank: int = 4) -> dict[str, np.ndarray]:
    z = np.zeros
    return {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": z((rank, 640), np.float16),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": z((640, rank), np.float16),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha": np.array(rank, np.float16),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": z((rank, 768), np.float16),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": z((768, rank), np.float16),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": z((rank, 1280), np.float16),
        "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": z((1280, rank), np.float16),
    }


def flux_tensors(rank: int = 4) -> dict[str, np.ndarray]:
    z = np.zeros
    return {
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": z((rank, 3072), np.float32),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": z((3072, rank), np.float32),
        "transformer.transformer_blocks.0.attn.add_q_proj.lora_A.weight": z((rank, 3072), np.float32),
        "transformer.transformer_blocks.0.attn.add_q_proj.lora_B.weight": z((3072, rank), np.float32),
    }


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- loopback HTTP


@dataclass
class Route:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    chunked: bool = False  # stream without Content-Length


@dataclass
class Loopback:
    url: str
    routes: dict[str, Route]
    requests: list[dict[str, Any]]
    handler: list[Callable[[BaseHTTPRequestHandler], bool]]  # optional dynamic handlers


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _serve(self, with_body: bool) -> None:
        state: Loopback = self.server.state
        state.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})
        for dynamic in state.handler:
            if dynamic(self):
                return
        route = state.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(404, b'{"error": "not found"}', {"Content-Type": "application/json"}, with_body)
            return
        body, status, headers = route.body, route.status, dict(route.headers)
        rng = self.headers.get("Range")
        if rng and status == 200:
            m = re.match(r"bytes=(\d+)-(\d*)", rng)
            assert m, rng
            start = int(m.group(1))
            end = min(int(m.group(2)) if m.group(2) else len(body) - 1, len(body) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(body)}"
            body, status = body[start : end + 1], 206
        if route.chunked:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if with_body:
                for i in range(0, len(body), 4096):
                    piece = body[i : i + 4096]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            return
        self._send(status, body, headers, with_body)

    def _send(self, status: int, body: bytes, headers: dict[str, str], with_body: bool) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve(True)

    def do_HEAD(self) -> None:
        self._serve(False)


@pytest.fixture
def loopback() -> Any:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    state = Loopback(url=f"http://127.0.0.1:{server.server_address[1]}", routes={}, requests=[], handler=[])
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@dataclass
class FakeHub:
    """A loopback Hugging Face endpoint holding repos of files at one commit each."""

    server: Loopback
    commits: dict[str, str] = field(default_factory=dict)
    card: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def add_file(self, repo: str, name: str, data: bytes, commit: str | None = None,
                 card: dict[str, Any] | None = None) -> str:
        commit = commit or hashlib.sha1(repo.encode()).hexdigest()
        self.commits[repo] = commit
        self.files.setdefault(repo, {})[name] = data
        if card is not None:
            self.card[repo] = card
        etag = sha256_bytes(data)
        headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        for rev in ("main", commit):
            self.server.routes[f"/{repo}/resolve/{rev}/{name}"] = Route(data, headers)
        info = {
            "id": repo, "sha": commit, "cardData": self.card.get(repo, {}),
            "siblings": [
                {"rfilename": n, "size": len(d), "lfs": {"size": len(d), "sha256": sha256_bytes(d), "pointerSize": 134}}
                if n.endswith(".safetensors") else {"rfilename": n, "size": len(d)}
                for n, d in self.files[repo].items()
            ],
        }
        body = json.dumps(info).encode()
        for path in (f"/api/models/{repo}", f"/api/models/{repo}/revision/main", f"/api/models/{repo}/revision/{commit}"):
            self.server.routes[path] = Route(body, {"Content-Type": "application/json"})
        return commit


@pytest.fixture
def fake_hub(loopback: Loopback, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    monkeypatch.setenv("HF_ENDPOINT", loopback.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return FakeHub(server=loopback)


@pytest.fixture(autouse=True)
def _isolated_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test touches the user's caches or the Hub."""
    monkeypatch.setenv("LORASCOPE_CACHE", str(tmp_path / "lorascope-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: never the real Hub
    monkeypatch.delenv("LORASCOPE_CATALOGUE", raising=False)
