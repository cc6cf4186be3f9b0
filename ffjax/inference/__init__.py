"""Using a trained model: checkpoint loading (`loading`), `ffjax predict` (`predict`), the
input and output media (`media`) and the heatmap overlays (`overlay`)."""

from ffjax.inference.loading import LoadedModel, crop_settings, load_model, read_checkpoint_meta

__all__ = ["LoadedModel", "crop_settings", "load_model", "read_checkpoint_meta"]
