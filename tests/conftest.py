"""Process-wide settings that must exist before Ray or DeepSpeed are imported, and shared fixtures."""

import os
import tempfile

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray on 127.0.0.1, not the host's routable IP
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", os.path.join(tempfile.gettempdir(), "hierpt-torch-ext"))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # lm-eval tasks read local JSONL; nothing is downloaded
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["tests.fixtures.ray_cluster", "tests.fixtures.s3", "tests.fixtures.models", "tests.fixtures.multinode"]
