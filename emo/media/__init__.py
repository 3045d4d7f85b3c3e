"""Media helpers shared by every package: video/audio I/O, the face analyser, head pose, crops.

Nothing here imports the model code, so `dataprep` and `eval` can use it freely.
"""
from .audio import SPEECH_RATE, frame_envelope, load_audio, save_wav
from .video import MediaError, VideoInfo, iter_frames, probe_video, read_frames, write_video

__all__ = [
    "SPEECH_RATE", "MediaError", "VideoInfo", "frame_envelope", "iter_frames", "load_audio",
    "probe_video", "read_frames", "save_wav", "write_video",
]
