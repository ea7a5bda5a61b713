"""Gradio app of the hierarchical_map metric Space (the Hub runs this file)."""

import os

import evaluate
from evaluate.utils import launch_gradio_widget

if __name__ == "__main__":
    # the metric script next to this file, with its sibling _hlp_core.py
    module = evaluate.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "hierarchical_map.py"))
    launch_gradio_widget(module)
