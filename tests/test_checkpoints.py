"""Where a preset's weights come from, checked before anything heavy: a local dir, the Hugging Face cache, or
a hub that answers; safetensors only unless the preset says otherwise (pickled weights can run code)."""
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from aim.config import ConfigError, check_weights, validate
from aim.models import MODELS
from aim.paths import CONF_DIR
from aim.toy import asset_dir

HUB_ID = "llava-hf/llava-onevision-qwen2-7b-ov-hf"


def composed(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return validate(compose("config", overrides=list(overrides)))


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def pickled_checkpoint(tmp_path):
    """The bundled model with its weights as pytorch_model.bin only."""
    path = tmp_path / "pickled"
    shutil.copytree(asset_dir("toy_llava_ov"), path)
    torch.save(load_file(path / "model.safetensors"), path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    return path


@pytest.mark.parametrize("no_hub", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:{port}"}],
                         ids=["offline", "unreachable"])
def test_a_real_preset_without_its_weights_fails_at_validation_saying_how_to_get_them(tmp_path, no_hub):
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "AIM_DATA_DIR": str(tmp_path / "data"),
           **{k: v.format(port=closed_port()) for k, v in no_hub.items()}}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "aim.run", "model=llava_onevision_7b", "+method=aim", "model.device=cpu",
                           "dataset.limit=2", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "aim: invalid config: model.pretrained:" in proc.stderr
    assert f"hf download {HUB_ID}" in proc.stderr and "model.pretrained=<dir>" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - start < 60
    assert not (tmp_path / "data").exists()  # nothing built before the check


def test_weights_in_the_hugging_face_cache_or_a_local_dir_pass_the_check(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / f"models--{HUB_ID.replace('/', '--')}"
    (snapshot / "refs").mkdir(parents=True)
    (snapshot / "refs" / "main").write_text("abc123")
    (snapshot / "snapshots" / "abc123").mkdir(parents=True)
    (snapshot / "snapshots" / "abc123" / "model.safetensors.index.json").write_text("{}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    check_weights(composed(["model=llava_onevision_7b", "+method=aim"]))  # cached: no hub needed
    check_weights(composed([f"model.pretrained={asset_dir('toy_llava_ov')}"]))  # a local dir
    with pytest.raises(ConfigError, match=r"model.pretrained: /nonexistent/ckpt is no directory"):
        check_weights(composed(["model.pretrained=/nonexistent/ckpt"]))


def test_pickled_weights_are_refused_at_validation_unless_use_safetensors_is_false(pickled_checkpoint):
    with pytest.raises(ConfigError, match=r"model.pretrained: the directory .* holds no model.safetensors or "
                                          r"model.safetensors.index.json; it holds pickled weights only: set "
                                          r"model.use_safetensors=false if you trust it"):
        check_weights(composed([f"model.pretrained={pickled_checkpoint}"]))
    check_weights(composed([f"model.pretrained={pickled_checkpoint}", "model.use_safetensors=false"]))


def test_loading_never_falls_back_to_pickled_weights(pickled_checkpoint):
    adapter = MODELS.get("llava_onevision")
    with pytest.raises(OSError, match="model.safetensors"):
        adapter.from_config(name="llava_onevision", pretrained=str(pickled_checkpoint))
    loaded = adapter.from_config(name="llava_onevision", pretrained=str(pickled_checkpoint), use_safetensors=False)
    assert loaded.num_layers == 4


def test_use_safetensors_must_be_a_boolean():
    with pytest.raises(ConfigError, match=r"model.use_safetensors"):
        composed(["model.use_safetensors=maybe"])
