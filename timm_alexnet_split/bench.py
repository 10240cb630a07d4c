"""``timm-alexnet-split bench``: what LRN costs, as ratios against baselines timed in the same run.

Variants of alexnet_split_2 (same weights): ours (fused tower-local LRN), LRN replaced by identity
(the ceiling), PyTorch's nn.LocalResponseNorm per tower (the naive way); plus torchvision's
alexnet on a GPU (same FLOPs, no LRN, no towers), torch.compile of ours, and onnxruntime against
PyTorch eager. Variants are timed in interleaved rounds (median), so drift on a shared machine
hits them alike. Absolute numbers move from run to run; the ratios are the result.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

PROG = 'timm-alexnet-split bench'


def _variant(kind: str, num_classes: int, state: Optional[dict] = None) -> nn.Module:
    import timm
    m = timm.create_model('alexnet_split_2', num_classes=num_classes, init='caffe')
    if state is not None:
        m.load_state_dict(state)
    if kind == 'no_lrn':
        for t in m.towers:
            t.norm1, t.norm2 = nn.Identity(), nn.Identity()
    elif kind == 'nn_lrn':
        for t in m.towers:
            t.norm1 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
            t.norm2 = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
    elif kind == 'tv_alexnet':
        import torchvision
        m = torchvision.models.alexnet(num_classes=num_classes)
    elif kind != 'ours':
        raise ValueError(kind)
    return m


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _stepper(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool, amp: bool) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train(train)
    ctx = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if amp else torch.enable_grad

    def step():
        if train:
            with ctx():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        else:
            with torch.inference_mode(), ctx():
                model(x)
    return step


def time_variants(steps: Dict[str, Callable[[], None]], device: torch.device, rounds: int, warmup: int,
                  batch: int) -> Dict[str, float]:
    """Images/s per variant: warm-up, then `rounds` interleaved timed steps, median."""
    from .progress import progress
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times: Dict[str, List[float]] = {k: [] for k in steps}
    for _ in progress(range(rounds), desc='timing', unit='round'):
        for k, fn in steps.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: batch / statistics.median(v) for k, v in times.items()}


def bench_lrn(device: torch.device, batch: int, amp: bool, channels_last: bool, rounds: int, warmup: int,
              with_tv: bool, img_size: int = 224) -> List[dict]:
    torch.manual_seed(0)
    ref = _variant('ours', 1000).state_dict()
    kinds = ['ours', 'no_lrn', 'nn_lrn'] + (['tv_alexnet'] if with_tv else [])
    x = torch.randn(batch, 3, img_size, img_size, device=device) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rows = []
    for train in (True, False):
        steps = {}
        for k in kinds:
            m = _variant(k, 1000, None if k == 'tv_alexnet' else ref).to(device)
            if channels_last:
                m = m.to(memory_format=torch.channels_last)
            steps[k] = _stepper(m, x, y, train, amp)
        ips = time_variants(steps, device, rounds, warmup, batch)
        mode = 'train' if train else 'infer'
        for k in kinds:
            rows.append(dict(mode=mode, variant=k, batch=batch, amp_bf16=amp, channels_last=channels_last,
                             img_s=round(ips[k], 1), ratio_to_no_lrn=round(ips[k] / ips['no_lrn'], 3),
                             **({'ratio_to_tv_alexnet': round(ips[k] / ips['tv_alexnet'], 3)} if with_tv else {})))
    return rows


def bench_compile(device: torch.device, batch: int, amp: bool, rounds: int, warmup: int) -> dict:
    """torch.compile on the whole model: same outputs as eager, and its training throughput."""
    torch.manual_seed(0)
    eager = _variant('ours', 1000).to(device)
    compiled_model = _variant('ours', 1000, eager.state_dict()).to(device)
    compiled = torch.compile(compiled_model)
    x = torch.randn(batch, 3, 224, 224, device=device) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    eager.eval()
    compiled.eval()
    with torch.no_grad():
        a, b = eager(x[:4]), compiled(x[:4])
    rel = ((a - b).norm() / a.norm()).item()
    ips = time_variants({'eager': _stepper(eager, x, y, True, amp), 'compiled': _stepper(compiled, x, y, True, amp)},
                        device, rounds, warmup, batch)
    return dict(mode='train', variant='torch.compile', batch=batch, amp_bf16=amp, rel_err_vs_eager=rel,
                img_s=round(ips['compiled'], 1), ratio_to_eager=round(ips['compiled'] / ips['eager'], 3))


def bench_placement(device: torch.device, batch: int, amp: bool, rounds: int, warmup: int,
                    placements: List[List[str]], img_size: int = 224) -> List[dict]:
    """Training throughput of alexnet_split_2 with its towers placed (parallel.place_towers) against the unplaced
    model, same weights, same run: what ``--model-parallel`` costs or gains. On one GPU, ['cuda:0', 'cuda:0']
    measures the placement's own overhead; with two, ['cuda:0', 'cuda:1'] whether the towers overlap."""
    from .parallel import place_towers
    torch.manual_seed(0)
    ref = _variant('ours', 1000)
    x = torch.randn(batch, 3, img_size, img_size, device=device) * 60
    y = torch.randint(0, 1000, (batch,), device=device)
    steps = {'unplaced': _stepper(ref.to(device), x, y, True, amp)}
    for devs in placements:
        placed = place_towers(_variant('ours', 1000, ref.state_dict()), devs)
        steps[' '.join(devs)] = _stepper(placed, x, y, True, amp)
    ips = time_variants(steps, device, rounds, warmup, batch)
    return [dict(mode='train', variant='placed' if k != 'unplaced' else 'unplaced', towers_on=k, batch=batch,
                 amp_bf16=amp, img_s=round(v, 1), ratio_to_unplaced=round(v / ips['unplaced'], 3))
            for k, v in ips.items()]


def _machine() -> str:
    import os
    cpu = platform.processor() or platform.machine()
    s = f'{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} threads'
    if torch.cuda.is_available():
        s += f', GPU {torch.cuda.get_device_name(0)}'
    return s


def _data_main(args: argparse.Namespace, device: torch.device, out: Path) -> int:
    from .databench import cores_available, run
    from .errors import UserError
    if args.data_images < 10:
        raise UserError('--data-images must be at least 10')
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise UserError(f'--data-dir {args.data_dir} is not a folder')
    print(f'machine: {_machine()}; results go to {out}')
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = _machine()  # before the per-core timing sets one thread
    result = run(args.data_images, args.rounds, cores_available(), device, args.data_dir, print_fn=print)
    result.update(machine=machine, date=datetime.now(timezone.utc).isoformat(timespec='seconds'))
    out.write_text(json.dumps(result, indent=2))  # silently: the ratio stays the last line
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Measure, in one run, the training and inference throughput of alexnet_split_2 with our fused '
                    'tower-local LRN against the same network with LRN removed (the goal: >= 0.85 on a CPU, fp32, '
                    'batch 32; >= 0.90 on a GPU, bf16 + channels_last, batch 256) and with PyTorch\'s '
                    'nn.LocalResponseNorm; on a GPU also torchvision\'s alexnet, torch.compile and the towers placed '
                    'with --model-parallel against the unplaced model; and onnxruntime '
                    'against PyTorch eager at batch 1 and 32. Prints ratios and writes them as JSON.',
        epilog='example: timm-alexnet-split bench --json runs/bench.json')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda if available, else cpu)')
    parser.add_argument('--batch-size', type=int, default=None, help='default 32 on CPU, 256 on GPU')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds per variant (median; default 5)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per variant first (default 2)')
    parser.add_argument('--img-size', type=int, default=224, help='input size (default 224)')
    parser.add_argument('--skip-onnx', action='store_true', help='skip onnxruntime vs PyTorch')
    parser.add_argument('--onnx-batch-sizes', type=int, nargs='+', default=[1, 32])
    parser.add_argument('--json', default=None, help='write results here (default runs/bench/bench-<time>.json)')
    parser.add_argument('--data', action='store_true',
                        help='instead: the training input pipeline over generated ImageNet-like JPEGs, full-size folder '
                             'vs draft decoding vs 256-px shards, images/s per core and on all cores (on a GPU also '
                             'nvjpeg decoding vs training); last line: shards vs full-size folder, per core')
    parser.add_argument('--data-images', type=int, default=400, metavar='N', help='--data: images generated (default 400)')
    parser.add_argument('--data-dir', default=None, metavar='DIR',
                        help='--data, --train-input: where the temporary images go (default: the system temp folder)')
    from .trainbench import add_options
    add_options(parser)
    return parser


def _settings(args: argparse.Namespace) -> Tuple[torch.device, int, Path]:
    """(device, batch size, output path) from the options; UserError for impossible ones."""
    from .errors import UserError
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise UserError('--device cuda asked for, but CUDA is not available here')
    batch = args.batch_size or (256 if device.type == 'cuda' else 32)
    if batch < 1 or args.rounds < 1 or args.warmup < 0:
        raise UserError('--batch-size and --rounds must be >= 1, --warmup >= 0')
    out = Path(args.json or f'runs/bench/bench-{datetime.now().strftime("%Y%m%d-%H%M%S")}.json')
    if out.exists():
        raise UserError(f'{out} exists; choose another --json path')
    return device, batch, out


def _lrn_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """Ours against LRN removed and nn.LocalResponseNorm (fp32; on a GPU also bf16 + channels_last)."""
    gpu = device.type == 'cuda'
    settings = [(False, False)] + ([(True, True)] if gpu else [])
    for amp, cl in settings:
        rows = bench_lrn(device, batch, amp, cl, args.rounds, args.warmup, with_tv=gpu, img_size=args.img_size)
        results['rows'] += rows
        tag = f'{device.type}, batch {batch}, ' + ('bf16 autocast + channels_last' if amp else 'fp32')
        print(f'\n{tag}  (images/s; ratio = ours / LRN removed, higher is better)')
        for r in rows:
            extra = f'  vs torchvision alexnet {r["ratio_to_tv_alexnet"]:.2f}' if 'ratio_to_tv_alexnet' in r else ''
            print(f'  {r["mode"]:<6}{r["variant"]:<12}{r["img_s"]:>10.1f} img/s   ratio {r["ratio_to_no_lrn"]:.3f}{extra}')


def _gpu_section(results: dict, args: argparse.Namespace, device: torch.device, batch: int) -> None:
    """torch.compile against eager, and the towers placed with --model-parallel against the unplaced model."""
    c = bench_compile(device, batch, True, args.rounds, args.warmup)
    results['rows'].append(c)
    print(f'\ntorch.compile (train, bf16): rel. error vs eager {c["rel_err_vs_eager"]:.1e}, '
          f'{c["img_s"]:.0f} img/s, {c["ratio_to_eager"]:.2f}x eager')
    placements = [['cuda:0', 'cuda:0']] + ([['cuda:0', 'cuda:1']] if torch.cuda.device_count() > 1 else [])
    p_rows = bench_placement(device, batch, True, args.rounds, args.warmup, placements, img_size=args.img_size)
    results['rows'] += p_rows
    print('\n--model-parallel: towers placed vs the unplaced model (train, bf16)')
    for r in p_rows:
        print(f'  {r["towers_on"]:<18}{r["img_s"]:>10.1f} img/s   ratio {r["ratio_to_unplaced"]:.3f}')


def _onnx_section(results: dict, args: argparse.Namespace) -> None:
    """onnxruntime against PyTorch eager with one thread and with torch's threads."""
    try:
        from .ort_bench import bench_onnxruntime
    except ImportError:
        print('\nonnxruntime vs PyTorch: export module not available, skipped')
        return
    ort_rows = []
    for threads in sorted({1, torch.get_num_threads()}):
        ort_rows += bench_onnxruntime('alexnet_split_2', batch_sizes=tuple(args.onnx_batch_sizes), threads=threads)
    results['onnxruntime'] = ort_rows
    print('\nonnxruntime (CPU) vs PyTorch eager, alexnet_split_2 inference (ratio = ort / torch; goal >= 1);\n'
          'export with LRN as ONNX LRN nodes (default) and as elementary ops (export --lrn ops)')
    for r in ort_rows:
        print(f'  threads {r["threads"]}, batch {r["batch_size"]:>3}, --lrn {r["lrn_form"]:<4}: '
              f'torch {r["torch_img_s"]:.1f} img/s, onnxruntime {r["ort_img_s"]:.1f} img/s, ratio {r["ratio"]:.2f}')


def _print_goals(results: dict) -> None:
    ours = [r for r in results['rows'] if r.get('variant') == 'ours' and r['mode'] == 'train']
    for r in ours:
        goal = 0.90 if r['amp_bf16'] else 0.85
        verdict = 'meets' if r['ratio_to_no_lrn'] >= goal else 'MISSES'
        print(f'\ngoal: train ratio {r["ratio_to_no_lrn"]:.3f} {verdict} the goal >= {goal} '
              f'({"bf16" if r["amp_bf16"] else "fp32"}, batch {r["batch"]})')


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    device, batch, out = _settings(args)
    gpu = device.type == 'cuda'
    if gpu:
        torch.backends.cudnn.benchmark = True
    if args.data:
        return _data_main(args, device, out)
    if args.train_input:
        from .trainbench import main as train_input_main
        return train_input_main(args, device, batch, out, _machine())

    from .lrn import lrn_mode
    from .perf import tune_malloc
    malloc = 'kept in process' if tune_malloc() else 'default'
    print(f'machine: {_machine()}')
    print(f'LRN kernels on {device.type}: {lrn_mode(device.type)}; malloc: {malloc} (TIMM_ALEXNET_SPLIT_MALLOC=default: off)')
    results: dict = dict(machine=_machine(), date=datetime.now(timezone.utc).isoformat(timespec='seconds'),
                         lrn_kernels=lrn_mode(device.type), malloc=malloc, rows=[])
    _lrn_section(results, args, device, batch)
    if gpu:
        _gpu_section(results, args, device, batch)
    if not args.skip_onnx:
        _onnx_section(results, args)
    _print_goals(results)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f'\nwrote {out}')
    return 0
