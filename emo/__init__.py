"""EMO toolkit: the model, its training and inference, and the media helpers shared by dataprep and eval."""
