"""Packaging steps that setup.cfg cannot express.

``hlp_audio-evaluate.pth`` must sit at the root of site-packages, where Python's ``site`` module
runs it at start-up: it installs the import hook that registers the ``hierarchical_map`` metric
with evaluate (``src/_hlp_audio_evaluate_hook.py``). Regular and editable wheels both carry it.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = "hlp_audio-evaluate.pth"
PTH_SOURCE = os.path.join("src", PTH)


class BuildPyWithPth(build_py):
    """Regular builds: put the .pth at the root of build_lib, i.e. of the wheel."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(PTH_SOURCE, os.path.join(self.build_lib, PTH), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, os.path.join(self.build_lib, PTH)]


class EditableWheelWithPth(editable_wheel):
    """Editable installs (PEP 660): files written to the unpacked wheel's root are installed as they are."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        files, mapping = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        self.copy_file(PTH_SOURCE, os.path.join(unpacked_wheel, PTH), preserve_mode=False)
        return files, mapping


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
