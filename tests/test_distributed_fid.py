"""Sharded generation under torch.distributed: 2 gloo processes reproduce the single-process samples."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.studies.images import distributed as dfid
from bench.studies.images import fid

N = 11  # odd: the two shards differ in size
SHAPE = (1, 8, 8)


def _model_dir(root: Path) -> Path:
    from diffusers import DDPMScheduler

    from bench.studies.images.train import make_unet

    torch.manual_seed(0)
    make_unet(1, 8).save_pretrained(str(root / "unet"))
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").save_pretrained(str(root / "scheduler"))
    return root


def _stochastic_fn(model_dir: Path, batch: int) -> dfid.GenerateFn:
    from bench.studies.images.models import load_model
    from solvers import make_solver

    times = torch.linspace(1.0, 1e-3, 4, dtype=torch.float64)
    return dfid.sampler_generate_fn(load_model(model_dir), make_solver("euler-ancestral"), times, seed=3,
                                    batch=batch)


def _worker(rank: int, tmp: str, port: int) -> None:
    torch.set_num_threads(1)
    # the variables torchrun sets; init_from_env picks gloo without a GPU
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    assert dfid.init_from_env() and dist.get_backend() == "gloo" and dfid.world() == (rank, 2)
    try:
        gen = dfid.noise_generator(SHAPE, base_seed=7)
        shard = dfid.generate_shard(gen, N, batch_size=4)
        images = dfid.sharded_samples(gen, N, batch_size=4)
        extractor = fid.make_extractor("tiny")
        ref = fid.statistics(fid.features(dfid.noise_generator(SHAPE, 100)(torch.arange(50)), extractor))
        value = dfid.sharded_fid(gen, N, ref, extractor, batch_size=4)
        # a stochastic solver: each sample's Brownian path is seeded by its global index too
        sampled = dfid.sharded_samples(_stochastic_fn(Path(tmp) / "model", batch=2), 5, batch_size=2)
        torch.save({"shard": shard, "images": images, "fid": value, "sampled": sampled},
                   f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_shards_partition_the_indices():
    for n, size in [(11, 2), (10, 3), (5, 5)]:
        shards = [dfid.shard(n, r, size) for r in range(size)]
        assert [i for s in shards for i in s] == list(range(n))
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(fid.FIDError):
        dfid._my_indices(0)
    assert dfid.world() == (0, 1)


def test_two_gloo_processes_reproduce_the_single_process_samples(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    _model_dir(tmp_path / "model")
    mp.spawn(_worker, args=(str(tmp_path), port), nprocs=2, join=True)
    out = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    gen = dfid.noise_generator(SHAPE, base_seed=7)
    single = gen(torch.arange(N))
    assert single.dtype == torch.uint8 and single.shape == (N, *SHAPE) and single.float().std() > 10
    assert [len(o["shard"]) for o in out] == [5, 6]
    assert torch.equal(torch.cat([o["shard"] for o in out]), single)
    assert all(torch.equal(o["images"], single) for o in out)
    extractor = fid.make_extractor("tiny")
    ref = fid.statistics(fid.features(dfid.noise_generator(SHAPE, 100)(torch.arange(50)), extractor))
    assert out[1]["fid"] is None
    assert out[0]["fid"] == pytest.approx(fid.fid(single, ref, extractor), rel=1e-6)  # float32 batches differ
    # a different base seed gives different images: the seeds really are per index
    assert not torch.equal(dfid.noise_generator(SHAPE, base_seed=8)(torch.arange(N)), single)
    # euler-ancestral on ranks of 2 and 3 samples in batches of 2 = one process, one batch of 5
    sampled = _stochastic_fn(tmp_path / "model", batch=5)(torch.arange(5))
    assert sampled.float().std() > 1 and all(torch.equal(o["sampled"], sampled) for o in out)


def test_sampler_adapter_shards_concatenate_to_the_full_run(tmp_path: Path):
    from bench.studies.images.models import load_model
    from solvers import make_solver

    times = torch.linspace(1.0, 1e-3, 3, dtype=torch.float64)
    model = load_model(_model_dir(tmp_path))
    gen = dfid.sampler_generate_fn(model, make_solver("ddim"), times, seed=3, batch=4)
    full = gen(torch.arange(5))
    shards = torch.cat([gen(torch.tensor(list(dfid.shard(5, r, 2)))) for r in range(2)])
    assert full.shape == (5, 3, 32, 32) and full.dtype == torch.uint8 and full.float().std() > 1
    assert torch.equal(shards, full)
    with pytest.raises(fid.FIDError, match="contiguous"):
        gen(torch.tensor([0, 2]))
