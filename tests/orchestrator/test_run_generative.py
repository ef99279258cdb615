"""Generative purifiers end to end on digits: one generator trained by a cell of its own and
shared by vae_purify and mlvgm_purify, attack and transfer cells on the purified models,
bad params refused with the line, and `advgrid defenses` over the result."""

from __future__ import annotations

import json

import pytest

from tests.conftest import Cli, RunStudy

pytestmark = pytest.mark.usefixtures("one_thread")

STUDY = """\
name: generative
datasets:
  - name: digits
    eval_size: 48
models:
  - name: cnn
    arch: small_cnn
    train: {epochs: 10, lr: 0.003, seed: 0}
defenses:
  - name: none
  - {name: vae_purify, generator: {width: 16, epochs: 6}}
  - {name: mlvgm_purify, generator: {width: 16, epochs: 6}, alpha: [0, 1, 1], draws: 2,
     adaptive: eot, eot_samples: 2}
attacks:
  - {name: pgd, norm: l2, eps: 1.0, steps: 5}
execution:
  batch_size: 48
"""


@pytest.fixture(scope="module")
def finished(run_study: RunStudy) -> dict[str, str]:
    return run_study(STUDY, "-q", "--no-mlflow", file="generative.yaml").env


@pytest.fixture(scope="module")
def rows(finished: dict[str, str]) -> list[dict]:
    out = Cli()("results", "generative", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    return json.loads(out.output)


def test_one_generator_serves_both_purifiers(rows: list[dict]) -> None:
    assert all(r["state"] == "done" for r in rows)
    trains = [r for r in rows if r["kind"] == "train"]
    assert sorted(r["model"] for r in trains) == ["cnn", "generator"]
    (gen,) = [r for r in trains if r["model"] == "generator"]
    assert gen["params"]["arch"] == "hvae"
    assert gen["defense"] == "mlvgm_purify"
    metrics = gen["metrics"]
    assert metrics["eval_elbo"] < 0
    assert 0 < metrics["eval_recon_mse"] < 0.1
    assert {f"eval_kl_level_{i}" for i in range(3)} <= set(metrics)


def test_attack_cells_record_the_generator_metrics(rows: list[dict]) -> None:
    attacks = [r for r in rows if r["kind"] == "attack"]
    # none, vae_purify, mlvgm_purify (EOT) and its non-adaptive twin
    assert len(attacks) == 4
    for r in attacks:
        if r["defense"] in ("vae_purify", "mlvgm_purify"):
            m = r["metrics"]
            assert 0 <= m["generator_recon_accuracy"] <= 1
            assert {"generator_keep_0_accuracy", "generator_keep_1_accuracy"} <= set(m)
            assert 0 <= m["robust_accuracy"] <= m["clean_accuracy"] + 1e-9
        # a randomized purifier is also scored on 10 fresh draws, worst case per sample
        worst = r["metrics"].get("robust_accuracy_worst_of_10")
        if r["defense"] == "mlvgm_purify":
            assert worst <= r["metrics"]["robust_accuracy_mean_of_10"]
        else:
            assert worst is None
    eot = [r for r in attacks if r["metrics"].get("adaptive_eot")]
    assert len(eot) == 1
    assert eot[0]["metrics"]["eot_samples"] == 2


def test_advgrid_defenses_shows_both_purifiers(finished: dict[str, str]) -> None:
    out = Cli()("defenses", "generative", "--format", "json", env=finished)
    assert out.exit_code == 0, out.output
    table = {(r["model"], r["defense"]): r for r in json.loads(out.output)}
    for name in ("vae_purify", "mlvgm_purify"):
        row = table[(f"cnn+{name}", name)]
        assert row["oblivious_robust_accuracy"] is not None
        assert row["adaptive_robust_accuracy"] is not None
    assert table[("cnn+mlvgm_purify", "mlvgm_purify")]["non_adaptive_robust_accuracy"] is not None
    # a generator whose coarse code does not keep the class is said to be one
    cells = Cli()("results", "generative", "--kind", "attack", "--format", "json", env=finished)
    metrics = next(r["metrics"] for r in json.loads(cells.output) if r["defense"] == "vae_purify")
    lost = metrics["generator_keep_0_accuracy"] < metrics["generator_recon_accuracy"] - 0.10
    for name in ("vae_purify", "mlvgm_purify"):
        shown = {f["flag"] for f in table[(f"cnn+{name}", name)]["flags"]}
        assert ("coarse_loses_class" in shown) == lost


def test_min_norm_is_the_worst_case_over_the_attack_cells(
    finished: dict[str, str], rows: list[dict]
) -> None:
    out = Cli()(
        "min-norm",
        "generative",
        "--format",
        "json",
        "--budget",
        "0",
        "--budget",
        "0.5",
        "--budget",
        "1",
        "--budget",
        "10",
        env=finished,
    )
    assert out.exit_code == 0, out.output
    table = {r["model"]: r for r in json.loads(out.output)}
    assert set(table) == {"cnn", "cnn+vae_purify", "cnn+mlvgm_purify"}
    attacks = [r for r in rows if r["kind"] == "attack"]
    for model, row in table.items():
        defense = model.partition("+")[2] or "none"
        cells = [r for r in attacks if r["defense"] == defense]
        assert row["cells"] == len(cells)
        assert row["n"] == 48 == len(row["minimum"])
        acc = [row["accuracy"][b] for b in ("0", "0.5", "1", "10")]
        assert acc == sorted(acc, reverse=True)
        # every cell attacked within L2 1.0: none leaves more robust than the worst case
        assert acc[2] <= min(c["metrics"]["robust_accuracy"] for c in cells) + 1e-6
        assert acc[0] <= max(c["metrics"]["clean_accuracy"] for c in cells) + 1e-6
        assert row["clean_errors"] == sum(1 for m in row["minimum"] if m == 0)
        assert all(m is None or 0 <= m <= 1.0 + 1e-5 for m in row["minimum"])
    # transfer cells onto a model count too: never more robust than its attack cells alone
    alone = Cli()(
        "min-norm",
        "generative",
        "--format",
        "json",
        "--no-transfers",
        "--budget",
        "1",
        env=finished,
    )
    assert alone.exit_code == 0, alone.output
    moved = [r for r in rows if r["kind"] == "transfer"]
    for r in json.loads(alone.output):
        row = table[r["model"]]
        assert r["transfer_cells"] == 0
        onto = [t for t in moved if t["target"] == r["model"] and t["source"] != r["model"]]
        assert row["transfer_cells"] == len(onto) > 0
        assert row["transferred_from"] == sorted({t["source"] for t in onto})
        assert row["accuracy"]["1"] <= r["accuracy"]["1"]
        inf = float("inf")
        assert all(
            (inf if a is None else a) <= (inf if b is None else b)
            for a, b in zip(row["minimum"], r["minimum"], strict=True)
        )
    csv = Cli()("min-norm", "generative", "--format", "csv", env=finished)
    assert csv.exit_code == 0, csv.output
    assert len(csv.output.strip().splitlines()) == 1 + 3 * 48


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{name: mlvgm_purify, alpha: [0, 1]}", "alpha lists 2 values but the generator has 3"),
        ("{name: mlvgm_purify, draws: 0}", "draws"),
        ("{name: mlvgm_purify, alpha: [0, 0.5, 2]}", "alpha[2] is 2"),
    ],
)
def test_bad_purifier_params_are_refused_with_the_line(tmp_path, entry: str, message: str) -> None:
    text = STUDY.replace(
        "  - {name: vae_purify, generator: {width: 16, epochs: 6}}", f"  - {entry}"
    )
    study = tmp_path / "bad.yaml"
    study.write_text(text)
    out = Cli()("run", study, "--dry-run")
    assert out.exit_code != 0
    assert message in out.output
    assert "bad.yaml" in out.output
    assert "line 11: defenses[1]" in out.output


def test_attacks_on_the_generator_are_planned_on_purifiers_only(tmp_path) -> None:
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    text = STUDY.replace(
        "  - {name: pgd, norm: l2, eps: 1.0, steps: 5}\n",
        "  - {name: pgd, norm: l2, eps: 1.0, steps: 5}\n  - {name: vae_latent, eps: 1.0}\n",
    )
    study = tmp_path / "latent.yaml"
    study.write_text(text)
    attacks = [c for c in expand(loader.load(study)).cells if c.kind == "attack"]
    latent = [c for c in attacks if c.spec["attack"]["name"] == "vae_latent"]
    # vae_purify, mlvgm_purify (EOT) and its twin; not the undefended cnn
    assert sorted(c.spec["defense"]["name"] for c in latent) == [
        "mlvgm_purify",
        "mlvgm_purify",
        "vae_purify",
    ]
    assert len(attacks) == 4 + 3
    # latent_projection never runs the encoder these attacks move: none of their cells on it
    projected = text.replace(
        "  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n",
        "  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n"
        "  - {name: latent_projection, generator: {width: 16, epochs: 6}, adaptive: bpda+eot}\n",
    )
    (tmp_path / "projected.yaml").write_text(projected)
    cells = expand(loader.load(tmp_path / "projected.yaml")).cells
    on_projection = [
        c.spec["attack"]["name"]
        for c in cells
        if c.kind == "attack" and c.spec["defense"]["name"] == "latent_projection"
    ]
    assert sorted(on_projection) == ["pgd", "pgd"]  # adapted, and its twin
    alone = text.replace("  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n", "").replace(
        "  - {name: mlvgm_purify, generator: {width: 16, epochs: 6}, alpha: [0, 1, 1], draws: 2,\n"
        "     adaptive: eot, eot_samples: 2}\n",
        "",
    )
    bad = tmp_path / "alone.yaml"
    bad.write_text(alone)
    out = Cli()("run", bad, "--dry-run")
    assert out.exit_code != 0
    assert "alone.yaml" in out.output
    assert "attacks[1]: vae_latent attacks a generator, and no defense of this study has one" in (
        out.output
    )


def test_the_attack_on_the_range_is_planned_on_every_purifier_once(tmp_path) -> None:
    """on_range decodes prior draws: it is planned on latent_projection too, which needs no
    `adaptive:` for it (it never runs the defense) and gets no twin for it; a study with no
    purifier at all is refused at the attack's line."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    text = STUDY.replace(
        "  - {name: pgd, norm: l2, eps: 1.0, steps: 5}\n",
        "  - {name: on_range, eps: [1.0, 2.0], steps: 10}\n",
    ).replace(
        "  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n",
        "  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n"
        "  - {name: latent_projection, generator: {width: 16, epochs: 6}}\n",
    )
    study = tmp_path / "range.yaml"
    study.write_text(text)
    attacks = [c for c in expand(loader.load(study)).cells if c.kind == "attack"]
    on_range = sorted(
        c.spec["defense"]["name"] for c in attacks if c.spec["attack"]["name"] == "on_range"
    )
    # one cell per purifier, the adapted mlvgm_purify without a twin; not the bare cnn
    assert on_range == ["latent_projection", "mlvgm_purify", "vae_purify"]
    bare = text.replace("  - {name: vae_purify, generator: {width: 16, epochs: 6}}\n", "")
    bare = bare.replace("  - {name: latent_projection, generator: {width: 16, epochs: 6}}\n", "")
    bare = bare.replace(
        "  - {name: mlvgm_purify, generator: {width: 16, epochs: 6}, alpha: [0, 1, 1], draws: 2,\n"
        "     adaptive: eot, eot_samples: 2}\n",
        "",
    )
    (tmp_path / "bare.yaml").write_text(bare)
    out = Cli()("run", tmp_path / "bare.yaml", "--dry-run")
    assert out.exit_code != 0
    assert (
        "on_range attacks a generator, and no defense of this study has a generator: add a "
        "generative purifier (latent_projection, vae_purify or mlvgm_purify)"
    ) in out.output


LEARNED = STUDY.replace(
    "models:\n  - name: cnn\n",
    "models:\n  - name: cnn2\n    arch: small_cnn\n    train: {epochs: 2, seed: 1}\n"
    "  - name: cnn\n",
).replace(
    "attacks:\n",
    "  - {name: mlvgm_purify, label: learned, generator: {width: 16, epochs: 6},\n"
    "     alpha: learned, draws: 2, search: {candidates: 6, samples: 64}, models: [cnn]}\n"
    "  - {name: mlvgm_purify, label: learned_all, generator: {width: 16, epochs: 6},\n"
    "     alpha: learned, draws: 2, search: {candidates: 6, samples: 64}}\n"
    "attacks:\n",
)


def test_a_learned_schedule_is_searched_once_per_wrapped_model(tmp_path) -> None:
    """One search cell per (recipe, model): its inputs are the model's checkpoint and the
    shared generator; the attack cells of the learned entries take it; the other cells'
    keys do not change."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    (tmp_path / "a.yaml").write_text(STUDY)
    (tmp_path / "b.yaml").write_text(LEARNED)
    before = {c.key for c in expand(loader.load(tmp_path / "a.yaml")).cells}
    plan = expand(loader.load(tmp_path / "b.yaml"))
    cells = plan.by_key()
    searches = [c for c in plan.cells if c.spec.get("model", {}).get("name") == "alpha_search"]
    assert sorted(c.spec["for_model"] for c in searches) == ["cnn", "cnn2"]
    (generator,) = [c for c in plan.cells if c.spec.get("model", {}).get("name") == "generator"]
    trains = {c.spec["model"]["name"]: c.key for c in plan.cells if c.kind == "train"}
    for c in searches:
        assert c.inputs["vae"] == ("cell", generator.key, "checkpoint")
        assert c.inputs["checkpoint"] == ("cell", trains[c.spec["for_model"]], "checkpoint")
        assert c.spec["alpha_schedule"]["search"]["candidates"] == 6
    learned = [
        c
        for c in plan.cells
        if c.kind == "attack" and c.spec["defense"]["params"].get("alpha") == "learned"
    ]
    assert len(learned) == 3  # cnn behind both entries, cnn2 behind learned_all
    for c in learned:
        role = c.inputs["alpha_schedule"]
        assert cells[role[1]].spec["for_model"] == c.spec["source"]
    # the cells that were there keep their keys (cnn2 is new, so its cells are too)
    old = {c.key for c in plan.cells if "cnn2" not in json.dumps(c.spec)}
    assert before <= old


def test_alpha_learned_runs_end_to_end(run_study: RunStudy, tmp_path) -> None:
    text = STUDY.replace(
        "attacks:\n",
        "  - {name: mlvgm_purify, label: learned, generator: {width: 16, epochs: 6},\n"
        "     alpha: learned, draws: 2, search: {candidates: 6, samples: 64}}\n"
        "attacks:\n",
    )
    env = run_study(text, "-q", "--no-mlflow", file="learned.yaml").env
    out = Cli()("results", "generative", "--format", "json", env=env)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert all(r["state"] == "done" for r in rows)
    (search,) = [r for r in rows if r["model"] == "alpha_search"]
    assert search["params"]["for_model"] == "cnn"
    alphas = [search["metrics"][f"alpha_level_{i}"] for i in range(3)]
    assert all(0 <= a <= 1 for a in alphas)
    assert 0 <= search["metrics"]["search_score"] <= search["metrics"]["search_clean_accuracy"]
    used = [
        [r["metrics"][f"mlvgm_alpha_level_{i}"] for i in range(3)]
        for r in rows
        if r["kind"] == "attack" and r["defense"] == "mlvgm_purify"
    ]
    # the EOT entry and its twin at [0, 1, 1]; the learned entry at the searched schedule
    assert sorted(used) == sorted([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0], alphas])


def test_the_report_shows_what_each_purifier_makes_of_the_examples(
    finished: dict[str, str], tmp_path
) -> None:
    """The defended rows are the purifier's own output: recomputed here from the generator
    the attack cell depended on, they match the images on the page to the PNG's 8 bits."""
    import base64
    import io
    import re

    import numpy as np
    import torch
    from PIL import Image

    from orchestrator.report import defended as report_defended
    from storage import ArtifactStore, Database
    from tasks.cells.worker import load_dataset, load_model
    from tasks.defenses.purification import purify

    page = tmp_path / "report.html"
    out = Cli()("report", "generative", "-o", page, "--examples", "8", env=finished)
    assert out.exit_code == 0, out.output
    html = page.read_text()
    assert "clean, through vae_purify</th>" in html
    assert "clean, through mlvgm_purify (α per level 0, 1, 1), one draw</th>" in html
    sets = html.count("clean, through ")
    assert html.count('class="example defended"') == 2 * 6 * sets
    # the first vae_purify set on the page, recomputed
    db = Database.open(finished["ADVGRID_DB"])
    store = ArtifactStore(finished["ADVGRID_STORE"])
    cells = db.cells(db.get_study("generative").id)
    by_key = {c.key: c for c in cells}
    cell = next(c for c in cells if c.kind == "attack" and '"name":"vae_purify"' in c.spec_json)
    adv, _ = store.get(cell.artifacts["adversarial"])
    x = adv["x_adv"][:4]
    shown = report_defended.through(
        cell, json.loads(cell.spec_json)["defense"], by_key, store, x, x
    )
    assert shown is not None
    vae = load_model(
        {"inputs": {"vae": report_defended._artifact_of(cell, "vae", by_key)}},
        "vae",
        store,
        torch.device("cpu"),
    )
    with torch.no_grad():
        expected = purify(vae, x, [0.0, 0.0, 0.0], None)
    assert torch.allclose(shown.clean, expected, atol=1e-6)
    assert not torch.allclose(expected, x, atol=0.05)  # a reconstruction, not the input
    # and the page's first defended image is the first shown sample's reconstruction
    data, _ = load_dataset(json.loads(cell.spec_json)["dataset"])
    order = torch.argsort((~adv["success"].bool()).to(torch.int8), stable=True)
    with torch.no_grad():
        first = purify(vae, data.images(adv["indices"][order[:1]]), [0.0] * 3, None)[0, 0]
    uris = re.findall(r'class="example defended" src="data:image/png;base64,([^"]+)"', html)
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(uris[0]))), dtype=np.float64) / 255
    assert np.abs(png - first.numpy()).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    ("arch", "part"),
    [
        ("hvae", "a generative purifier or of gat"),
        ("vae", "a generative purifier or of gat"),
        ("alpha_schedule", "mlvgm_purify with `alpha: learned`"),
        ("dae", "autoencoder_purify"),
    ],
)
def test_a_defenses_trained_part_is_refused_as_a_study_model(
    tmp_path, arch: str, part: str
) -> None:
    text = STUDY.replace("    arch: small_cnn\n", f"    arch: {arch}\n")
    study = tmp_path / "part.yaml"
    study.write_text(text)
    out = Cli()("run", study, "--dry-run")
    assert out.exit_code != 0
    assert (
        f"line 7: models[0].arch: {arch!r} is not a classifier: it is a trained part of {part}"
        in (out.output)
    )


def _generator_file(finished: dict[str, str], rows: list[dict], folder) -> str:
    """The generator the finished study trained, copied out of its store as a user would."""
    from storage import ArtifactStore, Database

    db = Database.open(finished["ADVGRID_DB"])
    (gen,) = [r for r in rows if r["model"] == "generator"]
    cell = next(c for c in db.cells(db.get_study("generative").id) if c.key == gen["cell_key"])
    path = folder / "generator.safetensors"
    path.write_bytes(
        ArtifactStore(finished["ADVGRID_STORE"]).read_bytes(cell.artifacts["checkpoint"])
    )
    return str(path)


def test_a_generator_read_from_a_file_stands_in_for_the_trained_one(
    run_study: RunStudy, finished: dict[str, str], rows: list[dict], tmp_path_factory
) -> None:
    """The same generator from a file: no generator cell, the file's recipe and content in
    the keys, and the very numbers of the study that trained it."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    folder = tmp_path_factory.mktemp("gen-file")
    path = _generator_file(finished, rows, folder)
    text = STUDY.replace("generator: {width: 16, epochs: 6}", f"generator: {{checkpoint: {path}}}")
    (folder / "from_file.yaml").write_text(text)
    plan = expand(loader.load(folder / "from_file.yaml"))
    assert [c.spec["model"]["name"] for c in plan.cells if c.kind == "train"] == ["cnn"]
    purified = [
        c for c in plan.cells if c.kind == "attack" and "purify" in c.spec["defense"]["name"]
    ]
    for c in purified:
        generator = c.spec["defense"]["params"]["generator"]
        assert generator["width"] == 16  # the file's recipe
        assert generator["checkpoint"].startswith("sha256:")
        assert path not in json.dumps(c.spec)
        assert c.inputs["vae"][0] == "file"
    env = run_study(text, "-q", "--no-mlflow", file="from_file.yaml").env
    out = Cli()("results", "generative", "--format", "json", env=env)
    again = json.loads(out.output)
    assert all(r["state"] == "done" for r in again)

    def robust(rs: list[dict]) -> dict:
        return {
            (r["defense"], r["metrics"].get("adaptive_eot")): r["metrics"]["robust_accuracy"]
            for r in rs
            if r["kind"] == "attack"
        }

    assert robust(again) == robust(rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("eval_size: 48", "eval_size: 48\n    split_seed: 1"), "was trained on digits"),
        (("{checkpoint: FILE}", "{checkpoint: FILE, width: 32}"), "generator.width: is 32"),
        (("{checkpoint: FILE}", "{checkpoint: missing.safetensors}"), "cannot read"),
        (("{checkpoint: FILE}", "{checkpoint: CNN}"), "is not a generator file written by"),
    ],
)
def test_a_generator_file_that_does_not_fit_is_refused(
    finished: dict[str, str], rows: list[dict], tmp_path, change: tuple[str, str], message: str
) -> None:
    from storage import ArtifactStore, Database

    path = _generator_file(finished, rows, tmp_path)
    db = Database.open(finished["ADVGRID_DB"])
    (cnn,) = [r for r in rows if r["model"] == "cnn" and r["kind"] == "train"]
    cell = next(c for c in db.cells(db.get_study("generative").id) if c.key == cnn["cell_key"])
    classifier = tmp_path / "cnn.safetensors"
    classifier.write_bytes(
        ArtifactStore(finished["ADVGRID_STORE"]).read_bytes(cell.artifacts["checkpoint"])
    )
    text = STUDY.replace("generator: {width: 16, epochs: 6}", "generator: {checkpoint: FILE}", 1)
    text = text.replace(*change).replace("FILE", path).replace("CNN", str(classifier))
    study = tmp_path / "bad.yaml"
    study.write_text(text)
    out = Cli()("run", study, "--dry-run")
    assert out.exit_code != 0
    assert "bad.yaml" in out.output
    assert "defenses[1].generator" in out.output
    assert message in out.output


def test_the_report_shows_an_attack_on_the_generator_with_its_target_images(
    run_study: RunStudy, tmp_path
) -> None:
    text = STUDY.replace(
        "  - {name: pgd, norm: l2, eps: 1.0, steps: 5}\n",
        "  - {name: vae_latent, eps: 2.0, steps: 10}\n",
    )
    env = run_study(text, "-q", "--no-mlflow", file="latent.yaml").env
    page = tmp_path / "report.html"
    out = Cli()("report", "generative", "-o", page, "--examples", "8", env=env)
    assert out.exit_code == 0, out.output
    html = page.read_text()
    # one example set per purifier: vae_purify, mlvgm_purify (EOT) and its twin
    assert html.count("<th>target image</th>") == 3
    assert html.count('class="example target"') == 3 * 6
    assert html.count("<th>adversarial, through vae_purify</th>") == 1


GAT_STUDY = """\
name: gat_file
datasets:
  - name: digits
    eval_size: 48
models:
  - name: cnn_gat
    arch: small_cnn
    train: {epochs: 2, lr: 0.003, seed: 0,
            defense: {name: gat, levels: all, eps: 0.5, steps: 2, generator: GENERATOR}}
attacks:
  - {name: pgd, norm: l2, eps: 1.0, steps: 5}
execution:
  batch_size: 48
"""


def test_gat_trains_on_a_generator_read_from_a_file(
    run_study: RunStudy, finished: dict[str, str], rows: list[dict], tmp_path_factory
) -> None:
    """The same generator from a file or trained by the study: the same gat weights."""
    from orchestrator.study import loader
    from orchestrator.study.plan import expand

    folder = tmp_path_factory.mktemp("gat-file")
    path = _generator_file(finished, rows, folder)
    from_file = GAT_STUDY.replace("GENERATOR", f"{{checkpoint: {path}}}")
    trained = GAT_STUDY.replace("GENERATOR", "{width: 16, epochs: 6}")
    (folder / "gat.yaml").write_text(from_file)
    (train,) = [c for c in expand(loader.load(folder / "gat.yaml")).cells if c.kind == "train"]
    assert train.inputs["vae"][0] == "file"
    results = []
    for text, name in ((from_file, "gat_file.yaml"), (trained, "gat_trained.yaml")):
        env = run_study(text, "-q", "--no-mlflow", file=name).env
        out = json.loads(Cli()("results", "gat_file", "--format", "json", env=env).output)
        assert all(r["state"] == "done" for r in out)
        timing = ("wall_s", "samples_per_s", "train_s")
        results.append(
            {
                (r["kind"], r["model"]): {k: v for k, v in r["metrics"].items() if k not in timing}
                for r in out
            }
        )
    assert results[0][("train", "cnn_gat")] == results[1][("train", "cnn_gat")]
    assert results[0][("attack", "cnn_gat")] == results[1][("attack", "cnn_gat")]
    # a generator trained on other data is refused for gat too
    other = from_file.replace("eval_size: 48", "eval_size: 48\n    split_seed: 2")
    (folder / "other.yaml").write_text(other)
    out = Cli()("run", folder / "other.yaml", "--dry-run")
    assert out.exit_code != 0
    assert "models[0].train.defense.generator.checkpoint" in out.output
    assert "was trained on digits" in out.output
