"""The built distributions work without the source tree.

The sdist and wheel are built (`python -m build`: sdist first, the wheel from the unpacked
sdist, so a file the sdist forgets is missing from the wheel too) from a copy of the checkout,
so the build never writes into the working tree. The wheel is installed into a fresh
virtualenv that borrows this environment's dependencies through a `.pth` path line: a path
line only adds the folder to sys.path, it does not run the `.pth` files inside it, so the
checkout's editable-install finder is never loaded and `lorascope` can only come from the
wheel. Then `lorascope registry list` and `lorascope demo` run from an unrelated folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

REPO = Path(__file__).resolve().parents[2]
STAGES = ("registry", "harness", "evals", "reports")
# What the program reads at run time besides its modules (paths inside the wheel).
DATA_FILES = (
    "lorascope/loras.yaml",
    "lorascope/suites/styles-smoke.yaml",
    "lorascope/suites/img2img-smoke.yaml",
    "lorascope/suites/inputs/lighthouse.jpg",
    "lorascope/evals/suites/tiny-styles.yaml",
    "lorascope/evals/suites/hosted-styles.yaml",
    "lorascope/evals/suites/tiny/loras.yaml",
    "lorascope/evals/suites/tiny/tiny-ink.safetensors",
    "lorascope/evals/suites/tiny/tiny-neon.safetensors",
    "lorascope/reports/templates/run.html.j2",
    "lorascope/reports/templates/compare.html.j2",
    "lorascope/reports/templates/_base.html.j2",
    "lorascope/reports/templates/_macros.html.j2",
    "lorascope/reports/templates/report.css",
    "lorascope/reports/templates/report.js",
)
STEP_TIMEOUT_S = 300


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _source_files() -> list[str]:
    """The files a clone would have: tracked plus untracked-but-not-ignored (git's view)."""
    if (REPO / ".git").exists() and shutil.which("git"):
        out = _run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        return sorted({p for p in out.split("\0") if p})
    skip = {".git", ".venv", "build", "dist", "__pycache__", ".pytest_cache", "runs", "test-artifacts"}
    return [
        str(p.relative_to(REPO))
        for p in REPO.rglob("*")
        if not (set(p.relative_to(REPO).parts) & skip) and not p.name.endswith(".egg-info") and (p.is_file() or p.is_symlink())
    ]


def _copy_source(dest: Path) -> Path:
    for rel in _source_files():
        src = REPO / rel
        if not (src.exists() or src.is_symlink()):  # deleted in the working tree
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # lorascope/loras.yaml, lorascope/suites: relative links, valid in the copy
            os.symlink(os.readlink(src), target)
        elif src.is_file():
            shutil.copy2(src, target)
    return dest


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path | str]:
    root = tmp_path_factory.mktemp("dists")
    src = _copy_source(root / "src")
    out = root / "dist"
    result = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)])
    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0], "log": result.stdout + result.stderr}


def test_the_wheel_holds_only_the_lorascope_package_and_its_run_time_data(dists):
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/RECORD"))
        record = whl.read(f"{dist_info}/RECORD").decode()
        top_level = whl.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    recorded = [line.split(",")[0] for line in record.splitlines() if line]
    assert {n.split("/")[0] for n in names} == {"lorascope", dist_info}
    assert {n.split("/")[0] for n in recorded} == {"lorascope", dist_info}
    assert sorted(recorded) == sorted(names)
    assert top_level == ["lorascope"]
    missing = [f for f in DATA_FILES if f not in names]
    assert not missing, f"package data missing from the wheel: {missing}"
    for stage in STAGES:
        assert f"lorascope/{stage}/__init__.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")]
    # every entry point targets lorascope.* (a bare `harness.` would not import once installed)
    targets = [line.split("=", 1)[1].strip() for line in entry_points.splitlines() if "=" in line]
    assert targets and all(t.startswith("lorascope.") for t in targets), targets


def test_the_sdist_carries_the_data_as_real_files_and_the_build_does_not_warn(dists):
    with tarfile.open(dists["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1]: m for m in sdist.getmembers() if "/" in m.name}
    for rel in ("lorascope/loras.yaml", "lorascope/suites/styles-smoke.yaml", "evals/suites/tiny/tiny-ink.safetensors",
                "reports/templates/run.html.j2", "pyproject.toml", "README.md"):
        assert rel in members and members[rel].isfile(), rel  # the symlinked catalogue is copied in
    # each data folder is a listed package, so setuptools has nothing to guess about
    assert "Package would be ignored" not in dists["log"] and "absent from the `packages`" not in dists["log"]


def test_twine_check_passes_on_the_wheel_and_the_sdist(dists):
    result = _run([sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])])
    assert result.stdout.count("PASSED") == 2, result.stdout


def _purelib_of(python: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(_run([str(python), "-c", code]).stdout.strip())


INSIDE = textwrap.dedent(
    """
    import importlib.metadata as md, importlib.util, json, os, sys
    import lorascope, lorascope.evals.pytest_plugin as plugin, lorascope.registry.catalogue as catalogue
    import lorascope.reports.render as render
    providers = {ep.name: ep.load().__module__ for ep in md.entry_points(group="lorascope.providers")}
    print(json.dumps({
        "lorascope": lorascope.__file__,
        "catalogue": str(catalogue.PROJECT_CATALOGUE),
        "templates": str(render.TEMPLATE_DIR),
        "suites": str(plugin.SUITES_DIR),
        "provider_files": sorted(sys.modules[m].__file__ for m in providers.values()),
        "bare": {name: importlib.util.find_spec(name) is not None for name in %r},
        "sys_path": sys.path,
        "cwd": os.getcwd(),
    }))
    """
    % (STAGES,)
)


def test_the_installed_wheel_runs_demo_and_registry_list_from_an_unrelated_folder(dists, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # install first, while the fresh environment sees nothing but itself
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          str(dists["wheel"])])
    site = _purelib_of(python)
    here = sysconfig.get_paths()
    (site / "_lorascope_test_deps.pth").write_text(
        "".join(f"{p}\n" for p in dict.fromkeys((here["purelib"], here["platlib"]))), encoding="utf-8"
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LORASCOPE_CATALOGUE", "PYTHONSTARTUP")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONNOUSERSITE="1",
               LORASCOPE_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", COLUMNS="200")

    where = json.loads(_run([str(python), "-c", INSIDE], cwd=work, env=env).stdout)
    for key in ("lorascope", "catalogue", "templates", "suites"):
        assert Path(where[key]).is_relative_to(site), (key, where[key])
    assert where["provider_files"] and all(Path(f).is_relative_to(site) for f in where["provider_files"])
    assert where["bare"] == {stage: False for stage in STAGES}  # no top-level `harness`, `evals`, ...
    assert str(REPO) not in where["sys_path"]
    assert Path(where["cwd"]) == work.resolve() and not work.resolve().is_relative_to(REPO)  # an unrelated folder

    listing = _run([str(env_dir / "bin" / "lorascope"), "registry", "list"], cwd=work, env=env).stdout
    assert f"LoRAs in {site / 'lorascope' / 'loras.yaml'}" in listing and "classic-painting" in listing

    out = work / "demo"
    demo = _run([str(env_dir / "bin" / "lorascope"), "demo", "--out", str(out)], cwd=work, env=env).stdout
    report = out / "run" / "report.html"
    assert f"report: {report}" in demo and (out / "run" / "run.db").is_file()
    html = report.read_text(encoding="utf-8")
    css = (REPO / "reports" / "templates" / "report.css").read_text(encoding="utf-8")
    assert "demo-ink" in html and css in html  # rendered from the wheel's templates, its CSS inlined
    assert not list(work.glob("*.egg-info")) and not (work / "build").exists()
