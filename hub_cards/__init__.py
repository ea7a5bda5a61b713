"""Card templates (model, dataset, metric Space), shipped inside the package as ``hlp_audio.hub_cards``."""
