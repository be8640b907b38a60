"""src/map_report.py end to end: a tiny trained checkpoint, a fake Oxford-layout probe, labelled photos."""

from __future__ import annotations

import pytest

from helpers import ROOT, compose_train, read_csv, run_cli, write_oxford_pets

OXFORD_SAMPLE = ROOT.parent / "shared" / "data" / "oxford-pets-sample"
FAST = ["methods=[gradcam,hirescam]", "layers=[relu3,relu2,relu2*relu3]", "faithfulness_images=6", "faithfulness_steps=4"]


def test_report_scores_every_method_and_layer_beside_the_references(tmp_path, trained, capsys, caplog):
    import logging

    from map_report import map_report

    probe = write_oxford_pets(tmp_path / "pets")
    with caplog.at_level(logging.WARNING, logger="catdog"):
        map_report(compose_train(tmp_path, [f"ckpt_path={trained['ckpt']}", f"probe={probe}", f"data.root={trained['root']}",
                                            "device=cpu", *FAST], config_name="map_report"))
    # Oxford's .mat files among its images and its listed-but-missing images are set aside, not counted
    # as unreadable files among those used.
    assert "no unreadable files; set aside" in caplog.text
    run = tmp_path / "run"
    rows = read_csv(run / "map_report.csv", records=True)
    assert [(r["method"], r["layer"]) for r in rows] == [
        ("gradcam", "relu3"), ("gradcam", "relu2"), ("gradcam", "relu2*relu3"), ("hirescam", "relu3"), ("hirescam", "relu2"),
        ("hirescam", "relu2*relu3"), ("centre", "-"), ("uniform", "-")]
    for row in rows:
        for column in ("energy_on_animal", "auroc_on_animal", "max_on_animal", "pointing_on_animal", "pointing_on_head",
                       "deletion_auc", "insertion_auc"):
            assert 0.0 <= float(row[column]) <= 1.0, (row, column)
    markdown = (run / "map_report.md").read_text()
    assert "| centre | - |" in markdown and (run / "map_report.png").stat().st_size > 1000
    assert "with the animal blurred away" in markdown
    assert (run / "map_report_probe_grid.png").stat().st_size > 1000  # gradcam relu3's maps, the animals outlined
    assert {r["reason"] for r in read_csv(run / "bad_files.csv", records=True)} >= {"not an image file name"}
    assert "| hirescam | relu2 |" in capsys.readouterr().out


def test_report_on_the_probe_alone_gradient_free_and_contrastive(tmp_path, trained):
    from map_report import map_report

    probe = write_oxford_pets(tmp_path / "pets")
    cfg = compose_train(tmp_path, [f"ckpt_path={trained['ckpt']}", f"probe={probe}", "methods=[scorecam]",
                                   "layers=[relu3]", "contrast=true"], config_name="map_report")
    map_report(cfg)
    rows = read_csv(tmp_path / "run" / "map_report.csv", records=True)
    assert [r["method"] for r in rows] == ["scorecam", "centre", "uniform"]
    assert rows[0]["energy_on_animal"] and rows[0]["deletion_auc"] == ""  # no labelled photos: no curves
    assert "minus the other" in (tmp_path / "run" / "map_report.md").read_text()


def test_user_errors(tmp_path, trained):
    from catdog.errors import UserError
    from map_report import map_report

    probe = write_oxford_pets(tmp_path / "pets")
    base = [f"ckpt_path={trained['ckpt']}"]
    for args, message in [([f"probe={probe}", "methods=[nosuchcam]"], "nosuchcam"), ([f"probe={probe}", "layers=[conv9]"],
                          "conv1, conv2, conv3"), ([f"probe={trained['root']}"], "not an Oxford-IIIT Pet folder")]:
        with pytest.raises(UserError, match=message):
            map_report(compose_train(tmp_path, [*base, *args], config_name="map_report"))
    proc = run_cli("map_report", *base, f"paths.output_root={tmp_path}")  # as a user sees it: one line, exit 2
    assert proc.returncode == 2 and "nothing to score" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_report_on_the_real_sample(tmp_path, trained):
    if not (OXFORD_SAMPLE / "annotations").is_dir():
        pytest.skip(f"the Oxford-IIIT Pet sample is not here ({OXFORD_SAMPLE}): it lives beside the project in ../shared")
    proc = run_cli("map_report", f"ckpt_path={trained['ckpt']}", f"probe={OXFORD_SAMPLE}", f"data.root={OXFORD_SAMPLE}",
                   f"paths.output_root={tmp_path}", "methods=[gradcam,layercam]", "layers=[relu3]", "probe_images=60",
                   "faithfulness_images=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "map_report").iterdir()
    rows = {r["method"]: r for r in read_csv(run / "map_report.csv", records=True)}
    assert float(rows["uniform"]["energy_on_animal"]) == pytest.approx(0.41, abs=0.05)
    assert all(float(rows[m]["pointing_on_head"]) >= 0 for m in ("gradcam", "layercam", "centre"))



def test_zero_curve_photos_is_one_line(tmp_path, trained):
    from catdog.errors import UserError
    from map_report import map_report

    cfg = compose_train(tmp_path, [f"ckpt_path={trained['ckpt']}", f"data.root={trained['root']}", "faithfulness_images=0"],
                        config_name="map_report")
    with pytest.raises(UserError, match="faithfulness_images=0 measures no deletion or insertion curve"):
        map_report(cfg)
