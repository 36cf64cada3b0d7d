"""Delivery files: Dockerfiles lint, compose validates, and the image's command serves."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest

from service.settings import Settings
from tests.conftest import in_ci
from tests.service_helpers import free_port, service_process

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = ["Dockerfile", "Dockerfile.gpu"]
PROFILES = [None, "gpu", "loadtest"]
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "nmt-service.json"
IN_CI = in_ci()  # CI set to any true value


def find_tool(name: str) -> str:
    """A command from the venv or PATH; missing is a skip on a workstation, a failure in CI."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    found = shutil.which(name, path=path)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is missing in CI: .ci/run must install it")
        pytest.skip(f"{name} not installed (see .ci/run for how CI installs it)")
    return found


# ----- reading a Dockerfile -----


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        out.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return out


def stages(path: Path) -> list[list[Instruction]]:
    """Instructions grouped by build stage, each starting at its FROM."""
    out: list[list[Instruction]] = []
    for ins in instructions(path):
        if ins.keyword == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def final_stage(path: Path) -> list[Instruction]:
    return stages(path)[-1]


def one(stage: list[Instruction], keyword: str) -> str:
    found = [ins.args for ins in stage if ins.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in stage:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def container_command(dockerfile: Path) -> list[str]:
    command = json.loads(one(final_stage(dockerfile), "CMD"))
    assert isinstance(command, list), "CMD must be in exec form (a JSON list)"
    return [str(part) for part in command]


def healthcheck_command(dockerfile: Path) -> list[str]:
    args = one(final_stage(dockerfile), "HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    return [str(part) for part in json.loads(command)]


def with_option(command: list[str], option: str, value: str) -> list[str]:
    """command with the value after option replaced."""
    assert option in command, f"{option} not in {command}"
    i = command.index(option)
    return [*command[: i + 1], value, *command[i + 2 :]]


# ----- linters -----


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = find_tool("hadolint")
    run = subprocess.run(
        [hadolint, dockerfile], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p or "default")
def test_compose_file_validates(profile: str | None) -> None:
    compose = find_tool("docker-compose")
    args = [compose, "-f", "docker-compose.yml"]
    if profile:
        args += ["--profile", profile]
    run = subprocess.run([*args, "config"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    config = run.stdout
    for service in ("api", "prometheus", "grafana"):
        assert re.search(rf"^  {service}:$", config, re.MULTILINE), service
    if profile == "gpu":
        assert re.search(r"^  api-gpu:$", config, re.MULTILINE)
        assert "driver: nvidia" in config and "- gpu" in config
    if profile == "loadtest":
        assert re.search(r"^  loadtest:$", config, re.MULTILINE)
        assert "http://api:8000" in config


def test_ci_script_is_valid_bash() -> None:
    run = subprocess.run(["bash", "-n", ".ci/run"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_make_targets_resolve() -> None:
    make = find_tool("make")
    run = subprocess.run(
        [make, "-n", "-B", "serve", "test", "lint", "bench", "train"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    # torch pinned before the project, or pip resolves the multi-GB CUDA build.
    assert run.stdout.index("pip install torch==2.13.0") < run.stdout.index("pip install -e .")
    assert "python -m service --host 0.0.0.0 --port 8000" in run.stdout


# ----- what the images contain -----


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_runs_the_service_as_non_root(dockerfile: str) -> None:
    stage = final_stage(REPO / dockerfile)
    assert container_command(REPO / dockerfile)[:3] == ["python", "-m", "service"]
    assert one(stage, "EXPOSE") == "8000"
    user = one(stage, "USER").split(":")[0]
    assert user not in ("0", "root")
    assert "/health/ready" in " ".join(healthcheck_command(REPO / dockerfile))


def test_gpu_image_installs_onnxruntime_gpu_alone() -> None:
    def listed(*args: str) -> list[str]:
        run = subprocess.run(
            [sys.executable, "deploy/requirements.py", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.split()

    cpu = listed()
    gpu = listed("--extra", "gpu", "--drop", "onnxruntime")
    assert "torch==2.13.0" in cpu and "torch==2.13.0" in gpu
    assert any(r.startswith("onnxruntime>") for r in cpu)
    # Both distributions install the `onnxruntime` module; together they overwrite each other.
    assert not any(re.match(r"onnxruntime[<>=!~ ]", r) for r in gpu)
    assert any(r.startswith("onnxruntime-gpu") for r in gpu)


def test_dockerignore_keeps_what_the_images_copy() -> None:
    ignored = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for dockerfile in DOCKERFILES:
        for ins in instructions(REPO / dockerfile):
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            for source in ins.args.split()[:-1]:
                source = source.rstrip("/")
                hit = [p for p in ignored if fnmatch(source, p) or source.startswith(p + "/")]
                assert not hit, f"{dockerfile} copies {source}, which .dockerignore drops ({hit})"


def test_monitoring_config_points_at_the_api() -> None:
    prometheus = (REPO / "deploy" / "prometheus" / "prometheus.yml").read_text()
    assert '"api:8000"' in prometheus and "metrics_path: /metrics" in prometheus
    datasource = (
        REPO / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    ).read_text()
    uid = re.search(r"uid: (\S+)", datasource)
    assert uid is not None and "url: http://prometheus:9090" in datasource
    dashboard = json.loads(DASHBOARD.read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid.group(1)}


# ----- the docs: the settings table, links -----

CONFIGURATION = REPO / "docs" / "configuration.md"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_defaults() -> dict[str, str]:
    """Each setting of docs/configuration.md's tables with its default cell."""
    text = CONFIGURATION.read_text()
    return dict(re.findall(r"^\| `(NMT_[A-Z_]+)` \| ([^|]*?) \|", text, re.MULTILINE))


def default_matches(cell: str, default: object) -> bool:
    """A cell states the default: `value` as the code has it, or `(...)` for unset."""
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if literal is None:
        return cell.startswith("(") and default in (None, [])
    value = literal.group(1)
    if isinstance(default, bool):
        return value == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(value) == default
        except ValueError:
            return False
    if isinstance(default, Path):
        return Path(value) == default
    return isinstance(default, str) and value == default


@pytest.mark.parametrize(
    ("cell", "default", "matches"),
    [
        ("`5`", 5.0, True),
        ("`10`", 5.0, False),
        ("`models`", Path("models"), True),
        ("`memory://`", "memory://", True),
        ("(none)", "memory://", False),
        ("(none)", None, True),
        ("`none`", None, False),
        ("(none)", [], True),
    ],
)
def test_default_cells_are_read_as_the_code_would(
    cell: str, default: object, matches: bool
) -> None:
    assert default_matches(cell, default) is matches


def test_configuration_page_documents_every_setting_and_its_default() -> None:
    documented = documented_defaults()
    fields = {f"NMT_{name.upper()}": info for name, info in Settings.model_fields.items()}
    assert fields.keys() <= documented.keys(), (
        f"missing from docs/configuration.md: {sorted(fields.keys() - documented.keys())}"
    )
    assert documented.keys() <= fields.keys(), (
        f"in docs/configuration.md but not a setting: {sorted(documented.keys() - fields.keys())}"
    )
    wrong = {
        name: (cell, fields[name].get_default(call_default_factory=True))
        for name, cell in documented.items()
        if not default_matches(cell, fields[name].get_default(call_default_factory=True))
    }
    assert not wrong, f"defaults in docs/configuration.md that the code does not have: {wrong}"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def test_readme_links_every_docs_page() -> None:
    readme = (REPO / "README.md").read_text()
    linked = set(re.findall(r"\]\((docs/[^)#\s]+)", readme))
    pages = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize(
    "page",
    [page for page in DOCS if page.name != "decisions.md"],  # its commands name old commits
    ids=lambda p: p.relative_to(REPO).as_posix(),
)
def test_commands_in_the_docs_run_modules_that_exist(page: Path) -> None:
    """A `python -m X` on a page names a module of this checkout (or an installed one)."""
    modules = set(re.findall(r"python -m ([A-Za-z_][\w.]*)", page.read_text()))
    missing = sorted(m for m in modules if importlib.util.find_spec(m) is None)
    assert not missing, f"{page.name} runs modules that do not exist: {missing}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_links_between_the_docs_resolve(page: Path) -> None:
    """Every relative link names a file of the repository, and its #anchor a heading there."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        missing_anchor = bool(anchor) and resolved.suffix == ".md"
        if not resolved.exists() or (missing_anchor and anchor not in anchors(resolved)):
            broken.append(target)
    assert not broken, f"{page.name}: links that go nowhere: {broken}"


# ----- the image's command, outside a container -----


@dataclass
class Container:
    url: str
    artifacts: Path
    exported: set[Path]  # files the build step exported, before the service started


@pytest.fixture(scope="module")
def container(
    tiny_models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Container]:
    """The CPU image's export step and CMD, run here with /app moved to a temp directory.

    The only change to the command: it listens on a free loopback port instead of
    0.0.0.0:8000, so the test neither exposes a port nor collides with a running service.
    """
    dockerfile = REPO / "Dockerfile"
    app = tmp_path_factory.mktemp("app")
    shutil.copytree(tiny_models_dir, app / "models")
    bin_dir = str(Path(sys.executable).parent)
    # Only the Dockerfile's NMT_ variables: none from the caller's shell.
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("NMT_")}
    base_env |= {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # The suite shares two cores with whatever else runs.
        "NMT_THREADS": "1",
    }

    def stage_env(stage: list[Instruction]) -> dict[str, str]:
        """The stage's NMT_ variables on top of ours, with /app moved to the temp directory."""
        env = dict(base_env)
        for key, value in env_of(stage).items():
            if key.startswith("NMT_"):
                env[key] = value.replace("/app", str(app))
        return env

    # The build stage's export, as the Dockerfile writes it.
    steps = [
        (stage, ins.args)
        for stage in stages(dockerfile)
        for ins in stage
        if ins.keyword == "RUN" and "python -m export" in ins.args
    ]
    assert len(steps) == 1, "one RUN exports the graphs"
    build_stage, step = steps[0]
    export = subprocess.run(
        ["bash", "-o", "pipefail", "-c", step.replace("/app", str(app))],
        cwd=REPO,
        env=stage_env(build_stage),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-2000:]
    env = stage_env(final_stage(dockerfile))
    artifacts = Path(env["NMT_ARTIFACTS_DIR"])
    exported = {p for p in artifacts.rglob("*") if p.is_file()}

    port = free_port()
    command = with_option(
        with_option(container_command(dockerfile), "--host", "127.0.0.1"), "--port", str(port)
    )
    url = f"http://127.0.0.1:{port}"
    with service_process(command, url, cwd=app, env=env, log=app / "service.log", timeout=120):
        yield Container(url, artifacts, exported)


@pytest.mark.slow
def test_container_command_serves_the_build_time_graphs(container: Container) -> None:
    with httpx.Client(base_url=container.url, trust_env=False, timeout=30) as client:
        assert client.get("/health/ready").status_code == 200
        response = client.post(
            "/v1/translate",
            json={
                "text": "A man rides a bike.",
                "source_lang": "en",
                "target_lang": "de",
                "beam_size": 1,
                "max_length": 8,
            },
        )
        assert response.status_code == 200, response.text
        assert response.json()["backend"] == "onnx"
    assert container.exported, "the build step exported no graph"
    now = {p for p in container.artifacts.rglob("*") if p.is_file()}
    assert now == container.exported, "the service exported again instead of using the build's"


@pytest.mark.slow
def test_healthcheck_command_passes_against_the_service(container: Container) -> None:
    port = container.url.rsplit(":", 1)[1]
    command = [
        sys.executable if part == "python" else part.replace(":8000/", f":{port}/")
        for part in healthcheck_command(REPO / "Dockerfile")
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr


@pytest.mark.slow
def test_dashboard_queries_metrics_the_service_exports(container: Container) -> None:
    with httpx.Client(base_url=container.url, trust_env=False) as client:
        exposition = client.get("/metrics").text
    families = set(re.findall(r"^# TYPE (\S+) ", exposition, re.MULTILINE))
    queried = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queried |= set(re.findall(r"\b(nmt_[a-z_]+)", target["expr"]))
    assert queried
    for name in sorted(queried):
        base = re.sub(r"_(bucket|sum|count|total)$", "", name)
        assert name in families or base in families, f"dashboard queries unknown {name}"
