"""External solvers: diffusers schedulers and k-diffusion samplers driven by the harness."""

from __future__ import annotations

import builtins
import sys

import pandas as pd
import pytest
import torch

from analytic import get_problem, make_grid
from bench.measure.models import analytic_model
from solvers import Sampler, SampleResult, make_solver, resolve, sample
from solvers.registry import UnknownSolverError

pytest.importorskip("diffusers")
torch.set_num_threads(1)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _setup(name: str = "gauss-aniso-3d"):
    problem = get_problem(name, "ddpm-discrete")
    x = problem.sample_marginal(problem.t_max, 16, torch.Generator().manual_seed(0))
    return problem, analytic_model(problem), x


def test_names_resolve_with_metadata():
    labels = [s.label for s in resolve("ddim,diffusers:DDIM*,kdiff:sample_euler")]
    assert labels == ["ddim", "diffusers:DDIMParallelScheduler", "diffusers:DDIMScheduler",
                      "kdiff:sample_euler"]
    dpm = make_solver("diffusers:DPMSolverMultistepScheduler[solver_order=3,use_karras_sigmas=true]")
    # named third order, declared 2: the shipped 3M update halves D2 (our dpmpp-3m's derivation)
    assert dpm.order == 2 and not dpm.stochastic and {"external", "diffusers", "ode"} <= dpm.all_tags
    assert dpm.label == "diffusers:DPMSolverMultistepScheduler[solver_order=3,use_karras_sigmas=True]"
    assert make_solver("kdiff:sample_euler_ancestral").stochastic
    with pytest.raises(UnknownSolverError, match="no parameter"):
        make_solver("diffusers:DDIMScheduler[bogus=1]")
    with pytest.raises(UnknownSolverError, match="unknown external solver"):
        make_solver("kdiff:sample_nothing")


def _grid(problem, steps: int) -> torch.Tensor:
    """The harness grid; diffusers reads only its end points (the problem's interval) and step count."""
    return make_grid("logsnr", problem.schedule, steps, problem.t_min, problem.t_max)


def test_nfe_is_counted_from_model_calls():
    problem, model, x = _setup()
    times = _grid(problem, 10)
    heun = make_solver("kdiff:sample_heun").run(model, times, x)
    assert heun.nfe == 2 * 11 - 1  # 11 steps with the final one to sigma = 0, which is Euler
    dheun = make_solver("diffusers:HeunDiscreteScheduler").run(model, times, x)
    assert dheun.nfe == 2 * 10 - 1


def test_every_sampler_runs_through_one_protocol():
    """Ours and the peers are Samplers with the same `run`, returning a SampleResult that says where
    the output belongs; our Solver.run is the one loop."""
    problem, model, x = _setup()
    times = _grid(problem, 8)
    for spec in ("ddim", "euler-maruyama", "kdiff:sample_euler", "kdiff:sample_euler_ancestral",
                 "diffusers:DDIMScheduler[clip_sample=false]", "diffusers:EulerAncestralDiscreteScheduler"):
        sampler = make_solver(spec)
        assert isinstance(sampler, Sampler)
        out = sampler.run(model, times, x.clone(), sampler.noise_source(5, problem.t_min, problem.t_max))
        assert isinstance(out, SampleResult) and out.finite and out.nfe >= 8 and out.steps == 8
    ours = make_solver("ddim").run(model, times, x.clone(), denoise_final=True)
    loop = sample(make_solver("ddim"), model, times, x.clone(), denoise_final=True)
    assert torch.equal(ours.x, loop.x) and ours.t_end == 0.0 and ours.final_denoise and not ours.tweedie_law
    assert make_solver("ddim").run(model, times, x.clone()).t_end == problem.t_min


def test_diffusers_ddim_matches_ours_when_n_divides_1000():
    """DDIM at N = 50 visits timesteps 980, 960, ..., 0, then steps to alpha_bar = 1 (x0)."""
    problem, model, x = _setup()
    ddim = make_solver("diffusers:DDIMScheduler[clip_sample=false]")
    run = ddim.run(model, _grid(problem, 50), x)
    times = torch.tensor([(k + 1) / 1000 for k in range(980, -1, -20)], dtype=torch.float64)
    ours = sample(make_solver("ddim"), model, times, x.clone(), denoise_final=True).x
    assert run.nfe == 50 and run.t_end == 0.0 and run.t_last == pytest.approx(1e-3)
    assert _rel(run.x, ours) < 1e-5  # diffusers keeps its alpha_bar table in float32


@pytest.mark.parametrize("peer, ours", [("DPMSolverMultistepScheduler", "dpmpp-2m"),
                                         ("UniPCMultistepScheduler", "unipc-2")])
def test_diffusers_multistep_defaults_match_ours_on_their_timesteps(peer, ours):
    """With default settings both follow diffusers' linspace timesteps and end with a first-order
    step to sigma = 0 (a Tweedie denoise): our solver on the same times, plus that denoise, gives the
    same samples, so their irregular error against N comes from those timesteps, not the adapter."""
    import diffusers

    problem, model, x = _setup()
    for steps in (8, 20):
        run = make_solver(f"diffusers:{peer}").run(model, _grid(problem, steps), x)
        scheduler = getattr(diffusers, peer)()
        scheduler.set_timesteps(steps)
        times = problem.t_min + (problem.t_max - problem.t_min) * scheduler.timesteps.double() / 999
        mine = sample(make_solver(ours), model, times, x.clone(), denoise_final=True).x
        assert run.nfe == steps and _rel(run.x, mine) < 1e-5


def test_kdiff_euler_matches_ours():
    problem, model, x = _setup()
    times = make_grid("logsnr", problem.schedule, 12, problem.t_min, problem.t_max)
    run = make_solver("kdiff:sample_euler").run(model, times, x)
    ours = sample(make_solver("ddim"), model, times, x.clone(), denoise_final=True).x
    assert run.nfe == 13 and _rel(run.x, ours) < 1e-10


def test_missing_peer_is_refused_with_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kw):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.delitem(sys.modules, "diffusers", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(UnknownSolverError, match=r"need diffusers.*pip install .*\[peers\]"):
        make_solver("diffusers:DDIMScheduler")


def test_report_flags_peer_defects_from_measured_data(tmp_path):
    """The step mismatch of diffusers' DDIM/PNDM (t - 1000//N: the run starts at (N-1)(1000//N)) shows
    as an error rising at N not dividing 1000 (PNDM: 80, 160; DDIM: 400 starts at t = 798) and UniPC
    bh1 with final_sigmas_type "zero" as NaN: all read from the rows, not from a list of bugs."""
    from bench.report.peers import comparison_table, findings_table
    from bench.report.report import write_report
    from bench.studies.analytic import SweepConfig, run_sweep

    solvers = "ddim,diffusers:DDIMScheduler[clip_sample=false],diffusers:PNDMScheduler," \
              "diffusers:UniPCMultistepScheduler[solver_type=bh1],kdiff:sample_euler"
    config = SweepConfig(problems=["gauss-1d"], solvers=[solvers], steps=[50, 80, 100, 160, 200, 250, 400],
                         schedule="ddpm-discrete", seeds=[0], samples=50)
    run_sweep(config, tmp_path)
    rows, orders = pd.read_csv(tmp_path / "results.csv"), pd.read_csv(tmp_path / "orders.csv")
    found = findings_table(rows, orders).set_index("solver")["finding"]
    assert "ddim" not in found and "kdiff:sample_euler" not in found
    ddim = found["diffusers:DDIMScheduler[clip_sample=False]"]
    assert "rises with NFE at steps 400 " in ddim and "250" not in ddim
    pndm = found["diffusers:PNDMScheduler"]
    assert "rises with NFE at steps 80 " in pndm and ", 160 " in pndm and "order below theory" in pndm
    assert all(f" {n} (" not in pndm for n in (100, 200, 250))
    assert "NaN/diverged at steps 50, 80" in found["diffusers:UniPCMultistepScheduler[solver_type=bh1]"]
    pairs = comparison_table(rows)
    euler = pairs[pairs["peer"] == "kdiff:sample_euler"]
    assert len(euler) == 7 and (euler["rel_diff"] < 1e-3).all() and (euler["flag"] == "").all()
    unipc = pairs[pairs["peer"].str.startswith("diffusers:UniPC")]
    assert unipc.empty  # no unipc-2 in this run
    report = write_report(tmp_path).read_text()
    assert "## External solvers: findings" in report and "error rises with NFE" in report


def test_w2_exact_refuses_a_non_affine_sampler():
    """diffusers' DDIM clips x0 to [-1, 1] by default: its output law is not Gaussian."""
    from bench.measure.metrics import MetricError, w2_exact

    problem, model, _ = _setup()
    times = make_grid("logsnr", problem.schedule, 20, problem.t_min, problem.t_max)
    assert w2_exact(problem, make_solver("kdiff:sample_euler"), model, times) > 0
    with pytest.raises(MetricError, match="affine"):
        w2_exact(problem, make_solver("diffusers:DDIMScheduler"), model, times)


@pytest.mark.parametrize("spec", ["kdiff:sample_dpmpp_sde", "kdiff:sample_dpmpp_sde[noise=iid]",
                                  "kdiff:sample_euler_ancestral", "diffusers:EulerAncestralDiscreteScheduler",
                                  "diffusers:DPMSolverMultistepScheduler[algorithm_type=sde-dpmsolver++]"])
def test_probed_law_of_a_stochastic_sampler_matches_monte_carlo(spec):
    """On a Gaussian target the probed mean and covariance (x_T and noise slots) are the law of the
    samples the sampler draws with its own noise: dpmpp_sde asks for overlapping Brownian increments
    (substep and full step), which the Brownian slots' min(a, b) covariance must capture; diffusers'
    schedulers get our noise through their module's randn_tensor."""
    from bench.measure.exact_law import _probe_noise

    problem, model, _ = _setup()
    times = make_grid("logsnr", problem.schedule, 5, problem.t_min, problem.t_max)
    law = problem.marginal(float(times[0]))
    mean, chol = law.means[0], torch.linalg.cholesky(law.covs[0])
    solver = make_solver(spec)
    probes = torch.cat([mean[None], mean[None] + chol.T, mean[None] - chol.T])
    out, noise_cov, _ = _probe_noise(solver, model, times, probes)
    spread = out[1:4] - out[0]
    cov = spread.T @ spread + noise_cov
    n = 40000
    x = problem.sample_marginal(float(times[0]), n, torch.Generator().manual_seed(1)).double()
    samples = solver.run(model, times, x, solver.noise_source(3, problem.t_min, problem.t_max)).x
    scale = cov.diagonal().sqrt()
    assert ((samples.mean(0) - out[0]) / scale).abs().max() < 0.03  # ~5 standard errors
    assert ((torch.cov(samples.T) - cov) / torch.outer(scale, scale)).abs().max() < 0.04
    assert float(noise_cov.trace()) > 0.05 * float(cov.trace())  # the noise matters here


def test_kdiff_sweep_orders_findings_and_twins(tmp_path):
    """Every installed k-diffusion sampler gets exact-W2 rows (stochastic ones through the probed
    law); the report reads from them that dpmpp_sde with independent noise per call (instead of one
    Brownian path) drifts away from our dpmpp-sde, while the twins agree, sample_lms included: its
    last step is a multistep ODE step down to sigma = 0, judged against the data law (against the
    denoise law of the other samplers it would stall at ~4e-4)."""
    from bench.report.peers import comparison_table, findings_table
    from bench.studies.analytic import SweepConfig, run_sweep
    from solvers.external.kdiffusion import available

    solvers = ("kdiff:*,kdiff:sample_dpmpp_sde[noise=iid],"
               "lms,dpmpp-2m,euler-ancestral,dpm2-ancestral,dpmpp-sde")
    config = SweepConfig(problems=["gauss-aniso-3d"], solvers=[solvers], steps=[16, 32, 64, 128, 256],
                         seeds=[0])
    run_sweep(config, tmp_path)
    rows, orders = pd.read_csv(tmp_path / "results.csv"), pd.read_csv(tmp_path / "orders.csv")
    peers = rows[rows["solver"].str.startswith("kdiff:")]
    assert set(peers["solver_name"]) == {f"kdiff:{name}" for name in available()}
    assert (peers["status"] == "ok").all() and peers["value"].notna().all()
    found = findings_table(rows, orders).set_index("solver")["finding"]
    assert "kdiff:sample_dpmpp_2m" not in found and "kdiff:sample_euler_ancestral" not in found
    fitted = orders[orders["axis"] == "steps"].set_index("solver")["order"]
    assert abs(fitted["kdiff:sample_euler_ancestral"] - 1) < 0.15 and fitted["kdiff:sample_dpmpp_sde"] > 1.8
    pairs = comparison_table(rows).set_index(["peer", "steps"])
    for peer in ("kdiff:sample_dpmpp_2m", "kdiff:sample_euler_ancestral", "kdiff:sample_dpm_2_ancestral",
                 "kdiff:sample_lms"):
        assert (pairs.loc[peer, "rel_diff"] < 1e-3).all()
    assert (pairs.loc["kdiff:sample_dpmpp_sde[noise=iid]", "rel_diff"] > 1).all()


def test_final_denoise_is_read_from_the_run():
    """A sampler whose output is its last call's x0 prediction is judged against the denoise law
    at that call; k-diffusion's LMS integrates on to sigma = 0 and is judged against the data."""
    from bench.measure.exact_law import end_law

    problem, model, x = _setup()
    times = _grid(problem, 12)
    euler = make_solver("kdiff:sample_euler").run(model, times, x)
    lms = make_solver("kdiff:sample_lms").run(model, times, x)
    ddim = make_solver("diffusers:DDIMScheduler[clip_sample=false]").run(model, _grid(problem, 20), x)
    assert euler.final_denoise and ddim.final_denoise and not lms.final_denoise
    assert euler.tweedie_law and ddim.tweedie_law and not lms.tweedie_law
    assert torch.equal(end_law(problem, lms)[1], problem.target.covs[0])
    assert not torch.allclose(end_law(problem, euler)[1], problem.target.covs[0], rtol=1e-6)


def test_path_rms_of_deterministic_externals_on_a_mixture(tmp_path):
    """On a mixture (no exact law) k-diffusion's deterministic samplers get path-rms against the
    shared ODE reference plus its final denoise: close to their twins'; samplers without such an
    end (LMS steps on to sigma = 0) or with noise are skipped with the reason."""
    from bench.studies.analytic import SweepConfig, run_sweep

    solvers = "kdiff:sample_dpmpp_2m,dpmpp-2m,kdiff:sample_lms,kdiff:sample_euler_ancestral"
    run_sweep(SweepConfig(problems=["mix-2d"], solvers=[solvers], steps=[8, 32], seeds=[0],
                          metrics=["path-rms"], samples=64), tmp_path)
    rows = pd.read_csv(tmp_path / "results.csv").set_index(["solver", "steps"])
    peer, ours = rows.loc["kdiff:sample_dpmpp_2m"], rows.loc["dpmpp-2m"]
    assert (peer["status"] == "ok").all() and (peer["noise_floor"] > 0).all()
    assert ((peer["value"] - ours["value"]).abs() / ours["value"] < 0.02).all()
    skipped = rows.loc[["kdiff:sample_lms", "kdiff:sample_euler_ancestral"]]
    assert (skipped["status"] == "skipped").all() and skipped["reason"].str.contains("path-rms").all()


def test_kdiff_orders_match_our_twins():
    from solvers.external import TWINS

    for peer, ours in TWINS.items():
        if peer.startswith("kdiff:"):
            assert make_solver(peer).order == make_solver(ours).order, peer
    with pytest.raises(UnknownSolverError, match="noise must be one of"):
        make_solver("kdiff:sample_dpmpp_sde[noise=pink]")


def test_cli_lists_external_solvers():
    from click.testing import CliRunner

    from bench.cli.main import cli

    out = CliRunner().invoke(cli, ["list", "solvers", "--external"])
    assert out.exit_code == 0
    assert "diffusers:DDIMScheduler" in out.output and "kdiff:sample_dpmpp_2m" in out.output
    assert "diffusers:RePaintScheduler" not in out.output and " ddim " not in out.output


@pytest.mark.parametrize("spec, message", [("kdiff:sample_nothing", "unknown external solver"),
                                           ("diffusers:DDIMScheduler[beta_end=0.012]", "no parameter")])
def test_cli_refuses_bad_external_names_with_one_line(spec, message, monkeypatch, capsys, tmp_path):
    from bench.cli.main import main

    monkeypatch.setattr(sys, "argv", ["bench", "run", "--solvers", spec, "--problem", "gauss-1d",
                                      "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
