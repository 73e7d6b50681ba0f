"""Datasets for users with internet: without any local data root the hub copy is used (one log line says so);
offline, or with a local data root that lacks a file, the one-line DataMissing error stays."""
import sys
import types

import pytest
from omegaconf import OmegaConf

from peft_repro.tasks import DataMissing, base, build_task

HUB_ROWS = [{"meaning_representation": "name[Aromi]", "target": "Aromi is a place."},
            {"meaning_representation": "name[Bibimbap]", "target": "Bibimbap is a pub."}]


def e2e(hub_fallback):
    return OmegaConf.create({"name": "e2e", "folder": "e2e", "hub_fallback": hub_fallback, "max_train_examples": None,
                             "low_data": None, "template": "{mr}\n"})


@pytest.fixture
def fake_hub(monkeypatch):
    """`datasets.load_dataset` answering from HUB_ROWS, and a hub that is reachable; records what was asked."""
    asked = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda name, split: asked.append((name, split)) or HUB_ROWS
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setattr(base, "hub_reachable", lambda timeout=3.0: True)
    return asked


def test_no_local_data_root_loads_the_hub_copy_and_says_so(tmp_path, fake_hub, caplog):
    task = build_task(e2e("auto"), str(tmp_path / "no-such-root"))
    with caplog.at_level("WARNING"):
        rows = task.rows("train")
    assert rows == [("name[Aromi]", "Aromi is a place."), ("name[Bibimbap]", "Bibimbap is a pub.")]
    assert fake_hub == [("GEM/e2e_nlg", "train")]
    [line] = [r.getMessage() for r in caplog.records if "HF hub" in r.getMessage()]
    assert str(tmp_path / "no-such-root") in line and "e2e" in line


def test_a_local_data_root_without_the_file_is_an_error_not_a_download(tmp_path, fake_hub):
    (tmp_path / "e2e").mkdir()  # a data root exists: a missing file is a setup mistake, named with its path
    with pytest.raises(DataMissing, match=str(tmp_path / "e2e" / "trainset.csv")):
        build_task(e2e("auto"), str(tmp_path)).rows("train")
    assert fake_hub == []


@pytest.mark.parametrize("mode, reachable, loads", [("auto", False, False), (False, True, False), (True, True, True)])
def test_hub_fallback_modes(tmp_path, fake_hub, monkeypatch, mode, reachable, loads):
    monkeypatch.setattr(base, "hub_reachable", lambda timeout=3.0: reachable)
    task = build_task(e2e(mode), str(tmp_path / "no-such-root"))
    if loads:
        assert len(task.rows("train")) == 2
    else:  # offline (auto) or switched off: today's error, naming the missing file
        with pytest.raises(DataMissing, match="E2E train split not found"):
            task.rows("train")
        assert fake_hub == []


def test_offline_environment_is_unreachable_at_once(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert base.hub_reachable() is False
