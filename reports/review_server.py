"""`lorascope review`: a small local web app for pairwise votes on a run's images.

The page shows two pictures of one slot (same LoRA, prompt, seed, provider) at two scales, the
no-LoRA baseline among them, left/right shuffled and the scales hidden until the vote. In an
image-conditioned run a slot is also one denoising strength and one input picture: the page
names the strength and shows the input (the run's kept copy, evals.fidelity) beside the pair,
so the question is "which keeps the picture and takes the style better". The
server is stateless between requests apart from run.db: a vote names its slot and both
images by content hash, and is committed (harness.ratings) before the answer goes back, so
a restart loses nothing that was acknowledged and a retried vote is stored once.

Safe by default:
- binds loopback; any other host needs the token generated at start (in the printed URL),
  checked on every request;
- the Host header must be one we serve (no DNS rebinding);
- a state-changing request must be JSON from our own Origin (a foreign page cannot vote);
- images are served by content hash only, never by a path the client names;
- the page is a template with autoescaping, run text reaches it as JSON through
  `textContent`, and a Content-Security-Policy allows only our own script, style and images.
"""

from __future__ import annotations

import ipaddress
import mimetypes
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from lorascope.evals.ratings import PairChooser, Slot, build_slots, pair_key, scale_label
from lorascope.harness.ratings import Choice, Ratings, Vote

TEMPLATE_DIR = Path(__file__).parent / "templates"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class VoteIn(BaseModel):
    """What the page posts: the slot and both images by hash, in the order shown."""

    model_config = ConfigDict(extra="forbid")

    vote_id: str
    rater: str
    slot: str
    left: str
    right: str
    choice: Choice


@dataclass
class ReviewState:
    run_dir: Path
    ratings: Ratings
    chooser: PairChooser
    images: dict[str, Path]  # sha256 -> file, only the run's comparable images and their inputs
    votes: list[Vote] = field(default_factory=list)
    token: str | None = None
    default_rater: str = "me"
    inputs: dict[str, str] = field(default_factory=dict)  # input id -> sha256 of the run's copy
    input_problems: list[str] = field(default_factory=list)  # why an input cannot be shown


def load_state(run_dir: Path, *, token: str | None = None, default_rater: str = "me",
               target_per_lora: int = 30) -> ReviewState:
    """Read the run once: its comparable slots, their image files, the votes so far."""
    from lorascope.harness.store import RunStore

    run_dir = Path(run_dir)
    with RunStore.open(run_dir) as store:
        frame = store.results_frame()
        ratings = Ratings(store.connect())
    slots = build_slots(frame)
    images_root = (run_dir / "images").resolve()
    images: dict[str, Path] = {}
    for slot in slots:
        for ref in slot.images.values():
            path = (run_dir / ref.path).resolve()
            if path.is_relative_to(images_root) and path.is_file():
                images[ref.sha256] = path
    inputs, problems = _input_pictures(run_dir, {s.input_id for s in slots if s.input_id is not None}, images_root)
    for sha, path in inputs.values():
        images[sha] = path
    return ReviewState(run_dir, ratings, PairChooser(slots, target_per_lora=target_per_lora), images,
                       ratings.votes(), token, default_rater,
                       inputs={k: sha for k, (sha, _) in inputs.items()}, input_problems=problems)


def _input_pictures(run_dir: Path, wanted: set[str], images_root: Path) -> tuple[dict[str, tuple[str, Path]], list[str]]:
    """{input id: (sha256, file)} of the run's kept copies of the inputs its slots were made
    from (evals.fidelity.collect_inputs: the copy `score` made, else the suite's local file
    copied now), and why any is not shown. Only files inside the run's images/ are served."""
    if not wanted:
        return {}, []
    from lorascope.evals.fidelity import collect_inputs

    found, problems = collect_inputs(run_dir, fetch=False)  # what the run kept: the page asks no URL itself
    problems = [p.replace(" (no fidelity for its images)", "") for p in problems]
    out: dict[str, tuple[str, Path]] = {}
    for input_id in sorted(wanted):
        if input_id not in found:
            problems.append(f"input picture {input_id!r}: the run keeps no usable copy of it (a ControlNet-only "
                            "input's control picture is not shown); its pairs show no input")
            continue
        sha, rel = found[input_id]
        path = (run_dir / rel).resolve()
        if path.is_relative_to(images_root) and path.is_file():
            out[input_id] = (sha, path)
    return out, problems


def create_app(state: ReviewState, *, allowed_hosts: list[str]) -> Starlette:
    """The ASGI app over one run; `allowed_hosts` are the Host names it answers to."""

    def guard(request: Request) -> Response | None:
        if state.token is not None:
            given = request.query_params.get("token") or request.headers.get("x-review-token") or ""
            if not secrets.compare_digest(given.encode(), state.token.encode()):
                return _error(403, "missing or wrong access token (use the URL `lorascope review` printed)")
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            own = f"{request.url.scheme}://{request.headers.get('host', '')}"
            if origin is not None and origin != own:
                return _error(403, "cross-origin request refused")
            if request.headers.get("sec-fetch-site") not in (None, "same-origin", "none"):
                return _error(403, "cross-site request refused")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return _error(415, "expected application/json")
        return None

    def guarded(handler):
        async def endpoint(request: Request) -> Response:
            refused = guard(request)
            response = refused if refused is not None else await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return endpoint

    async def page(request: Request) -> Response:
        from lorascope.reports.render import environment

        rater = request.query_params.get("rater") or state.default_rater
        html = environment().get_template("review.html.j2").render(
            run=str(state.run_dir), rater=rater, token=state.token or "",
            token_query=f"?token={state.token}" if state.token else "",
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("review.js", "review.css"):
            return _error(404, "not found")
        media = "text/javascript" if name.endswith(".js") else "text/css"
        return Response((TEMPLATE_DIR / name).read_bytes(), media_type=f"{media}; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    async def image(request: Request) -> Response:
        path = state.images.get(request.path_params["sha"])
        if path is None:
            return _error(404, "no such image in this run")
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=31536000, immutable"})

    async def next_pair(request: Request) -> Response:
        rater = _rater(request.query_params.get("rater"), state)
        if isinstance(rater, Response):
            return rater
        exclude = [k for k in request.query_params.getlist("exclude") if k]
        if state.ratings.changed_elsewhere():  # votes imported (or cast elsewhere) while we run
            state.votes = state.ratings.votes()
        pair = state.chooser.choose(state.votes, rater, exclude=exclude)
        body: dict[str, Any] = {"pair": None, "progress": state.chooser.progress(state.votes, rater)}
        if pair is not None:
            s = pair.slot
            body["pair"] = {
                "key": pair.key, "slot": s.key, "lora": s.lora, "provider": s.provider, "prompt": s.prompt,
                "prompt_id": s.prompt_id, "seed": s.seed, "strength": s.strength, "input": None,
                "left": {"sha": pair.left.sha256, "url": _img_url(pair.left.sha256, state)},
                "right": {"sha": pair.right.sha256, "url": _img_url(pair.right.sha256, state)},
            }
            if s.input_id is not None:
                sha = state.inputs.get(s.input_id)
                body["pair"]["input"] = {"id": s.input_id, "sha": sha,
                                         "url": _img_url(sha, state) if sha is not None else None}
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    async def post_vote(request: Request) -> Response:
        try:
            data = VoteIn.model_validate_json(await request.body())
        except ValidationError as exc:
            return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        slot: Slot | None = state.chooser.by_key.get(data.slot)
        if slot is None:
            return _error(400, "slot: not a slot of this run")
        by_sha = {ref.sha256: ref for ref in slot.images.values()}
        left, right = by_sha.get(data.left), by_sha.get(data.right)
        if left is None or right is None or left.sha256 == right.sha256:
            return _error(400, "left/right: not two different images of this slot")
        try:
            vote = Vote(
                vote_id=data.vote_id, rater=data.rater, created_at=time.time(), provider=slot.provider,
                lora=slot.lora, prompt_id=slot.prompt_id, seed=slot.seed, options=slot.options,
                left_cell=left.cell_id, left_index=left.index, left_sha256=left.sha256, left_scale=left.scale,
                left_generation=left.generation_id, right_cell=right.cell_id, right_index=right.index,
                right_sha256=right.sha256, right_scale=right.scale, right_generation=right.generation_id,
                choice=data.choice,
            )
        except ValidationError as exc:
            return _error(400, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        stored = state.ratings.add_vote(vote)  # committed before we answer
        if stored:
            state.votes.append(vote)
        return JSONResponse({
            "stored": stored, "vote_id": vote.vote_id, "key": pair_key(slot.key, left.sha256, right.sha256),
            "left_label": scale_label(left.scale), "right_label": scale_label(right.scale),
            "progress": state.chooser.progress(state.votes, data.rater),
        }, headers={"Cache-Control": "no-store"})

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask; an error here would only be noise

    routes = [
        Route("/", guarded(page), methods=["GET"]),
        Route("/favicon.ico", guarded(favicon), methods=["GET"]),
        Route("/static/{name}", guarded(asset), methods=["GET"]),
        Route("/img/{sha:str}", guarded(image), methods=["GET"]),
        Route("/api/next", guarded(next_pair), methods=["GET"]),
        Route("/api/vote", guarded(post_vote), methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)])


def _img_url(sha: str, state: ReviewState) -> str:
    return f"/img/{sha}" + (f"?token={state.token}" if state.token else "")


def _rater(value: str | None, state: ReviewState) -> str | Response:
    rater = value or state.default_rater
    if not (1 <= len(rater) <= 64) or not rater.isprintable() or rater.strip() != rater:
        return _error(400, "rater: 1-64 printable characters, no leading or trailing spaces")
    return rater


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(SECURITY_HEADERS))


class NothingToReview(ValueError):
    """The run has no pair to vote on."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def allowed_hosts_for(host: str) -> list[str]:
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
    if host not in hosts and host not in ("0.0.0.0", "::"):
        hosts.append(host)
    if host in ("0.0.0.0", "::"):
        return ["*"]  # listening everywhere: the token is what keeps strangers out
    return hosts


def serve(run_dir: Path, *, host: str = "127.0.0.1", port: int = 8765, rater: str = "me",
          announce=print) -> None:
    """Bind, print the URL (with a token when not loopback), serve until Ctrl-C."""
    import socket
    from urllib.parse import quote

    import uvicorn

    token = None if is_loopback(host) else new_token()
    state = load_state(run_dir, token=token, default_rater=rater)
    if not state.chooser.slots:
        state.ratings.close()
        raise NothingToReview(
            f"{run_dir}: nothing to compare: no seeded LoRA image has a partner at another scale or a no-LoRA "
            "baseline of the same prompt and seed (a grid needs a baseline or two scales per LoRA)")
    app = create_app(state, allowed_hosts=allowed_hosts_for(host))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    query = f"?rater={quote(rater)}" + (f"&token={token}" if token else "")
    announce(f"review page: http://{shown}:{bound}/{query}")
    announce(f"{len(state.chooser.slots)} slot(s), {len(state.images)} image(s), {len(state.votes)} vote(s) so far; "
             "Ctrl-C stops (every acknowledged vote is already in run.db)")
    for problem in state.input_problems:
        announce(f"note: {problem}")
    # keep-alive longer than uvicorn's 5 s: a browser tab idles between votes, and a client that
    # reuses a connection the server just closed sees a reset (the page then retries the vote)
    config = uvicorn.Config(app, log_level="warning", access_log=False, backlog=2048, timeout_keep_alive=75)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        state.ratings.close()
