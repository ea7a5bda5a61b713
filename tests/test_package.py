"""Package-level behaviour: lazy integrations and Auto-class registration in either import order."""

import subprocess
import sys

import pytest


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_does_not_pull_in_the_hugging_face_stack():
    out = run_python(
        "import sys, hlp_audio; hlp_audio.Ontology; "
        "print(sorted(m for m in ('transformers', 'datasets', 'evaluate', 'accelerate') if m in sys.modules))"
    )
    assert out == "[]"


@pytest.mark.parametrize(
    "imports",
    [
        "import hlp_audio, transformers",
        "import transformers, hlp_audio",
        # transformers first imported from inside one of our model files: registration must wait for it
        "import hlp_audio; from hlp_audio.modeling.configuration_hlp_audio import HLPAudioConfig",
        "import hlp_audio; from hlp_audio.modeling.modeling_hlp_audio import HLPAudioForAudioClassification",
        "from hlp_audio.modeling.pipeline_hlp_audio import HLPAudioClassificationPipeline",
    ],
)
def test_auto_classes_know_hlp_taggers_whatever_the_import_order(imports):
    out = run_python(
        f"{imports}\n"
        "import sys\n"
        "from transformers import AutoConfig, AutoModelForAudioClassification\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "config = AutoConfig.for_model('hlp_audio')\n"
        "model_class = AutoModelForAudioClassification._model_mapping[type(config)]\n"
        "hooks = [f for f in sys.meta_path if type(f).__name__ == '_RegisterAfterImport']\n"
        "print(type(config).__name__, model_class.__name__, PIPELINE_REGISTRY.supported_tasks['audio-classification']['impl'].__name__, len(hooks))"
    )
    assert out == "HLPAudioConfig HLPAudioForAudioClassification HLPAudioClassificationPipeline 0"


def test_lazy_exports():
    import hlp_audio

    assert callable(hlp_audio.hlp_propagate) and callable(hlp_audio.load_audioset)
    assert set(hlp_audio.__all__) <= set(dir(hlp_audio))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hlp_audio.nope
