"""The run manifest: command, config, seeds, versions, git commit, machine, start and end."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

PACKAGES = ["diffusion-solver-bench", "torch", "numpy", "scipy", "pandas", "POT", "matplotlib",
            "seaborn", "click", "diffusers", "torch-fidelity"]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def short_commit() -> str:
    sha = git_commit()
    return "nogit" if sha == "unknown" else sha[:8]


def machine() -> dict[str, object]:
    import torch

    info: dict[str, object] = {"platform": platform.platform(), "processor": platform.machine(),
                               "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def build_manifest(config: dict, command: str, previous: dict | None = None) -> dict:
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = {
        "command": command,
        "config": config,
        "seeds": config.get("seeds", [config["seed"]] if "seed" in config else None),
        "versions": versions(),
        "git_commit": git_commit(),
        "machine": machine(),
        "started": now,
        "finished": None,
    }
    if previous is not None:  # a resumed run keeps its first start and lists its sessions
        manifest["started"] = previous.get("started", now)
        manifest["resumed"] = [*previous.get("resumed", []), now]
    return manifest
