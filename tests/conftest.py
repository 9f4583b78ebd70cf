"""Test-session settings: one intra-op thread (the tensors here are small; with two threads on a
busy 2-core machine OpenMP spin-waits make small ops tens of times slower)."""

import torch

torch.set_num_threads(1)
