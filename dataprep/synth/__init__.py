"""The embedded synthetic sample corpus (drawn talking heads + babble, exact ground truth)."""
from .corpus import EXPECTED, cached_corpus, generate_corpus, load_config, plan_video, render_video

__all__ = ["EXPECTED", "cached_corpus", "generate_corpus", "load_config", "plan_video", "render_video"]
