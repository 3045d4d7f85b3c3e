import os

os.environ.setdefault("GLOG_minloglevel", "2")   # MediaPipe's C++ logging, before it loads

from .cli import main  # noqa: E402

main()
