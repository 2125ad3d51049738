"""The GPU benchmark (issue 19, item 4): one file, under 10 minutes on one GPU. Not run by the tests on a GPU.

At the paper's shape (the reference's UNet widths, 296.9 M parameters, 4×28×28 latents of 224-px films) it measures:

* the whole LDM training step in bf16 autocast and in fp32 (TF32 off), ours and the reference's shape (fp32), with
  the peak allocated memory of each and its model-FLOP utilisation (FLOPs of one step counted by
  `torch.utils.flop_counter` over the step's time, against the GPU's dense peak for that arithmetic);
* the UNet forward + backward, ours against diffusers' `UNet2DConditionModel` of the same shape, fp32 and bf16;
* sampler throughput: latents per second of DDIM-200 and DPM-Solver++(2M)-20 at batch 64, in bf16 and fp32.

    python nbs/bench/gpu_bench.py --out nbs/bench/gpu_bench_results.json
    python nbs/bench/gpu_bench.py --smoke --device cpu      # the tiny shapes on the CPU: checks the script runs

Writes the tables as JSON (with the GPU's name, the date and the versions) and prints them as markdown.
"""
import argparse, sys, time
import torch

# dense peak TFLOP/s by GPU name and arithmetic (vendor data sheets, no sparsity); unknown GPUs get no MFU
PEAK_TFLOPS = {'H200': {'bf16': 989.0, 'fp32': 67.0}, 'H100': {'bf16': 989.0, 'fp32': 67.0},
               'A100': {'bf16': 312.0, 'fp32': 19.5}, 'L40S': {'bf16': 362.0, 'fp32': 91.6}}

def peak_tflops(name:str, precision:str):
    return next((v[precision] for k, v in PEAK_TFLOPS.items() if k in name), None)

def step_flops(step)->int:
    "FLOPs of one call of `step` (matmuls and convolutions, forward and backward)"
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc: step()
    return fc.get_total_flops()

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cuda'); ap.add_argument('--out', default=None)
    ap.add_argument('--smoke', action='store_true', help='tiny shapes, one repeat (to check the script on a CPU)')
    ap.add_argument('--batch', type=int, default=None, help='per-step batch of the training step (default: 16 on a GPU)')
    a = ap.parse_args(argv)
    from ddl_cxr.bench import (LDMStep, bench_config, bench_unet, machine_info, time_it, format_bench, save_bench,
                               _conditioned_unet, _peak_mb_cuda)
    from ddl_cxr.unet import latent_shape
    from ddl_cxr.diffusion import Schedule, ddim_sample, dpmpp_2m_sample
    import pandas as pd
    dev, cuda = a.device, torch.device(a.device).type == 'cuda'
    if cuda: torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False    # fp32 means fp32
    shape, reps = ('tiny', 1) if a.smoke else ('paper', 5)
    batch = a.batch or (4 if a.smoke else 16)
    info = machine_info(dev); name = info.get('gpu') or info['cpu']
    t_start = time.time(); tables = {}

    rows = []
    for kind, prec in (('reference', 'fp32'), ('ours', 'fp32'), ('ours', 'bf16')):
        if cuda: torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
        step = LDMStep(bench_config(shape, prec), kind, batch, dev)
        r = time_it(step, reps, warmup=2, device=dev)
        flops = step_flops(step)
        peak = peak_tflops(name, prec)
        rows.append(dict(kind=kind, precision=prec, batch=batch, median_s=r['median_s'], peak_mb=_peak_mb_cuda(dev) if cuda else None,
                         tflop_per_step=flops / 1e12, achieved_tflops=flops / r['median_s'] / 1e12,
                         mfu=(flops / r['median_s'] / 1e12 / peak) if peak else None, loss=step.last_loss))
        del step
        print(f"step {kind} {prec}: {r['median_s']:.3f} s ({time.time() - t_start:.0f} s so far)", flush=True)
    df = pd.DataFrame(rows); tables['step'] = df.assign(speedup=df.median_s.iloc[0] / df.median_s)

    tables['unet'] = bench_unet(shape, batch=batch, repeats=reps, device=dev, precisions=('fp32', 'bf16'))
    print(f"unet done ({time.time() - t_start:.0f} s)", flush=True)

    cfg = bench_config(shape); sch = Schedule.from_config(cfg.diffusion).to(dev)
    nb = 8 if a.smoke else 64
    fn = _conditioned_unet(cfg, nb, dev)
    rows = []
    for sampler, steps, f in (('ddim', min(200, cfg.diffusion.timesteps // 5), ddim_sample), ('dpmpp2m', 20 if not a.smoke else 5, dpmpp_2m_sample)):
        for prec in ('fp32', 'bf16'):
            def run():
                with torch.no_grad(), torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=prec == 'bf16'):
                    f(fn, sch, (nb, *latent_shape(cfg)), steps=steps, eta=1.0 if sampler == 'ddim' else 0.0,
                      generator=torch.Generator(device=dev).manual_seed(0))
            r = time_it(run, 1 if a.smoke else 2, device=dev)
            rows.append(dict(sampler=sampler, steps=steps, precision=prec, batch=nb, seconds=r['median_s'], latents_per_s=nb / r['median_s']))
    tables['samplers'] = pd.DataFrame(rows)
    res = dict(machine=info, command='python nbs/bench/gpu_bench.py ' + ' '.join(argv if argv is not None else sys.argv[1:]), tables=tables)
    print(format_bench(res)); print(f"total {time.time() - t_start:.0f} s")
    if a.out: print(f"wrote {save_bench(res, a.out)}")
    return res

if __name__ == '__main__': main()
